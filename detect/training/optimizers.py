"""The optimizers of a training run: AdamW or SGD on the warmup schedule, a separate one for the
backbone when it learns at another rate, and stage one's state carried into stage two."""

from __future__ import annotations

import keras

from detect.config import DetectConfig
from detect.training.schedules import WarmupSchedule


def make_optimizer(cfg: DetectConfig, steps_per_epoch: int, lr_factor: float = 1.0, *,
                   warmup: bool | None = None):
    """The configured optimizer; ``lr_factor`` scales the base LR (warmup only at factor 1
    unless ``warmup`` says otherwise)."""
    t = cfg.train
    warmup = lr_factor == 1.0 if warmup is None else warmup
    schedule = WarmupSchedule(
        t.learning_rate * lr_factor, t.warmup_steps if warmup else 0,
        t.epochs * steps_per_epoch, t.schedule, [e * steps_per_epoch for e in t.step_epochs])
    common = dict(learning_rate=schedule, global_clipnorm=t.clipnorm or None,
                  use_ema=t.ema, ema_momentum=t.ema_momentum)
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=t.momentum, weight_decay=t.weight_decay or None, **common)
    return keras.optimizers.AdamW(weight_decay=t.weight_decay, **common)


def continue_optimizer(old, model) -> None:
    """Stage two continues stage one's optimizer instead of restarting it.

    The new optimizer (stage two's learning rate) takes the old one's
    iteration count, so warmup and the cosine continue one timeline, and the
    slot variables (momentum, velocity, EMA) of every variable both optimise
    (the heads and FPN), matched by name; the backbone's slots start at zero.
    """
    backbone = {id(v) for v in model.backbone.trainable_variables}
    separate = model.backbone_optimizer is not None
    head = [v for v in model.trainable_variables if not (separate and id(v) in backbone)]
    model.optimizer.build(head)
    if separate:
        model.backbone_optimizer.build(model.backbone.trainable_variables)
        model.backbone_optimizer.iterations.assign(old.iterations)
    model.optimizer.iterations.assign(old.iterations)

    def key(v):  # the optimizer's own name ("adamw", "adamw_1") prefixes its variables' paths
        return v.path.split("/", 1)[-1]

    theirs = {key(v): v for v in old.variables}
    skip = {id(model.optimizer.iterations)}
    for v in model.optimizer.variables:
        o = theirs.get(key(v))
        if id(v) not in skip and o is not None and "learning_rate" not in v.path and tuple(o.shape) == tuple(v.shape):
            v.assign(o)


def build_optimizers(model) -> list:
    """Create the optimizers' slots now (Keras would on the first step), each for the variables
    it updates: the backbone's optimizer, when it has one, takes the backbone's. Returns them."""
    backbone = {id(v) for v in model.backbone.trainable_variables}
    if model.backbone_optimizer is None:
        model.optimizer.build(model.trainable_variables)
        return [model.optimizer]
    model.optimizer.build([v for v in model.trainable_variables if id(v) not in backbone])
    model.backbone_optimizer.build(model.backbone.trainable_variables)
    return [model.optimizer, model.backbone_optimizer]
