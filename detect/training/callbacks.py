"""What runs beside ``fit`` in a training run: the loss guard that commits each epoch, validation
after each epoch, and the calibration of the final model on the validation set."""

from __future__ import annotations

import time

import keras
import numpy as np

from detect.datasets.coco import CocoDataset
from detect.models.retinanet import RetinaNet
from detect.training.runs import RunFolder


class Guard(keras.callbacks.Callback):
    """Stops on a non-finite loss; commits each good epoch (checkpoint, state, metrics) atomically."""

    def __init__(self, run: RunFolder, steps_per_epoch: int, metrics: list[dict]):
        super().__init__()
        self.run = run
        self.steps_per_epoch = steps_per_epoch
        self.metrics = list(metrics)
        self.bad: str | None = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.bad = f"loss became {float(loss)} at step {batch + 1} of an epoch"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.bad:
            return
        row = {"epoch": epoch + 1, **{k: f"{float(v):.6g}" for k, v in sorted((logs or {}).items())}}
        self.metrics.append(row)
        self.run.commit_epoch(self.model, epoch + 1, self.steps_per_epoch, self.metrics)


class Validation(keras.callbacks.Callback):
    """COCO AP / AP50 on the validation set after each epoch.

    Detections come from :func:`detect.inference.coco_dataset.predict_samples`,
    the path ``detect evaluate --model`` runs (the model's own input rule:
    scale, tiles, merging), and the statistics from the same evaluator with
    ``max_dets`` as configured, so the numbers equal that command's.
    """

    def __init__(self, dataset: CocoDataset, gt: dict, max_dets, ann=""):
        super().__init__()
        self.dataset, self.gt, self.max_dets, self.ann = dataset, gt, tuple(max_dets), ann
        self.seconds = 0.0
        self.last: list[float] | None = None
        self.results: list[dict] | None = None  # the last epoch's detections (COCO results)

    def on_epoch_end(self, epoch, logs=None):
        from detect.evaluation import evaluate
        from detect.inference.coco_dataset import predict_samples
        from detect.inference.predictor import CapCount

        t0 = time.perf_counter()
        caps = CapCount()
        results = predict_samples(self.model, self.dataset, stats=caps)
        result = evaluate(self.gt, results, max_dets=self.max_dets)
        # AP at the largest maxDets (pycocotools' own first statistic is fixed at 100)
        stats = [result.ap_at_max_dets, result.stats[1]]
        self.seconds = time.perf_counter() - t0
        self.last, self.results = stats, results
        if logs is not None:
            logs["val_AP"], logs["val_AP50"] = stats[0], stats[1]
        capped = caps.at_max + caps.at_top_k
        print(f"\nepoch {epoch + 1}: val AP {stats[0]:.3f}, AP50 {stats[1]:.3f} "
              f"(maxDets {self.max_dets[-1]})" + (
                  f"; {capped} of {caps.tiles} tiles at a detection cap" if capped else ""), flush=True)


def calibrate(model: RetinaNet, validation: "Validation", *, ema: bool) -> None:
    """Store each class's best-F1 score threshold on the validation set in the model
    (``postprocess.class_thresholds``): predict writes maps at that operating point. The last
    epoch's validation detections are the final model's, unless EMA weights were swapped in."""
    from detect.evaluation.calibration import calibrate as store
    from detect.evaluation.operating_point import operating_points

    results = validation.results
    if ema:  # the final weights are the averaged ones, not those the last validation ran
        from detect.inference.coco_dataset import predict_samples

        results = predict_samples(model, validation.dataset)
    points = operating_points(validation.gt, results, validation.dataset.category_ids,
                              max_dets=validation.max_dets[-1])
    thresholds, notes = store(model, points, validation.gt, validation.ann, source="validation set ")
    pairs = ", ".join(f"{n} {t:.2f}" for n, t in zip(model.class_names, thresholds))
    print(f"calibrated on the validation set (best F1 per class at IoU 0.5): {pairs}", flush=True)
    for note in notes:
        print(f"note: {note}", flush=True)


def estimate_validation_seconds(model, dataset: CocoDataset) -> float:
    """Rough cost of one validation pass: one timed inference on a validation image, scaled."""
    from detect.imagery.images import BandRule, read_image
    from detect.inference.coco_dataset import predict_arrays

    img = read_image(dataset.samples[0].path, BandRule.of(model.model_config))
    predict_arrays(model, [img])  # builds the predict function
    t0 = time.perf_counter()
    predict_arrays(model, [img])
    return 1.0 + 1.3 * (time.perf_counter() - t0) * len(dataset.samples)
