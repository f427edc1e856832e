#!/usr/bin/env python
"""Export a processed sequence to the layout of another trainer (nerfstudio, EasyMocap).

The same as `interhand-prep export`; `python export.py --help` lists the options.
"""

import sys

from interhand_prep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("export"))
