#!/usr/bin/env python
"""A hand mask and a depth map for every camera view, rendered from the MANO mesh (pyrender offscreen).

    python render_mesh.py --capture 0 --seq 0051_dinosaur [--backend auto] [--depth-format npy] [--workers N]
"""

import argparse
import sys

from interhand_prep.cli import run_main, stage_parser
from interhand_prep.options import RenderOptions, from_args, non_negative_int, selector_from_args


def build_parser():
    parser = stage_parser("render_mesh.py", __doc__.split("\n\n")[0], RenderOptions)
    parser.add_argument("--workers", dest="render_workers", type=non_negative_int, metavar="N",
                        default=argparse.SUPPRESS, help="same as --render-workers")
    return parser


def main(args) -> int:
    from interhand_prep import render_mesh

    result = render_mesh.run(selector_from_args(args), from_args(RenderOptions, args), progress=not args.quiet)
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(build_parser(), main))
