#!/usr/bin/env python
"""Verify a processed (or merged) sequence against the output contract.

The same as `interhand-prep check-seq`; `python check_seq.py --help` lists the options.
"""

import sys

from interhand_prep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("check-seq"))
