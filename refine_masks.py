#!/usr/bin/env python
"""Every rendered MANO mask refined against its camera image (mask_cihp/, mask_quality.csv).

The same as `interhand-prep refine-masks`; `python refine_masks.py --help` lists the options.
"""

import sys

from interhand_prep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("refine-masks"))
