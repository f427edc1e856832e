#!/usr/bin/env bash
# Run the processing stages over sequences of a capture; `./process.sh --demo` for the demo.
# All logic lives in interhand_prep/workflow.py; PYTHON selects the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")"
exec "${PYTHON:-python}" -m interhand_prep.workflow "$@"
