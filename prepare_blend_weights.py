#!/usr/bin/env python
"""Linear-blend-skinning weight grids (lbs/) around the canonical and every posed hand.

    python prepare_blend_weights.py --capture 0 --seq 0051_dinosaur [--voxel-size 0.025] [--padding 0.05]
"""

import argparse
import sys

from interhand_prep.cli import run_main, stage_parser
from interhand_prep.options import BlendWeightOptions, from_args, non_negative_int, selector_from_args


def build_parser():
    parser = stage_parser("prepare_blend_weights.py", __doc__.split("\n\n")[0], BlendWeightOptions)
    parser.add_argument("--workers", dest="lbs_workers", type=non_negative_int, metavar="N",
                        default=argparse.SUPPRESS, help="same as --lbs-workers")
    return parser


def main(args) -> int:
    from interhand_prep import blend_weights

    result = blend_weights.run(selector_from_args(args), from_args(BlendWeightOptions, args), progress=not args.quiet)
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(build_parser(), main))
