#!/usr/bin/env python
"""Cameras, image list, MANO parameters and vertices of one InterHand2.6M sequence.

The same as `interhand-prep get-annots`; `python get_annots.py --help` lists the options.
"""

import sys

from interhand_prep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("get-annots"))
