"""``detect <command>``: thin argument parsing that calls the library.

Each subcommand lives in a ``_add_<name>`` function that registers its
parser and a handler; handlers import the heavy modules lazily so that
``detect --help`` answers instantly.
"""

from __future__ import annotations

import argparse
import sys

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


_COMMANDS: list = []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except (FileNotFoundError, ValueError) as err:
        # Expected user errors: one clear line, no TensorFlow traceback.
        print(f"detect {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
