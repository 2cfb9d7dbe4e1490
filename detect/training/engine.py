"""Training orchestration: config -> data -> model -> ``fit``, resumable.

:func:`train_run` is what ``detect train`` calls: it owns the run folder
(refuses to overwrite one, resumes one, removes a run that failed before its
first epoch) and calls :func:`train`. The folder's files and the atomic
epoch commit are described in :mod:`detect.training.runs`. A non-finite loss stops
training with a message naming the last good checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from detect.config import DetectConfig, dump_yaml
from detect.datasets.coco import CocoDataset, load_coco, problem_block, summary
from detect.datasets.fit import fit_to_data
from detect.datasets.pipeline import make_dataset
from detect.imagery.images import BandRule
from detect.models.backbones import apply_freezing, check_backbone_weights
from detect.models.factory import build_retinanet, inference_copy
from detect.models.retinanet import RetinaNet
from detect.training.callbacks import Guard as _Guard
from detect.training.callbacks import Validation as _Validation
from detect.training.callbacks import calibrate as _calibrate
from detect.training.callbacks import estimate_validation_seconds as _estimate_validation_seconds
from detect.training.optimizers import build_optimizers, make_optimizer
from detect.training.optimizers import continue_optimizer as _continue_optimizer
from detect.training.runs import RunFolder
from detect.training.time_budget import (
    Deadline,
    format_seconds,
    learning_rate_schedules,
    measure_step_seconds,
    parse_duration,
    plan_budget,
)
from detect.util import atomic

#: Warmup never takes more than this share of the run's steps.
MAX_WARMUP_FRACTION = 0.2


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on (message says which)."""


def _strategy(name: str):
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; choose default, mirrored or multiworker")


def _read_gsd(ds: CocoDataset, scale: float) -> float | None:
    """Metres per model pixel from the training GeoTIFFs' transforms (None if not georeferenced)."""
    tifs = [smp.path for smp in ds.samples if smp.path.suffix.lower() in (".tif", ".tiff")][:20]
    if not tifs:
        return None
    try:
        from detect.imagery.rasters import raster_gsd
    except ImportError:  # pragma: no cover - rasterio missing
        return None
    values = [g for g in (raster_gsd(p) for p in tifs) if g]
    return float(np.median(values)) / scale if values else None


def _cap_warmup(cfg: DetectConfig) -> DetectConfig:
    t = cfg.train
    total = t.epochs * t.steps_per_epoch
    cap = int(MAX_WARMUP_FRACTION * total)
    if t.warmup_steps > cap:
        print(f"note: train.warmup_steps {t.warmup_steps} capped at {cap} "
              f"({MAX_WARMUP_FRACTION:.0%} of the run's {total} steps)", flush=True)
        return replace(cfg, train=replace(t, warmup_steps=cap))
    return cfg


def train(cfg: DetectConfig, *, train_ann, train_images, run_dir, val_ann=None, val_images=None,
          strict: bool = False, resume: bool = False, strategy: str = "default",
          mixed_precision: bool = False, verbose: int = 1, time_budget: float | str | None = None,
          init_from=None,
          gsd: float | None = None, max_dets=None) -> RetinaNet:
    """Train a detector; returns the final model (also written to ``run_dir/model.keras``).

    Unless resuming, settings the config does not pin are first fitted to the
    training data (:func:`detect.datasets.fit.fit_to_data`), and with
    ``time_budget`` (seconds, or ``"20m"``) the schedule is fitted to the
    number of steps this machine can do in that time (:mod:`detect.training.time_budget`).
    ``init_from``: a detector file or run folder to start from
    (:mod:`detect.training.transfer`: weights by layer path and shape, class logits
    remapped by name, the source's architecture unless the config pins it).
    ``gsd``: metres per pixel of the training images, when their files do
    not say (GeoTIFF transforms are read otherwise). ``max_dets``: the
    validation's COCO maxDets; default ``(1, 10, max(100, max_detections))``
    so dense scenes are not capped at 100 (``detect evaluate --max-dets``
    with the same list gives the same numbers).
    """
    started = time.monotonic()
    budget = parse_duration(time_budget) if isinstance(time_budget, str) else time_budget
    run = RunFolder(run_dir)
    start_epoch, checkpoint, cfg = _resume_point(run, cfg, resume)
    run.path.mkdir(parents=True, exist_ok=True)

    train_ds = load_coco(train_ann, train_images, strict=strict)
    print(summary(train_ds), flush=True)
    cfg, source = _settle_config(cfg, train_ds, init_from=None if resume else init_from, resume=resume, gsd=gsd)
    val = _validation_set(val_ann, val_images, strict, train_ds) if val_ann else None

    if mixed_precision:
        keras.mixed_precision.set_global_policy(
            "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16")
    t = cfg.train
    steps = t.steps_per_epoch or max(len(train_ds.samples) // t.batch_size, 1)
    cfg = replace(cfg, train=replace(t, steps_per_epoch=steps))
    data = make_dataset(train_ds, cfg.data, batch_size=t.batch_size, training=True, seed=t.seed,
                        repeat=True, skip=start_epoch * steps * t.batch_size, bands=BandRule.of(cfg.model, training=True))
    keras.utils.set_random_seed(t.seed)
    dist = _strategy(strategy)  # one strategy object: the model is built and compiled under it
    model = _build_model(cfg, source, dist, init_from)
    del source

    with dist.scope():  # compiled before a budget's plan, whose timing runs fit's own step
        _compile(model, cfg, steps, stage_two=0 < t.freeze_backbone_epochs <= start_epoch)
    deadline, per_epoch = None, 0.0
    staged = bool(t.freeze_backbone_epochs)
    if budget and not resume:
        cfg, steps, per_epoch = _plan_to_budget(cfg, model, data, dist, val, budget, started, steps)
        deadline = started + budget
    if not resume:
        cfg = _cap_warmup(cfg)
        dump_yaml(cfg.to_dict(), run.config)
    t = cfg.train

    with dist.scope():
        if resume:
            _restore(model, checkpoint, start_epoch)
        elif staged != bool(t.freeze_backbone_epochs):  # the plan left no room for a first stage
            _compile(model, cfg, steps, stage_two=False)
        else:
            _replan_schedules(model, cfg, steps)

    guard = _Guard(run, steps, checkpoint.metrics if checkpoint else [])
    callbacks = [guard, keras.callbacks.TensorBoard(str(run.logs), write_graph=False)]
    if max_dets is None:
        max_dets = (1, 10, max(100, cfg.model.postprocess.max_detections))
    validation = _Validation(val[0], val[1], max_dets, ann=val_ann) if val else None
    if validation:
        callbacks.insert(0, validation)
    stopper = None
    if deadline is not None:
        # keep time for the final save (and validation, which runs at the epoch's end)
        stopper = Deadline(deadline, reserve=2.0 + (per_epoch if val else 0.5), epochs=t.epochs,
                           steps_per_epoch=steps, per_epoch=per_epoch)
        callbacks.insert(0, stopper)

    def fit(first, last):
        if last > first and not (stopper and stopper.stopped_at):
            model.fit(data, epochs=last, initial_epoch=first, steps_per_epoch=steps, shuffle=False,
                      callbacks=callbacks, verbose=verbose)

    if t.freeze_backbone_epochs and start_epoch < t.freeze_backbone_epochs:
        fit(start_epoch, t.freeze_backbone_epochs)
        if not guard.bad:
            _compile(model, cfg, steps, stage_two=True)
            start_epoch = t.freeze_backbone_epochs
    if not guard.bad:
        fit(start_epoch, t.epochs)
    _finish(model, run, guard, stopper, steps, t.epochs, budget, started, validation)
    return model


def _resume_point(run: RunFolder, cfg: DetectConfig, resume: bool):
    """``(start_epoch, checkpoint, cfg)``: epoch 0, no checkpoint and ``cfg`` for a new run; for
    ``resume``, the newest intact checkpoint and the run's own resolved config (fitted defaults,
    budget plan), which rebuilds the same model."""
    if not resume:
        return 0, None, cfg
    checkpoint = run.latest()
    if checkpoint is None:
        raise FileNotFoundError(f"{run.path} has no checkpoint to resume from "
                                f"(expected {run.checkpoints}/epoch-NNNN/)")
    run.restore_metrics(checkpoint)  # the copy may lag the commit it was killed after
    from detect.config import load_yaml

    return checkpoint.epoch, checkpoint, DetectConfig.from_dict(load_yaml(run.config))


def _settle_config(cfg: DetectConfig, train_ds: CocoDataset, *, init_from, resume: bool, gsd):
    """``(cfg, source)``: the config with the data's classes, a source detector's architecture
    (``init_from``; ``source`` is that detector, else None), and unless resuming the settings
    fitted to the data and the ground sample distance."""
    if train_ds.samples:  # the band rule against a real file now, not as skipped images later
        from detect.imagery.images import read_image

        read_image(train_ds.samples[0].path, BandRule.of(cfg.model, training=True))
    # a calibration belongs to the model it was measured on: a new one is made from this run's
    # validation set, if it has one
    cfg = replace(cfg, model=replace(cfg.model, num_classes=train_ds.num_classes,
                                     class_names=tuple(train_ds.class_names),
                                     postprocess=cfg.model.postprocess.uncalibrated()))
    source = None
    if init_from is not None:
        from detect.training.transfer import inherit_architecture, load_source

        source = load_source(init_from)
        cfg = inherit_architecture(cfg, source.model_config)
    if resume:
        return cfg, source
    cfg, lines = fit_to_data(cfg, train_ds)
    print("\n".join(lines), flush=True)
    if cfg.model.input.gsd is None:
        found = gsd / cfg.model.input.scale if gsd else _read_gsd(train_ds, cfg.model.input.scale)
        if found:
            cfg = replace(cfg, model=replace(cfg.model, input=replace(cfg.model.input, gsd=round(found, 6))))
            print(f"ground sample distance: {found:.4g} m per model pixel", flush=True)
    return cfg, source


def _validation_set(val_ann, val_images, strict: bool, train_ds: CocoDataset):
    """``(dataset, ground truth dict)`` of the validation set, its categories checked against training's."""
    val_ds = load_coco(val_ann, val_images, strict=strict)
    if problem_block(val_ds.report):
        print("validation " + problem_block(val_ds.report), flush=True)
    if val_ds.class_names != train_ds.class_names:
        raise ValueError(f"validation categories {val_ds.class_names} differ from training "
                         f"categories {train_ds.class_names}")
    return val_ds, json.loads(Path(val_ann).read_text())


def _build_model(cfg: DetectConfig, source, dist, init_from) -> RetinaNet:
    """The detector, built under the strategy; with a ``source`` detector, its weights copied in."""
    with dist.scope():
        if source is None:
            return build_retinanet(cfg.model)
        # every weight comes from the source: no pretrained download, its backbone graph
        from detect.training.transfer import build_like

        model = build_like(cfg.model, source)
    from detect.training.transfer import init_from as copy_weights

    print("\n".join(copy_weights(model, source).lines(init_from)), flush=True)
    return model


def _plan_to_budget(cfg: DetectConfig, model, data, dist, val, budget: float, started: float, steps: int):
    """``(cfg, steps_per_epoch, seconds per epoch besides steps)``: epochs and steps that fit the
    time left of ``budget``, from fit's own training steps, timed (and a validation pass)."""
    with dist.scope():
        step_s, _ = measure_step_seconds(model, data)
    per_epoch = 0.5 + (_estimate_validation_seconds(model, val[0]) if val else 0.0)
    plan = plan_budget(budget, spent=time.monotonic() - started, step_seconds=step_s,
                       per_epoch=per_epoch, data_steps=steps)
    print(plan.describe(budget), flush=True)
    cfg = replace(cfg, train=replace(cfg.train, epochs=plan.epochs, steps_per_epoch=plan.steps_per_epoch,
                                     freeze_backbone_epochs=min(cfg.train.freeze_backbone_epochs,
                                                                plan.epochs - 1)))
    return cfg, plan.steps_per_epoch, per_epoch


def _replan_schedules(model: RetinaNet, cfg: DetectConfig, steps: int) -> None:
    """Give the compiled optimizers' schedules the plan in ``cfg`` (warmup, length, step
    boundaries), as :func:`make_optimizer` would have, without building the training step again."""
    t = cfg.train
    for schedule in learning_rate_schedules(model):
        schedule.replan(t.warmup_steps, t.epochs * steps, [e * steps for e in t.step_epochs])


def _compile(model: RetinaNet, cfg: DetectConfig, steps: int, *, stage_two: bool) -> None:
    """Freeze what this stage freezes and compile with its optimizers.

    Stage one (``train.freeze_backbone_epochs`` > 0) trains with the whole
    backbone frozen; stage two (and a run without stages) applies
    ``freeze_stages`` / frozen batch norm, at ``finetune_lr_factor`` after a
    stage one, and continues stage one's optimizer state. A
    ``backbone_lr_multiplier`` other than 1 gives the backbone its own optimizer.
    """
    t = cfg.train
    before = getattr(model, "optimizer", None) if stage_two else None
    if t.freeze_backbone_epochs and not stage_two:
        model.backbone.trainable = False
    else:
        model.backbone.trainable = True  # lift stage one's blanket freeze first
        apply_freezing(model.backbone, freeze_stages=cfg.model.freeze_stages,
                       freeze_batchnorm=cfg.model.batchnorm_frozen)
    factor = t.finetune_lr_factor if (t.freeze_backbone_epochs and stage_two) else 1.0
    model.compile(optimizer=make_optimizer(cfg, steps, factor))
    backbone_frozen = bool(t.freeze_backbone_epochs) and not stage_two
    model.backbone_optimizer = None
    if t.backbone_lr_multiplier != 1.0 and not backbone_frozen:
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            raise ValueError("train.backbone_lr_multiplier != 1 is not supported with "
                             "mixed_float16 loss scaling; use mixed_bfloat16 or multiplier 1")
        if t.ema:  # Keras swaps in the averages of model.optimizer's variables for all trainable ones
            raise ValueError(f"train.ema is not supported with train.backbone_lr_multiplier "
                             f"{t.backbone_lr_multiplier} (two optimizers); use one of them")
        model.backbone_optimizer = make_optimizer(
            cfg, steps, factor * t.backbone_lr_multiplier, warmup=factor == 1.0)
    if before is not None:
        _continue_optimizer(before, model)


def _restore(model: RetinaNet, checkpoint, start_epoch: int) -> None:
    """Build the optimizers' slots, then load the checkpoint's weights and optimizer state."""
    build_optimizers(model)
    model.load_weights(checkpoint.model_file)
    print(f"resumed from {checkpoint.model_file} after epoch {start_epoch}", flush=True)


def _finish(model, run: RunFolder, guard, stopper, steps: int, epochs: int, budget, started: float,
            validation) -> None:
    """Raise on a bad loss (naming the last good checkpoint), say where a deadline stopped the
    run, and save the inference model."""
    if guard.bad:
        last = run.latest()
        where = (f"The last good checkpoint is {last.model_file} (after epoch {last.epoch}); try a lower "
                 f"train.learning_rate or check the data, then --resume {run.path}") if last else (
            "No epoch was completed; try a lower train.learning_rate or check the data")
        raise TrainingError(f"{guard.bad}; training stopped. {where}")
    if stopper and stopper.stopped_at:
        print(f"time budget reached: stopped after {int(model.optimizer.iterations.numpy())} of "
              f"{epochs * steps} planned steps (the machine ran slower than measured)", flush=True)
    if stopper and stopper.ended_at:
        print(f"the cosine learning rate was refitted to the steps' pace in training: it ended at step "
              f"{stopper.ended_at}, not the planned {epochs * steps}", flush=True)
    if validation is not None and validation.results is not None:
        _calibrate(model, validation, ema=bool(getattr(model.optimizer, "use_ema", False)))
    atomic.save_model(inference_copy(model), run.model)  # no optimizer: the inference artefact
    if budget:
        took = time.monotonic() - started
        ap = f"; validation AP {validation.last[0]:.3f}, AP50 {validation.last[1]:.3f}" if (
            validation and validation.last) else ""
        print(f"trained for {format_seconds(took)} of the {format_seconds(budget)} budget{ap}", flush=True)


def train_run(out, *, train_ann=None, train_images=None, val_ann=None, val_images=None,
              config: DetectConfig | str | Path | None = None, settings: dict | None = None, overrides=(),
              resume: bool = False, overwrite: bool = False, **kwargs) -> RetinaNet:
    """``detect train``: train into the run folder ``out`` (see :mod:`detect.training.runs`).

    - ``resume=True`` continues ``out`` from its newest intact epoch with its
      own config and data paths (``run.yaml``); nothing else is needed.
    - Otherwise ``out`` must not exist or be empty; ``overwrite=True``
      replaces a previous *run* folder (a folder that is not a run is never
      deleted). A run that fails before its first epoch is committed is
      removed, so no folder looks like a run without being one.

    ``config``: a :class:`DetectConfig` or a YAML path (default: defaults);
    ``settings``: ``{"section.key": value}`` applied to it first (the Python
    API's keywords), then ``overrides``: ``["section.key=value", ...]`` as
    ``--set``; ``kwargs`` go
    to :func:`train` (``strict``, ``strategy``, ``mixed_precision``,
    ``time_budget``, ``gsd``, ``verbose``, ``max_dets``).
    """
    from detect.config import load_yaml

    run = RunFolder(out)
    if resume:
        if not run.is_run():
            raise FileNotFoundError(f"{run.path} is not a detect run folder (no config.yaml and run.yaml)")
        meta = load_yaml(run.meta)
        return train(DetectConfig.from_dict(load_yaml(run.config)), run_dir=run.path, resume=True,
                     train_ann=meta["train_ann"], train_images=meta["train_images"],
                     val_ann=meta.get("val_ann"), val_images=meta.get("val_images"),
                     **{**kwargs, "time_budget": None, "init_from": None})
    if not (train_ann and train_images):
        raise ValueError("training data is needed: --train-ann and --train-images (or --resume RUN)")
    if bool(val_ann) != bool(val_images):
        raise ValueError("--val-ann and --val-images go together")
    from detect.config.recipes import DEFAULT_RECIPE, recipe_path

    if config is None and kwargs.get("init_from") is None:
        print(f"config: the {DEFAULT_RECIPE} recipe (the default; --config RECIPE or a YAML file "
              f"chooses another)", flush=True)
        config = DEFAULT_RECIPE
    elif config is None:  # fine-tuning: the source's architecture and settings, not a fresh recipe's
        config = DetectConfig()
    if isinstance(config, (str, Path)):
        config = DetectConfig.from_dict(load_yaml(recipe_path(config)))
    cfg = config
    if settings:
        cfg = cfg.with_overrides(dict(settings))
    cfg = cfg.with_overrides(list(overrides))
    if run.path.exists() and (not run.path.is_dir() or any(run.path.iterdir())):
        if not overwrite:
            raise FileExistsError(f"--out {run.path} exists and is not empty: pass --resume {run.path} to "
                                  f"continue it, --overwrite to replace it, or another --out")
        if not run.is_run():
            raise FileExistsError(f"--out {run.path} is not a detect run folder; --overwrite only replaces "
                                  f"runs, so remove it yourself or choose another --out")
        shutil.rmtree(run.path)
    if kwargs.get("init_from") is None:  # a missing package or a bad checkpoint: say so, write nothing
        check_backbone_weights(cfg.model)
    run.path.mkdir(parents=True, exist_ok=True)
    dump_yaml({"train_ann": str(Path(train_ann).resolve()), "train_images": str(Path(train_images).resolve()),
               "val_ann": val_ann and str(Path(val_ann).resolve()),
               "val_images": val_images and str(Path(val_images).resolve()),
               "init_from": _init_from_name(kwargs.get("init_from"))}, run.meta)
    try:
        return train(cfg, train_ann=train_ann, train_images=train_images, val_ann=val_ann,
                     val_images=val_images, run_dir=run.path, **kwargs)
    except BaseException:
        if not run.committed():  # nothing to resume: leave no half run behind
            shutil.rmtree(run.path, ignore_errors=True)
            print(f"note: removed {run.path}: the run failed before its first epoch", file=sys.stderr)
        raise


def _init_from_name(source) -> str | None:
    """``--init-from`` as run.yaml records it: a path resolved, a preset name as given."""
    if source is None:
        return None
    return str(Path(source).resolve()) if Path(source).exists() else str(source)
