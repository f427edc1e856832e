#!/usr/bin/env python
"""Verify a processed (or merged) sequence against the output contract, as a trainer reads it.

    python check_seq.py --capture 0 --seq 0051_dinosaur      # a sequence of the dataset
    python check_seq.py data/InterHand2.6M_30fps/merge/various_poses

The hands, MANO files and options it was processed with come from its manifest (prep.json);
the options below override them.
"""

import argparse
import sys
from pathlib import Path

from interhand_prep.cli import run_main
from interhand_prep.options import DEFAULT_BASEDIR, DEPTH_FORMATS, SPLITS, non_negative_float, positive_float


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="check_seq.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, help="a processed or merged sequence folder (or use --capture/--seq)")
    parser.add_argument("--capture", type=int, metavar="N", help="capture number N of Capture<N>")
    parser.add_argument("--seq", metavar="NAME", help="sequence name, e.g. 0051_dinosaur")
    parser.add_argument("--split", default="train", choices=SPLITS, help="dataset split (default: train)")
    parser.add_argument("--basedir", type=Path, default=DEFAULT_BASEDIR, metavar="DIR",
                        help=f"InterHand2.6M 30 fps root (default: {DEFAULT_BASEDIR})")
    parser.add_argument("--out-root", "--out_root", dest="out_root", type=Path, default=None, metavar="DIR",
                        help="the --out-root the sequence was processed with, if any")
    parser.add_argument("--mano-dir", "--mano_dir", dest="mano_dir", type=Path, default=None, metavar="DIR",
                        help="MANO model folder (default: the files recorded in the manifest)")
    parser.add_argument("--voxel-size", "--voxel_size", dest="voxel_size", type=positive_float, default=None,
                        metavar="M", help="grid spacing in metres (default: as recorded, else 0.025)")
    parser.add_argument("--padding", type=non_negative_float, default=None, metavar="M",
                        help="grid margin in metres (default: as recorded, else 0.05)")
    parser.add_argument("--depth-format", "--depth_format", dest="depth_format", default=None, choices=DEPTH_FORMATS,
                        help="depth files to expect (default: as recorded, else npy)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    return parser


def main(args) -> int:
    from interhand_prep.check import check_sequence
    from interhand_prep.errors import InputError
    from interhand_prep.layout import SequenceLayout

    if args.path is None:
        if args.capture is None or not args.seq:
            raise InputError("give a sequence folder, or --capture and --seq")
        args.path = SequenceLayout.for_sequence(args.basedir, args.split, args.capture, args.seq, args.out_root).root
    report = check_sequence(args.path, args.mano_dir, args.voxel_size, args.padding, args.depth_format)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(run_main(build_parser(), main))
