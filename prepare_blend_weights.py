#!/usr/bin/env python
"""Linear-blend-skinning weight grids (lbs/) around the canonical and every posed hand.

The same as `interhand-prep prepare-blend-weights`; `python prepare_blend_weights.py --help` lists the options.
"""

import sys

from interhand_prep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("prepare-blend-weights"))
