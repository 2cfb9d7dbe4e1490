"""Start training from a detector trained before (``detect train --init-from``).

Weights are matched by their layer path (``conv1_conv/kernel``,
``fpn_p3_output/kernel``, ``cls_predict/bias`` ...) and shape, never by
order. The class logits layer (``cls_predict``) is remapped by class name:
rows of classes the two models share keep what the source learned, classes
new to the target start from the prior bias (and the initial kernel).
Everything else that does not match is left as initialised, and said so.

Architecture: unless the user's config pins them, the target takes the
source's architecture fields (:data:`ARCHITECTURE`, anchors included), so
``--init-from trees.keras`` without a config rebuilds the same network; the
input rule and caps are still fitted to the new data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detect.config import backbones as backbone_registry

#: Model config fields that shape the network (and its anchors): copied from the
#: source model unless the user's config sets them.
ARCHITECTURE = ("backbone", "backbone_weights", "backbone_layers", "backbone_width", "mobilenet_alpha",
                "backbone_norm", "zero_init_residual", "fpn_channels", "p6_from", "head_convs", "head_norm",
                "box_variances", "anchors", "pad_multiple",
                # the input the weights were trained on: bands and their normalisation
                "input_bands", "bands", "input_normalization", "input_mean", "input_std", "band_mean",
                "band_std")
CLASS_LOGITS = "cls_predict"


def source_model_file(path) -> Path:
    """``path`` itself (a ``.keras`` file), or a run folder's model.keras, else its newest checkpoint."""
    path = Path(path)
    if path.is_dir():
        if (path / "model.keras").is_file():
            return path / "model.keras"
        from detect.training.runs import RunFolder

        latest = RunFolder(path).latest()
        if latest is None:
            raise FileNotFoundError(f"--init-from {path}: a folder with neither model.keras nor a checkpoint")
        return Path(latest.model_file)
    if not path.exists():
        raise FileNotFoundError(f"--init-from {path}: no such file")
    return path


def load_source(path):
    """The source detector of ``--init-from`` (a clear error when it is not one): a detect
    model or run folder, or a keras-hub / keras-cv RetinaNet, imported first."""
    from detect.models.factory import load_keras_model
    from detect.models.importers import import_detector, source_kind

    if source_kind(str(path)) is not None:
        print(f"--init-from {path}: importing it (detect import)", flush=True)
        return import_detector(str(path))
    file = source_model_file(path)
    try:
        return load_keras_model(file)
    except (ValueError, TypeError) as err:
        raise ValueError(f"--init-from {file}: not a detect model ({err})") from None


def inherit_architecture(cfg, source_cfg):
    """``cfg`` with the source's :data:`ARCHITECTURE` fields where ``cfg`` does not set them."""
    from dataclasses import replace

    taken = {k: getattr(source_cfg, k) for k in ARCHITECTURE if not cfg.is_explicit(f"model.{k}")}
    out = replace(cfg, model=replace(cfg.model, **taken))
    # the anchors are what the source's heads learned to regress from: the data fit reports their
    # coverage but does not refit them (the input rule, scale and tile, is still fitted to the new data)
    return replace(out, explicit=out.explicit | ({"model.anchors"} if "anchors" in taken else set()))


@dataclass
class InitReport:
    loaded: list[str] = field(default_factory=list)
    reinitialised: dict[str, str] = field(default_factory=dict)  # path -> why
    kept_classes: list[str] = field(default_factory=list)
    new_classes: list[str] = field(default_factory=list)
    dropped_classes: list[str] = field(default_factory=list)
    loaded_params: int = 0
    total_params: int = 0

    def lines(self, source) -> list[str]:
        out = [f"init from {source}: {len(self.loaded)} weights loaded ({self.loaded_params:,} of "
               f"{self.total_params:,} parameters)"]
        if self.kept_classes or self.new_classes:
            out.append(f"  class logits remapped by name: kept {', '.join(self.kept_classes) or '-'}; "
                       f"new (prior bias) {', '.join(self.new_classes) or '-'}; "
                       f"source classes not used {', '.join(self.dropped_classes) or '-'}")
        if self.reinitialised:
            why = Counter(self.reinitialised.values())
            out.append(f"  re-initialised: {len(self.reinitialised)} weights (" +
                       "; ".join(f"{n} {reason}" for reason, n in why.most_common()) + "), e.g. " +
                       ", ".join(list(self.reinitialised)[:4]))
        return out


def build_like(cfg_model, source):
    """A RetinaNet for ``cfg_model`` whose backbone is built without fetching pretrained weights
    (every weight comes from ``source``), from the source's own graph for a ``"source"`` backbone."""
    from detect.models.retinanet import RetinaNet

    graph = source.get_config().get("backbone_graph") if cfg_model.backbone == "source" else None
    return RetinaNet(cfg_model, load_backbone_weights=False, backbone_graph=graph)


def _backbone_name(config) -> str:
    """The backbone as --init-from compares it: with its width where the registry says one applies
    (ResNet-18/34 built here); a width means nothing for a source or a fixed-width network."""
    spec = backbone_registry.SPECS.get(config.backbone)
    return f"{config.backbone} (width {config.backbone_width})" if spec and spec.has_width else config.backbone


def init_from(model, source) -> InitReport:
    """Copy ``source``'s weights into ``model`` by path and shape; remap class logits by name.

    Raises ValueError when the backbones differ or no weight matches.
    """
    from detect.models.backbone_sources import share_saved_models

    a, b = model.model_config, source.model_config
    if _backbone_name(a) != _backbone_name(b):
        raise ValueError(f"--init-from: the source model's backbone is {_backbone_name(b)}, this model's "
                         f"{_backbone_name(a)}; use the same backbone (leave model.backbone unset to take "
                         f"the source's)")
    theirs = {w.path: w for w in source.weights}
    report = InitReport()
    shared = [n for n in model.class_names if n in source.class_names]
    for w in model.weights:
        size = int(np.prod(w.shape))
        report.total_params += size
        src = theirs.get(w.path)
        if w.path.startswith(f"{CLASS_LOGITS}/"):
            if src is None or not _remap_logits(w, src, model.class_names, source.class_names):
                report.reinitialised[w.path] = "shape differs" if src is not None \
                    else "not in the source"
            else:
                report.loaded.append(w.path)
                report.loaded_params += size * len(shared) // max(len(model.class_names), 1)
            continue
        if src is None:
            report.reinitialised[w.path] = "not in the source"
        elif tuple(src.shape) != tuple(w.shape):
            report.reinitialised[w.path] = "shape differs"
        else:
            w.assign(src)
            report.loaded.append(w.path)
            report.loaded_params += size
    share_saved_models(source, model)
    if all(p.startswith(f"{CLASS_LOGITS}/") for p in report.loaded):
        raise ValueError("--init-from: no weight of the source matches this model by layer name and shape")
    report.kept_classes = shared
    report.new_classes = [n for n in model.class_names if n not in source.class_names]
    report.dropped_classes = [n for n in source.class_names if n not in model.class_names]
    return report


def _remap_logits(dst, src, dst_names, src_names) -> bool:
    """Copy the logits rows of shared classes (channel ``a * K + k``); False if the anchor counts differ."""
    kd, ks = len(dst_names), len(src_names)
    if dst.shape[-1] % kd or src.shape[-1] % ks or dst.shape[-1] // kd != src.shape[-1] // ks \
            or tuple(dst.shape[:-1]) != tuple(src.shape[:-1]):
        return False
    anchors = dst.shape[-1] // kd
    value, source = np.array(dst.numpy()), src.numpy()
    for k, name in enumerate(dst_names):
        if name in src_names:
            j = src_names.index(name)
            for a in range(anchors):
                value[..., a * kd + k] = source[..., a * ks + j]
    dst.assign(value)
    return True
