"""Training orchestration (detect.training.engine): run folders, schedules, resume after a kill.

``TINY``: overrides for a detector small enough to train in seconds; ``cfg(*extra)``: the
config with them (and ``extra``) applied. The ``data`` fixture (conftest.py) writes 4
synthetic 64 px scenes once per test module.
"""

from detect.config import DetectConfig

TINY = ["model.backbone=resnet18", "model.backbone_width=8", "model.fpn_channels=16",
        "model.head_convs=1", "model.freeze_batchnorm=true", "data.image_size=64",
        "data.max_boxes=10", "train.batch_size=2", "train.epochs=2", "train.warmup_steps=2",
        "train.optimizer=sgd", "train.learning_rate=0.005"]


def cfg(*extra):
    return DetectConfig().with_overrides([*TINY, *extra])
