#!/usr/bin/env python
"""Cameras, image list, MANO parameters and vertices of one InterHand2.6M sequence.

    python get_annots.py --capture 0 --seq 0051_dinosaur [--hand-type both] [--out-root out]
"""

import argparse
import sys
from pathlib import Path

from interhand_prep.cli import add_sequence_options, run_main, selector_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="get_annots.py", description=__doc__.split("\n\n")[0])
    add_sequence_options(parser)
    parser.add_argument("--keep-landscape", "--keep_landscape", dest="keep_landscape", action="store_true",
                        help="keep landscape (512x334) cameras too")
    parser.add_argument("--keep-black-frames", "--keep_black_frames", dest="keep_black_frames", action="store_true",
                        help="keep frames that are all black in some RGB camera")
    parser.add_argument("--cameras-csv", "--cameras_csv", dest="cameras_csv", type=Path, default=None,
                        help="camera table (cam_ids,portrait,RGB,...) overriding what the images say")
    return parser


def main(args) -> int:
    from interhand_prep import annots

    result = annots.run(selector_from_args(args),
                        annots.AnnotsOptions(keep_landscape=args.keep_landscape, keep_black_frames=args.keep_black_frames,
                                             cameras_csv=args.cameras_csv),
                        progress=not args.quiet)
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(build_parser(), main))
