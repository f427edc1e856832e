#!/usr/bin/env python
"""Linear-blend-skinning weight grids (lbs/) around the canonical and every posed hand.

    python prepare_blend_weights.py --capture 0 --seq 0051_dinosaur [--voxel-size 0.025] [--padding 0.05]
"""

import argparse
import sys

from interhand_prep.cli import add_sequence_options, run_main, selector_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prepare_blend_weights.py", description=__doc__.split("\n\n")[0])
    add_sequence_options(parser)
    parser.add_argument("--voxel-size", "--voxel_size", dest="voxel_size", type=float, default=0.025,
                        help="grid spacing in metres (default: 0.025)")
    parser.add_argument("--padding", type=float, default=0.05, help="margin around the mesh in metres (default: 0.05)")
    parser.add_argument("--surface-weights", "--surface_weights", dest="surface_weights", action="store_true",
                        help="bweights from the closest surface point instead of the nearest vertex")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core)")
    return parser


def main(args) -> int:
    from interhand_prep import blend_weights

    opts = blend_weights.BlendWeightOptions(voxel_size=args.voxel_size, padding=args.padding,
                                            surface_weights=args.surface_weights, workers=args.workers)
    result = blend_weights.run(selector_from_args(args), opts, progress=not args.quiet)
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(build_parser(), main))
