#!/usr/bin/env bash
# Run the processing stages over sequences of a capture; `./process.sh --demo` for the demo.
# The same as `interhand-prep process` (all logic lives in interhand_prep/stages/process.py),
# with the code of the checkout this script is in. Relative paths are the caller's.
#
# It needs no activated virtual environment (a Slurm job calls it by path). The interpreter is the
# first of these that can import the package: the .venv beside this script, the interpreter of an
# installed `interhand-prep` command, $PYTHON, python3.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"

candidates=("$here/.venv/bin/python")
if installed="$(command -v interhand-prep 2>/dev/null)"; then
    shebang="$(head -n 1 "$installed")"
    candidates+=("${shebang#\#!}")
fi
candidates+=("${PYTHON:-}" python3)
for python in "${candidates[@]}"; do
    if [ -n "$python" ] && command -v "$python" >/dev/null 2>&1 \
            && "$python" -c "import importlib.util as u, interhand_prep.cli
assert all(u.find_spec(m) for m in ('pyrender', 'point_cloud_utils', 'PIL'))" >/dev/null 2>&1; then
        exec "$python" -m interhand_prep process "$@"
    fi
done
echo "process.sh: no Python with interhand-prep's dependencies found; create one beside this script" \
     "(python3 -m venv $here/.venv && $here/.venv/bin/pip install -r $here/requirements.txt)" \
     "or set PYTHON=/path/to/python" >&2
exit 2
