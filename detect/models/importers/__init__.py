"""Import keras-hub and keras-cv RetinaNet detectors as ``detect`` models.

``import_detector(SOURCE)`` -> a :class:`~detect.models.retinanet.RetinaNet`
built from ``detect``'s own backbone graph, FPN and heads, whose per-anchor
class probabilities and decoded boxes equal the source's. SOURCE is

- a keras-hub preset name (``retinanet_resnet50_fpn_coco``, or with the
  ``keras_hub:`` prefix; downloaded by keras-hub, so a network is needed) or
  a local preset folder written by ``detector.save_to_preset(DIR)``;
- a ``.keras`` file holding a keras-cv ``RetinaNet`` (``model.save``) or a
  keras-hub ``RetinaNetObjectDetector``.

keras-hub and keras-cv are optional extras (``[hub]``, ``[cv]``), imported
only here. The mapping of each lives in its module; :mod:`.plan` builds and
checks the result.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

#: keras-hub presets whose classes are COCO's 91 ids (0 = unlabeled), as torchvision's RetinaNet.
COCO_PRESET_CLASSES = 91


def _import(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError as err:
        raise ImportError(f"importing this model needs {module.replace('_', '-')}: "
                          f"pip install 'detect[{extra}]'") from err


def _keras_file_class(path: Path) -> tuple[str, str]:
    """``(class_name, module)`` of the model in a ``.keras`` file, read without loading it."""
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError):
        raise ValueError(f"{path}: not a Keras model file (.keras zip with config.json)") from None
    return str(config.get("class_name")), str(config.get("module", ""))


def is_preset_name(source: str) -> bool:
    """``keras_hub:NAME``, or a bare name that is no file or folder here (``retinanet_resnet50_fpn_coco``)."""
    p = Path(source)
    return source.startswith("keras_hub:") or (not p.exists() and "/" not in source and "." not in source)


def source_kind(source: str) -> str | None:
    """"keras_hub" / "keras_cv" when ``source`` names a detector to import, else None.

    A ``.keras`` file counts only when it holds a keras-cv / keras-hub
    RetinaNet (a detect model is not imported); a preset folder only when
    it has ``task.json`` (a detector, not a bare backbone)."""
    p = Path(source)
    if is_preset_name(source):
        return "keras_hub"
    if p.is_file() and p.suffix == ".keras":
        cls, module = _keras_file_class(p)
        if cls == "RetinaNet" and module.startswith("keras_cv"):
            return "keras_cv"
        if cls == "RetinaNetObjectDetector":
            return "keras_hub"
        return None
    if p.is_dir():
        return "keras_hub" if (p / "task.json").is_file() else None
    return None


def _check_preset_folder(p: Path) -> None:
    if not (p / "config.json").is_file():
        raise ValueError(f"{p}: not a keras-hub preset folder (no config.json)")
    if not (p / "task.json").is_file():
        cls = json.loads((p / "config.json").read_text()).get("class_name")
        raise ValueError(f"{p}: a keras-hub preset of a bare backbone ({cls}), without detection heads; "
                         f"import needs a RetinaNetObjectDetector preset (detector.save_to_preset(DIR))")
    cls = json.loads((p / "task.json").read_text()).get("class_name")
    if cls != "RetinaNetObjectDetector":
        raise ValueError(f"{p}: a keras-hub preset of a {cls}, not a RetinaNetObjectDetector")


def load_source(source: str):
    """``(source_model, kind)`` for :func:`source_kind`'s kinds; clear errors for the rest."""
    p = Path(source)
    if p.suffix == ".keras":
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file")
        cls, module = _keras_file_class(p)
        if module.startswith("keras_cv"):
            _import("keras_cv", "cv")
        elif module.startswith("keras_hub"):
            _import("keras_hub", "hub")
        if cls not in ("RetinaNet", "RetinaNetObjectDetector") or not module.startswith(("keras_cv", "keras_hub")):
            raise ValueError(f"{p}: holds a {cls} ({module or 'no module'}); import takes a keras-cv RetinaNet "
                             f"or a keras-hub RetinaNetObjectDetector")
        import keras

        model = keras.saving.load_model(p, compile=False)
        return model, "keras_cv" if module.startswith("keras_cv") else "keras_hub"
    if p.is_dir():
        _check_preset_folder(p)
        handle = str(p)
    elif p.exists():
        raise ValueError(f"{p}: import takes a keras-hub preset name or folder, or a .keras file")
    else:
        handle = source.split(":", 1)[1] if source.startswith("keras_hub:") else source
    hub = _import("keras_hub", "hub")
    try:
        with warnings.catch_warnings():  # the preset's saved optimizer state: not ours to load
            warnings.filterwarnings("ignore", message=".*optimizer.*", category=UserWarning)
            return hub.models.RetinaNetObjectDetector.from_preset(handle), "keras_hub"
    except Exception as err:  # network, unknown preset, another task's preset: several types
        raise ValueError(f"could not load keras-hub preset {handle!r} ({type(err).__name__}: "
                           f"{str(err)[:200]}). A preset name needs the network (keras-hub downloads it from "
                           f"Kaggle); offline, save it once where the network is reachable with "
                           f"keras_hub.models.RetinaNetObjectDetector.from_preset(NAME).save_to_preset(DIR) "
                           f"and import DIR") from err


def class_names(source: str, num_classes: int, classes=None, *,
                coco_names: bool = False) -> tuple[tuple[str, ...], str]:
    """``(names, where they came from)``: ``classes`` (a file, one name per line, or a list),
    else COCO's names for a COCO preset, else ``class_0..K-1``."""
    if classes is not None:
        where = str(classes) if isinstance(classes, (str, Path)) else "the given list"
        if isinstance(classes, (str, Path)):
            lines = Path(classes).read_text().splitlines()
            names = [line.strip() for line in lines if line.strip()]
        else:
            names = [str(c) for c in classes]
        if len(names) != num_classes:
            raise ValueError(f"{where}: {len(names)} class names, but the source has {num_classes} classes "
                             f"(one name per line, in the source's class index order)")
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: repeated class names {sorted({n for n in names if names.count(n) > 1})}")
        return tuple(names), where
    if coco_names and "coco" in Path(source).name.lower() and num_classes == COCO_PRESET_CLASSES:
        from keras_hub.utils import coco_id_to_name

        return tuple(coco_id_to_name(i) for i in range(num_classes)), "COCO's category names (ids 0..90)"
    return tuple(f"class_{i}" for i in range(num_classes)), "none given: class_0..class_K-1 (--classes names them)"


def import_detector(source: str, classes=None, *, verbose: bool = True):
    """The ``detect`` RetinaNet equal to the keras-hub / keras-cv detector ``source`` (see module doc)."""
    from detect.models.importers.plan import assemble

    src, kind = load_source(str(source))
    if kind == "keras_cv":
        from detect.models.importers.keras_cv import plan_keras_cv as plan_of
    else:
        from detect.models.importers.keras_hub import plan_keras_hub as plan_of
    if not hasattr(src, "prediction_decoder") or not hasattr(src, "num_classes"):
        raise ValueError(f"{source}: holds a {type(src).__name__}, not a RetinaNet detector")
    names, where = class_names(str(source), int(src.num_classes), classes, coco_names=kind == "keras_hub")
    plan = plan_of(src, str(source))
    plan.config["class_names"] = list(names)
    if "coco" in where.lower():
        plan.config.setdefault("input", {})["category_ids"] = list(range(len(names)))
    model = assemble(plan)
    if verbose:
        pp = model.model_config.postprocess
        for line in plan.notes:
            print(line, flush=True)
        print(f"classes: {len(names)} ({where})", flush=True)
        print(f"post-processing from the source: score > {pp.score_threshold:g}, "
              f"{'class-agnostic' if pp.agnostic else 'per-class'} NMS IoU {pp.iou_threshold:g}, "
              f"{pp.max_detections} detections, boxes unclipped before NMS (for mAP: detect evaluate "
              f"--score-threshold 0.05)", flush=True)
    return model
