"""`python -m interhand_prep <command>`: the same as the installed `interhand-prep` command."""

import sys

from .cli import main

sys.exit(main())
