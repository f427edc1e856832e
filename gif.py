#!/usr/bin/env python
"""GIF previews of the processed sequences of a capture.

The same as `interhand-prep gif`; `python gif.py --help` lists the options.
"""

import sys

from interhand_prep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("gif"))
