#!/usr/bin/env bash
# Run the processing stages over sequences of a capture; `./process.sh --demo` for the demo.
# The same as `interhand-prep process`; all logic lives in interhand_prep/stages/process.py.
# Relative paths are the caller's. PYTHON selects the interpreter (default: python).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m interhand_prep process "$@"
