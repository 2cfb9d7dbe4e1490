"""Argument groups several ``detect`` commands share (post-processing, the input rule)."""

from __future__ import annotations

import argparse

from detect.config import defaults


def add_postprocess_args(p) -> None:
    """--score-threshold / --iou-threshold / --max-detections / --agnostic-nms / --vote-iou: applied
    exactly (NMS rebuilt)."""
    g = p.add_argument_group("post-processing (default: the model's own settings)")
    g.add_argument("--score-threshold", type=float,
                   help="keep detections scoring above this, one threshold for every class. Default: "
                   "predict keeps a calibrated model's per-class thresholds, else scores >= "
                   f"{defaults.UNCALIBRATED_SCORE_THRESHOLD:g}; evaluate every detection the model outputs "
                   "(its postprocess.score_threshold, 0.05 unless set: AP needs the low scores). A value "
                   "below the model's own works")
    g.add_argument("--iou-threshold", type=float, help="NMS and tile-merge IoU threshold")
    g.add_argument("--max-detections", type=int,
                   help="detections kept per tile / image (a warning counts tiles that reach it)")
    g.add_argument("--agnostic-nms", action=argparse.BooleanOptionalAction, default=None,
                   help="class-agnostic NMS: each box keeps its best class and suppresses boxes of "
                   "any class (one label per object; keras-hub's and keras-cv's rule); "
                   "--no-agnostic-nms: per class. Default: the model's setting (per class unless imported)")
    g.add_argument("--vote-iou", type=float, metavar="IOU",
                   help="box voting after NMS: each kept box becomes the score-weighted mean of the boxes of "
                   "its class overlapping it with IoU >= IOU (mostly those it suppressed): more precise boxes, "
                   "the same detections and scores; 0: off. Default: the model's setting (model.postprocess.vote_iou)")


def add_tile_args(p) -> None:
    g = p.add_argument_group("input rule (default: the one the model was trained with)")
    g.add_argument("--tile", type=int, help="tile side in model pixels")
    g.add_argument("--overlap", type=float, help="tile overlap, fraction of the tile")
    g.add_argument("--scale", type=float,
                   help="resample imagery by this factor (model pixels per image pixel) instead "
                   "of the model's rule")
    g.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE, help="tiles per batch (default: %(default)s)")
    g.add_argument("--threads", type=int,
                   help="a .tflite --model: LiteRT interpreter threads (default: all cores)")


def tile_kwargs(args) -> dict:
    """The tiling and post-processing options as keywords of :func:`detect.predict` / ``evaluate``."""
    return dict(tile=args.tile, overlap=args.overlap, scale=args.scale, batch_size=args.batch_size,
                score_threshold=args.score_threshold, iou_threshold=args.iou_threshold,
                max_detections=args.max_detections, agnostic_nms=args.agnostic_nms, vote_iou=args.vote_iou,
                threads=args.threads)


def add_command(sub, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A ``detect NAME`` subcommand whose ``--help`` keeps ``description``'s line breaks (examples)."""
    return sub.add_parser(name, help=help, description=description,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


class Renamed(argparse.Action):
    """An option's old spelling: sets the new option's value and says, in one line, what it is
    called now (old spellings keep working for one release)."""

    def __init__(self, option_strings, dest, *, new: str, **kwargs):
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        import sys

        print(f"note: {option_string} is now {self.new}; the old spelling works until the next release",
              file=sys.stderr)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)
