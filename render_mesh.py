#!/usr/bin/env python
"""A hand mask and a depth map for every camera view, rendered from the MANO mesh.

The same as `interhand-prep render-mesh`; `python render_mesh.py --help` lists the options.
"""

import sys

from interhand_prep.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("render-mesh"))
