#!/usr/bin/env python
"""Merge processed sequences into one, with relative symbolic links (no extra space).

    python merge_seq.py --seq 0006_thumbup_relaxed 0012_aokay_upright --new-name various_poses
"""

import argparse
import sys
from pathlib import Path

from interhand_prep.cli import run_main
from interhand_prep.options import DEFAULT_BASEDIR, SPLITS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="merge_seq.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq", nargs="+", required=True,
                        help="sequences: seq, Capture<N>/seq or <split>/Capture<N>/seq")
    parser.add_argument("--new-name", "--new_name", dest="new_name", required=True, help="name of the merged sequence")
    parser.add_argument("--split", default="train", choices=SPLITS, help="default split of entries (default: train)")
    parser.add_argument("--capture", type=int, default=0, metavar="N", help="default capture of entries (default: 0)")
    parser.add_argument("--basedir", type=Path, default=DEFAULT_BASEDIR, metavar="DIR",
                        help=f"InterHand2.6M 30 fps root (default: {DEFAULT_BASEDIR})")
    parser.add_argument("--out-root", "--out_root", dest="out_root", type=Path, default=None,
                        help="where the sequences were processed to (and where merge/ goes)")
    parser.add_argument("--force", action="store_true", help="replace an existing merge of that name")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    return parser


def main(args) -> int:
    from interhand_prep.merge import merge_sequences
    from interhand_prep.layout import SequenceLayout

    dest = merge_sequences(args.basedir, args.seq, args.new_name, split=args.split, capture=args.capture,
                           out_root=args.out_root, force=args.force)
    layout = SequenceLayout(dest)
    print(f"{dest}: {len(args.seq)} sequences, {len(layout.read_frames())} frames, {len(layout.read_cams())} cameras")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(build_parser(), main))
