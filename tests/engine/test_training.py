"""detect.training.engine.train: the run folder, schedules, stopping rules, fine-tuning, validation."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from detect.config import DetectConfig
from detect.models import load_model
from detect.training import engine
from detect.training.schedules import WarmupSchedule
from tests.engine import TINY, cfg


def test_run_directory_contents(data, tmp_path):
    ann, images = data
    engine.train(cfg(), train_ann=ann, train_images=images, val_ann=ann, val_images=images,
                 run_dir=tmp_path / "run", verbose=0)
    run = tmp_path / "run"
    assert {"config.yaml", "checkpoints", "metrics.csv", "curves.png", "model.keras", "logs"} <= {
        p.name for p in run.iterdir()}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-0001", "epoch-0002"]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["epoch", "box_loss", "cls_loss", "loss", "lr", "val_AP", "val_AP50"]
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    assert (run / "checkpoints" / "epoch-0002" / "metrics.csv").read_text() == (run / "metrics.csv").read_text()
    model = load_model(run / "model.keras")
    assert model.class_names == ("pool", "car", "building")
    assert json.loads((run / "checkpoints" / "epoch-0002" / "state.json").read_text())["epoch"] == 2
    assert not list(run.rglob("*.tmp*")) and not list(run.rglob(".epoch-*"))  # nothing left behind


def test_warmup_cosine_schedule_golden():
    s = WarmupSchedule(0.1, warmup_steps=10, total_steps=100, kind="cosine")
    # step 4: warmup factor 5/10, cosine factor 0.5 * (1 + cos(pi * 0.04))
    np.testing.assert_allclose(float(s(4)), 0.1 * 0.5 * 0.5 * (1 + np.cos(np.pi * 0.04)), rtol=1e-6)
    np.testing.assert_allclose(float(s(100)), 0.0, atol=1e-9)
    st = WarmupSchedule(0.1, 0, 100, kind="step", boundaries=[50, 80])
    np.testing.assert_allclose([float(st(49)), float(st(50)), float(st(80))], [0.1, 0.01, 0.001], rtol=1e-5)


def test_non_finite_loss_stops_with_clear_message(data, tmp_path, monkeypatch):
    ann, images = data
    real = engine.RetinaNet.compute_detection_losses

    def poisoned(self, images, targets, training=False):
        out = real(self, images, targets, training)
        # NaN from the third step on, i.e. in the second epoch (2 steps each); the
        # counter already counts the running step when the loss is computed
        bad = tf.cast(self.optimizer.iterations, tf.float32) >= 3.0
        nan = tf.stop_gradient(tf.where(bad, float("nan"), 0.0))  # no NaN gradient before
        return {k: v + nan for k, v in out.items()}

    monkeypatch.setattr(engine.RetinaNet, "compute_detection_losses", poisoned)
    with pytest.raises(engine.TrainingError, match=r"loss became nan.*after epoch 1"):
        engine.train(cfg(), train_ann=ann, train_images=images, run_dir=tmp_path / "r", verbose=0)
    good = load_model(tmp_path / "r" / "checkpoints" / "epoch-0001" / "checkpoint.keras")
    assert all(np.isfinite(w).all() for w in good.get_weights())
    assert not (tmp_path / "r" / "model.keras").exists()


def test_two_stage_fine_tuning_freezes_then_unfreezes_the_backbone(data, tmp_path, monkeypatch):
    """Stage one trains with the backbone frozen (its weights do not move while the heads' do);
    stage two unfreezes it (its weights then move) with batch norm still frozen."""
    ann, images = data
    seen = []  # (stage_two, backbone trainable, backbone weights, head weights) at each compile
    real = engine._compile

    def spy(model, cfg_, steps, *, stage_two):
        real(model, cfg_, steps, stage_two=stage_two)
        backbone = {w.path for w in model.backbone.weights}
        seen.append((stage_two, model.backbone.trainable, [w.numpy().copy() for w in model.backbone.weights],
                     [w.numpy().copy() for w in model.network.weights if w.path not in backbone]))

    monkeypatch.setattr(engine, "_compile", spy)
    model = engine.train(cfg("train.freeze_backbone_epochs=1", "train.epochs=2", "model.backbone_norm=batch"),
                         train_ann=ann, train_images=images, run_dir=tmp_path / "r", verbose=0)
    assert [(two, trainable) for two, trainable, _, _ in seen] == [(False, False), (True, True)]
    (_, _, backbone_1, head_1), (_, _, backbone_2, head_2) = seen
    assert all(np.array_equal(a, b) for a, b in zip(backbone_1, backbone_2))  # frozen in stage one
    assert any(not np.array_equal(a, b) for a, b in zip(head_1, head_2))  # ... while the heads learned
    final = [w.numpy() for w in model.backbone.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(backbone_2, final))  # stage two trains it
    conv = model.backbone.get_layer("conv3_block1_1_conv")
    assert conv.trainable and not model.backbone.get_layer("conv1_bn").trainable  # BN stays frozen


def teardown_module():
    keras.mixed_precision.set_global_policy("float32")


def test_train_out_folder_policy(data, tmp_path, capsys, monkeypatch):
    from detect.cli.main import main

    ann, images = data
    args = ["train", "--train-ann", str(ann), "--train-images", str(images),
            *[x for s in TINY + ["train.epochs=1"] for x in ("--set", s)]]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    assert main([*args, "--out", str(other)]) == 2
    assert "exists and is not empty: pass --resume" in capsys.readouterr().err
    assert main([*args, "--out", str(other), "--overwrite"]) == 2  # not a run: never deleted
    assert "is not a detect run folder" in capsys.readouterr().err
    assert (other / "mine.txt").read_text() == "keep me"
    run = tmp_path / "run"
    assert main([*args, "--out", str(run)]) == 0
    first = (run / "model.keras").stat().st_mtime_ns
    assert main([*args, "--out", str(run), "--overwrite"]) == 0
    assert (run / "model.keras").stat().st_mtime_ns != first
    # a run that fails before its first epoch leaves nothing that looks like a run (here: a
    # machine so slow that no step fits the budget, found after the set-up)
    monkeypatch.setattr(engine, "measure_step_seconds", lambda model, batches: (1000.0, 1.0))
    assert main([*args, "--out", str(tmp_path / "bad"), "--time-budget", "2m"]) == 2  # no step fits
    err = capsys.readouterr().err
    assert "removed" in err and "failed before its first epoch" in err
    assert not (tmp_path / "bad").exists()
    # a budget shorter than any set-up is refused before the set-up
    import time

    t0 = time.perf_counter()
    assert main([*args, "--out", str(tmp_path / "short"), "--time-budget", "5s"]) == 2
    assert time.perf_counter() - t0 < 5 and not (tmp_path / "short").exists()
    assert "--time-budget 5s: shorter than the set-up alone" in capsys.readouterr().err


@pytest.mark.slow
def test_trained_tiny_model_detects_well_above_chance(tmp_path):
    """Train on generated square scenes (as a COCO dataset), evaluate AP50 on them. 32 scenes
    for 30 epochs, not 8 for 120: the same 240 steps with a quarter of the epoch ends
    (each checkpoints), 94 s -> 28 s."""

    from detect.datasets.coco import load_coco
    from detect.evaluation import evaluate
    from detect.inference.coco_dataset import predict_samples
    from tests.models.conftest import square_scenes, write_square_dataset

    images, targets = square_scenes(32, size=128, seed=11)
    gt = write_square_dataset(tmp_path / "img", images, targets, ["red", "green", "blue"])
    (tmp_path / "ann.json").write_text(json.dumps(gt))
    c = DetectConfig().with_overrides([
        *TINY, "model.backbone_width=16", "model.fpn_channels=32", "model.head_convs=2",
        "data.image_size=128", "data.scale_jitter=[]", "data.color_jitter=false",
        "train.epochs=30", "train.batch_size=4", "train.optimizer=adamw",
        "train.learning_rate=0.003", "train.warmup_steps=10"])
    model = engine.train(c, train_ann=tmp_path / "ann.json", train_images=tmp_path / "img",
                         run_dir=tmp_path / "run", verbose=0)
    ds = load_coco(tmp_path / "ann.json", tmp_path / "img")
    ap50 = evaluate(gt, predict_samples(model, ds)).stats[1]
    print(f"AP50 after training: {ap50:.3f}")
    assert ap50 > 0.5  # chance is ~0: boxes must be placed and classified


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_backbone_lr_multiplier(data, tmp_path, optimizer):
    ann, images = data

    def moved(mult):
        keras.utils.set_random_seed(0)
        c = cfg(f"train.backbone_lr_multiplier={mult}", f"train.optimizer={optimizer}",
                "train.epochs=1", "train.warmup_steps=0", "train.schedule=constant",
                "train.momentum=0", "train.weight_decay=0", "train.clipnorm=0")
        m = engine.build_retinanet(c.model.with_overrides(
            {"num_classes": 3, "class_names": ["pool", "car", "building"]}))
        before = m.backbone.get_layer("conv2_block1_1_conv").kernel.numpy().copy()
        head0 = m.network.get_layer("cls_conv0").kernel.numpy().copy()
        del m
        keras.utils.set_random_seed(0)
        m = engine.train(c, train_ann=ann, train_images=images, run_dir=tmp_path / f"r{mult}", verbose=0)
        bb = np.abs(m.backbone.get_layer("conv2_block1_1_conv").kernel.numpy() - before).max()
        head = np.abs(m.network.get_layer("cls_conv0").kernel.numpy() - head0).max()
        return bb, head

    bb0, head0 = moved(0.0)
    bb1, head1 = moved(1.0)
    assert bb0 == 0.0 and head0 > 0  # multiplier 0 freezes the backbone's updates only
    assert bb1 > 0 and head1 > 0


def test_ema_and_mixed_precision_runs(data, tmp_path):
    ann, images = data
    try:
        m = engine.train(cfg("train.ema=true", "train.epochs=1"), train_ann=ann, train_images=images,
                         run_dir=tmp_path / "r", mixed_precision=True, verbose=0)
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"  # CPU
        assert m.optimizer.use_ema
        assert m.network.get_layer("cls_conv0").compute_dtype == "bfloat16"
        assert all(np.isfinite(w).all() for w in m.get_weights())
        reloaded = load_model(tmp_path / "r" / "model.keras")
        x = np.zeros((1, 64, 64, 3), np.float32)
        dets = reloaded.model_config.postprocess.max_detections
        assert reloaded.predict(x, verbose=0)["boxes"].shape == (1, dets, 4)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_warmup_capped_to_a_fifth_of_the_run(data, tmp_path, capsys):
    engine.train(cfg("train.warmup_steps=100"), train_ann=data[0], train_images=data[1],
                 run_dir=tmp_path / "r", verbose=0)
    saved = DetectConfig.from_dict(__import__("yaml").safe_load((tmp_path / "r" / "config.yaml").read_text()))
    assert saved.train.warmup_steps == 0  # 2 epochs x 2 steps: 20% of 4 steps
    assert "warmup_steps 100 capped at 0" in capsys.readouterr().out


def test_validation_ap_equals_evaluate_model(data, tmp_path):
    from detect.cli.main import main

    ann, images = data
    engine.train(cfg("train.epochs=1", "model.postprocess.score_threshold=0.01"), train_ann=ann,
                 train_images=images, val_ann=ann, val_images=images, run_dir=tmp_path / "r", verbose=0)
    row = (tmp_path / "r" / "metrics.csv").read_text().splitlines()[-1].split(",")
    header = (tmp_path / "r" / "metrics.csv").read_text().splitlines()[0].split(",")
    val_ap = float(row[header.index("val_AP")])
    model = load_model(tmp_path / "r" / "model.keras")
    dets = max(100, model.model_config.postprocess.max_detections)
    assert main(["evaluate", "--ann", str(ann), "--images", str(images), "--model",
                 str(tmp_path / "r" / "model.keras"), "--max-dets", f"1,10,{dets}",
                 "--save-predictions", str(tmp_path / "d.json"), "--report", str(tmp_path / "rep.json")]) == 0
    report = json.loads((tmp_path / "rep.json").read_text())
    assert report["AP_at_max_dets"] == pytest.approx(val_ap, abs=1e-6)
    val_ap50 = float(row[header.index("val_AP50")])
    assert report["stats"][1] == pytest.approx(val_ap50, abs=1e-6)
    # the run calibrated the model on its validation set: each class's best-F1 threshold, as
    # evaluate's operating point on the same detections says (rounded down to 1e-4)
    from detect.evaluation.calibration import class_thresholds
    from detect.evaluation.operating_point import operating_points

    pp = model.model_config.postprocess
    assert pp.calibration.startswith("validation set ") and len(pp.class_thresholds) == model.model_config.num_classes
    gt = json.loads(Path(ann).read_text())
    points = operating_points(gt, json.loads((tmp_path / "d.json").read_text()),
                              [c["id"] for c in gt["categories"]], max_dets=dets)
    assert list(pp.class_thresholds) == class_thresholds(points, gt, model.class_names, 0.01)[0]


def test_boxes_no_anchor_can_match_stop_before_training(tmp_path):
    import cv2

    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((64, 64, 3), np.uint8))
    gt = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 2, 2],
                           "area": 4, "iscrowd": 0}], "categories": [{"id": 1, "name": "dot"}]}
    (tmp_path / "a.json").write_text(json.dumps(gt))
    with pytest.raises(ValueError, match=r"2\.0-2\.0 px side.*smaller than the smallest anchor"):
        engine.train(cfg("model.anchors.anchor_size=4"), train_ann=tmp_path / "a.json",
                     train_images=tmp_path / "img", run_dir=tmp_path / "r", verbose=0)
    assert not (tmp_path / "r" / "config.yaml").exists()


def test_time_budget_fits_the_schedule(data, tmp_path, monkeypatch, capsys):
    # a deterministic machine: 0.1 s per step, 1 s to build the graph
    monkeypatch.setattr(engine, "measure_step_seconds", lambda model, batches: (0.1, 1.0))
    made = []

    class Recorded(engine.Deadline):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(engine, "Deadline", Recorded)
    ann, images = data
    engine.train(cfg("train.epochs=500"), train_ann=ann, train_images=images, run_dir=tmp_path / "r",
                 verbose=0, time_budget="20s")
    saved = DetectConfig.from_dict(__import__("yaml").safe_load((tmp_path / "r" / "config.yaml").read_text()))
    t = saved.train
    assert 50 < t.epochs * t.steps_per_epoch <= (20 - 1) / 0.1
    out = capsys.readouterr().out
    assert "time budget 20s:" in out and "budget" in out.splitlines()[-1]
    # the deadline refits the cosine against the whole run's plan (tests/test_time_budget.py)
    (deadline,) = made
    assert (deadline.epochs, deadline.steps_per_epoch, deadline.per_epoch) == (t.epochs, t.steps_per_epoch, 0.5)
    with pytest.raises(ValueError, match="too short for one training step"):
        engine.train(cfg(), train_ann=ann, train_images=images, run_dir=tmp_path / "r2", verbose=0,
                     time_budget="1s")


@pytest.mark.parametrize("optimizer, multiplier, ema", [("adamw", 1.0, "true"), ("sgd", 0.5, "false")])
def test_measuring_steps_in_fit_leaves_no_trace_and_builds_the_step_once(data, optimizer, multiplier, ema):
    # the budget planner times fit's own steps with the schedules paused, then puts every weight
    # and optimizer variable back: training starts as if nothing had run, on the step built here
    from dataclasses import replace

    from detect.datasets.coco import load_coco
    from detect.datasets.pipeline import make_dataset
    from detect.models import build_retinanet
    from detect.training.time_budget import learning_rate_schedules, measure_step_seconds

    ann, images = data
    c = cfg(f"train.optimizer={optimizer}", "train.weight_decay=0.01", f"train.ema={ema}",
            f"train.backbone_lr_multiplier={multiplier}", "model.backbone_norm=batch", "model.freeze_batchnorm=false")
    ds = load_coco(ann, images)
    c = replace(c, model=replace(c.model, num_classes=ds.num_classes, class_names=tuple(ds.class_names)))
    model = build_retinanet(c.model)
    engine._compile(model, c, 2, stage_two=False)
    optimizers = [o for o in (model.optimizer, model.backbone_optimizer) if o is not None]
    assert len(optimizers) == (1 if multiplier == 1.0 else 2)
    with pytest.raises(ValueError, match="train.ema is not supported with train.backbone_lr_multiplier 0.5"):
        engine._compile(model, replace(c, train=replace(c.train, ema=True, backbone_lr_multiplier=0.5)), 2,
                        stage_two=False)
    engine._compile(model, c, 2, stage_two=False)
    batches = make_dataset(ds, c.data, batch_size=2, training=True, seed=0, repeat=True)
    engine.build_optimizers(model)
    before = {v.path: v.numpy().copy() for v in [*model.weights, *[w for o in optimizers for w in o.variables]]}
    assert any("moving_mean" in p for p in before)  # batch statistics that a step would move
    step_s, first = measure_step_seconds(model, batches, steps=2, drain=1)
    assert 0 < step_s < first  # the first call also builds the graph
    after = {v.path: v.numpy() for v in [*model.weights, *[w for o in optimizers for w in o.variables]]}
    assert after.keys() == before.keys()
    changed = [p for p in before if not np.array_equal(before[p], after[p])]
    assert not changed, changed
    assert all(int(o.iterations.numpy()) == 0 for o in optimizers)
    schedules = learning_rate_schedules(model)
    assert len(schedules) == len(optimizers) and all(float(s._scale.numpy()) == 1.0 for s in schedules)
    built = model.train_function
    model.fit(batches, epochs=1, steps_per_epoch=1, verbose=0)  # training reuses the measured step
    assert model.train_function is built
    assert int(model.optimizer.iterations.numpy()) == 1


def test_stage_two_continues_the_optimizer():
    from detect.models import build_retinanet
    from tests.models.conftest import tiny_config

    model = build_retinanet(tiny_config())
    model.backbone.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.backbone_optimizer = None
    old = model.optimizer
    old.build(model.trainable_variables)
    old.iterations.assign(7)
    rng = np.random.default_rng(0)
    for v in old.variables[2:]:
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    slots = {v.path.split("/", 1)[-1]: v.numpy().copy() for v in old.variables[2:]}
    model.backbone.trainable = True
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    model.backbone_optimizer = None
    engine._continue_optimizer(old, model)
    new = model.optimizer
    assert int(new.iterations.numpy()) == 7  # one schedule timeline, not a restart
    carried = fresh = 0
    for v in new.variables[2:]:
        want = slots.get(v.path.split("/", 1)[-1])
        if want is not None:
            np.testing.assert_array_equal(v.numpy(), want)
            carried += 1
        else:
            assert not v.numpy().any()  # the backbone's momentum starts at zero
            fresh += 1
    assert carried == len(slots) > 0 and fresh > 0
