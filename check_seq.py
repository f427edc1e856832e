#!/usr/bin/env python
"""Verify a processed (or merged) sequence against the output contract, as a trainer reads it.

    python check_seq.py --capture 0 --seq 0051_dinosaur      # a sequence of the dataset
    python check_seq.py data/InterHand2.6M_30fps/merge/various_poses
"""

import argparse
import sys
from pathlib import Path

from interhand_prep.cli import DEFAULT_BASEDIR, DEFAULT_MANO_DIR, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="check_seq.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, help="a processed or merged sequence folder")
    parser.add_argument("--capture", type=int)
    parser.add_argument("--seq")
    parser.add_argument("--split", default="train", choices=["train", "val", "test"])
    parser.add_argument("--basedir", type=Path, default=DEFAULT_BASEDIR)
    parser.add_argument("--out-root", "--out_root", dest="out_root", type=Path, default=None)
    parser.add_argument("--mano-dir", "--mano_dir", dest="mano_dir", type=Path, default=DEFAULT_MANO_DIR)
    parser.add_argument("--voxel-size", "--voxel_size", dest="voxel_size", type=float, default=0.025)
    parser.add_argument("--padding", type=float, default=0.05)
    parser.add_argument("--depth-format", "--depth_format", dest="depth_format", default="npy",
                        choices=["npy", "png16", "none"])
    parser.add_argument("--debug", action="store_true")
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
