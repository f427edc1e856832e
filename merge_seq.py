#!/usr/bin/env python
"""Merge processed sequences into one, with relative symbolic links.

The same as `interhand-prep merge-seq`; `python merge_seq.py --help` lists the options.
"""

import sys

from interhand_prep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("merge-seq"))
