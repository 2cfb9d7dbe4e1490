"""``detect <command>``: thin argument parsing that calls the library.

Each subcommand lives in a ``_add_<name>`` function that registers its
parser and a handler; handlers import the heavy modules lazily so that
``detect --help`` answers instantly.
"""

from __future__ import annotations

import argparse
import os
import sys

# TensorFlow's C++ start-up chatter hides the messages users need.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from detect import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detect",
        description="RetinaNet object detection for TensorFlow 2 / Keras 3, "
        "built for aerial and satellite imagery.",
        epilog="Run 'detect <command> --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"detect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for add in _COMMANDS:
        add(sub)
    return parser


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="write a SavedModel with a uint8 serving signature",
        description="Export a saved detector (.keras) as a TensorFlow SavedModel. The "
        "'serving_default' signature takes uint8 RGB images [B, H, W, 3] of any size and "
        "returns boxes (xyxy pixels), scores, labels and num_detections, NMS included. "
        "Inspect it with: saved_model_cli show --dir DIR --all")
    p.add_argument("--model", required=True, help="detector saved by training (model.keras)")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.set_defaults(handler=_run_export)


def _run_export(args) -> int:
    from detect.export import export_saved_model
    from detect.models import load_model

    model = load_model(args.model)
    out = export_saved_model(model, args.out)
    print(f"wrote SavedModel to {out} (signature 'serving_default': uint8 images -> detections)")
    return 0


_COMMANDS: list = [_add_export]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        # Expected user errors: one clear line, no TensorFlow traceback.
        print(f"detect {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
