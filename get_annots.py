#!/usr/bin/env python
"""Cameras, image list, MANO parameters and vertices of one InterHand2.6M sequence.

    python get_annots.py --capture 0 --seq 0051_dinosaur [--hand-type both] [--out-root out]
"""

import sys

from interhand_prep.cli import run_main, stage_parser
from interhand_prep.options import AnnotsOptions, from_args, selector_from_args


def build_parser():
    return stage_parser("get_annots.py", __doc__.split("\n\n")[0], AnnotsOptions)


def main(args) -> int:
    from interhand_prep import annots

    result = annots.run(selector_from_args(args), from_args(AnnotsOptions, args), progress=not args.quiet)
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(build_parser(), main))
