#!/usr/bin/env python
"""Execute the notebooks headless, failing on the first error.

    python tools/run_notebooks.py [NOTEBOOK ...] [--set name=python_literal ...]

`--set` replaces assignments in the cell tagged "parameters" (e.g. --set 'basedir="/tmp/x"').
Runs with the repository root as the working directory, as a person opening them would.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["dataset_vis.ipynb", "new_anno_vis.ipynb"]


def set_parameters(book, values: dict[str, str]) -> None:
    cell = next(c for c in book.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    source = cell.source
    for name, literal in values.items():
        source, count = re.subn(rf"^{name} = .*?(\s*#.*)?$", f"{name} = {literal}", source, flags=re.M)
        if not count:
            raise SystemExit(f"no parameter {name!r} in the parameters cell")
    cell.source = source


def run(path: Path, values: dict[str, str], timeout: int = 600) -> nbformat.NotebookNode:
    """Execute the notebook (parameters replaced) in a local kernel -> the executed notebook."""
    from jupyter_client.manager import KernelManager

    book = nbformat.read(path, as_version=4)
    set_parameters(book, values)
    # IPC sockets in a folder of our own: no "kernel running over TCP" warning, nothing left behind
    with tempfile.TemporaryDirectory() as sockets:
        kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "kernel"))
        try:
            NotebookClient(book, km=kernel, timeout=timeout, resources={"metadata": {"path": str(REPO)}}).execute()
        finally:
            if kernel.has_kernel:
                kernel.shutdown_kernel()
    return book


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", default=NOTEBOOKS)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    values = dict(item.split("=", 1) for item in args.set)
    for name in args.notebooks:
        book = run(REPO / name, values)
        last = [o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if o.get("output_type") == "stream"]
        print(f"{name}: executed without error; {last[-1].strip().splitlines()[-1] if last else 'no output'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
