"""The packaged training recipes by name (``--config aerial-cpu``), and ``--config`` resolved to a file.

No TensorFlow here: ``detect train --help`` lists the recipes and a bad name is refused
before anything loads.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

_FOLDER = Path(__file__).resolve().parents[1] / "recipes"

#: Recipe name -> (file in detect/recipes/, one line on what it is for).
RECIPES = {
    "aerial-cpu": ("aerial_cpu.yaml", "small, touching objects on a CPU, from random weights "
                                      "(GroupNorm ResNet-18, native resolution, crops)"),
    "aerial-pretrained-cpu": ("aerial_pretrained_cpu.yaml", "the same from ImageNet EfficientNet-Lite0 "
                                                            "weights (the [pretrained] extra, offline)"),
}


#: What ``detect train`` uses without ``--config`` (said at the start of the run).
DEFAULT_RECIPE = "aerial-cpu"


def describe() -> str:
    """``"aerial-cpu (...), aerial-pretrained-cpu (...)"`` for ``--help``."""
    return "; ".join(f"{name}: {what}" for name, (_, what) in RECIPES.items())


def recipe_path(config: str | Path, *, note: bool = True) -> Path:
    """The YAML file ``--config`` names: a packaged recipe's name (``aerial-cpu``, also spelt
    ``aerial_cpu``), or a path. A missing path whose stem names a recipe (the old
    ``data/aerial_cpu.yaml``) becomes that recipe with a one-line note; any other missing
    path is a FileNotFoundError with the recipes' names. ``note=False``: check only, say nothing."""
    text = str(config)
    name = text.replace("_", "-")
    if name in RECIPES:
        return _FOLDER / RECIPES[name][0]
    path = Path(text)
    if path.is_file():
        return path
    moved = path.stem.replace("_", "-")
    if path.suffix in (".yaml", ".yml") and moved in RECIPES:
        if note:
            print(f"note: --config {text}: no such file; using the packaged recipe {moved} "
                  f"(recipes live in the package now: --config {moved})", file=sys.stderr)
        return _FOLDER / RECIPES[moved][0]
    close = difflib.get_close_matches(name, list(RECIPES), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise FileNotFoundError(f"--config {text}: no such file, and not a recipe name ({', '.join(RECIPES)}){hint}")
