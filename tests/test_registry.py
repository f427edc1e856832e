"""The stage registry: adding a stage is one module under stages/ plus one registry line (and, if it
has options, their record in core/options.py), and no stage module imports another."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from interhand_prep.core.manifest import Manifest
from interhand_prep.core import registry

REPO = Path(__file__).resolve().parents[1]
STAGES_DIR = REPO / "interhand_prep" / "stages"
ONE = "0051_dinosaur"
# the modules behind commands; base, registry and processed serve them, pipeline and process drive them
COMMAND_MODULES = {entry.name for entry in registry.STAGES} | {"check_seq", "export", "merge_seq", "gif"}


def imported_stage_modules(path: Path) -> set[str]:
    """The modules of interhand_prep.stages that `path` imports (relative or absolute imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1 or module.startswith("interhand_prep.stages"):
                base = module.removeprefix("interhand_prep.stages").lstrip(".") if node.level == 0 else module
                if base:
                    found.add(base.split(".")[0])
                else:  # from . import x, y
                    found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("interhand_prep.stages."):
                    found.add(alias.name.split(".")[2])
    return found


def test_no_stage_module_imports_another():
    offenders = {}
    for name in sorted(COMMAND_MODULES):
        others = imported_stage_modules(STAGES_DIR / f"{name}.py") & (COMMAND_MODULES - {name})
        if others:
            offenders[name] = sorted(others)
    assert offenders == {}


def test_the_import_rule_sees_every_spelling(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from .render_mesh import x\nfrom . import gif, base\nimport interhand_prep.stages.export\n"
                      "from interhand_prep.stages.check_seq import y\nfrom ..core import mano\n")
    assert imported_stage_modules(module) == {"render_mesh", "gif", "base", "export", "check_seq"}


def test_the_registry_names_every_recording_stage_module():
    for entry in registry.STAGES:
        stage = entry.stage
        assert stage.entry is entry and stage.name == entry.name
        assert (REPO / entry.script).is_file()
        assert set(entry.needs) <= set(registry.names())


FRAME_NOTES = '''"""A stage added for a test: notes/<frame>.txt with the number of kept cameras, per kept frame."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.fileio import write_text
from ..core.options import NoOptions, from_args
from ..core.selection import selector_from_args
from .base import Plan, Stage, StageResult, join_reasons, run_stage, unit_digest


@dataclass
class NotesResult(StageResult):
    written: int = 0

    def summary(self) -> str:
        return f"{self.layout.root}: {self.written} notes written" + (" (up to date)" if self.up_to_date else "")


class FrameNotes(Stage):
    def plan(self, sel, opts, previous) -> Plan:
        layout = sel.layout
        recipe = {"cameras": len(layout.read_cams())}
        todo = {}
        for frame in layout.read_frames():
            unit, unit_hash = str(frame), unit_digest(recipe, str(frame))
            fresh, _ = previous.up_to_date(unit, unit_hash, previous.record.get("recipe") == recipe)
            if not (fresh and (layout.root / "notes" / f"{frame}.txt").is_file()):
                todo[unit] = unit_hash
        reason = join_reasons(f"{len(todo)} note(s) to write" if todo else None, previous.interruption_note(0, 0))
        return Plan(reason, recipe, todo=todo, total=len(layout.read_frames()))

    def new_result(self, sel, opts, plan) -> NotesResult:
        return NotesResult(sel.layout)

    def write(self, sel, opts, plan, work, result, done, lock, progress) -> None:
        for unit in plan.todo:
            write_text(sel.layout.root / "notes" / f"{unit}.txt", f"{plan.recipe['cameras']}\\n")
            done([unit])
            result.written += 1


STAGE = FrameNotes()


def main(args) -> int:
    result = run_stage(STAGE, selector_from_args(args), from_args(NoOptions, args), progress=False)
    print(result.summary())
    return 0
'''
REGISTRY_LINE = '\nSTAGES.append(StageEntry("frame_notes", "notes", "frame-notes", "Notes per frame.", needs=("get_annots",)))\n'


@pytest.mark.slow
def test_a_new_stage_is_one_module_and_one_registry_line(gl_platform, tiny, tmp_path):
    """A copy of the package with a throwaway stage: its command exists, process.sh runs it after
    the others (its own column), the manifest records it, and a rerun finds it up to date."""
    package = tmp_path / "pkg" / "interhand_prep"
    shutil.copytree(REPO / "interhand_prep", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "stages" / "frame_notes.py").write_text(FRAME_NOTES)
    with open(package / "core" / "registry.py", "a") as f:
        f.write(REGISTRY_LINE)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "pkg"))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "import sys; from interhand_prep.cli import main; sys.exit(main())",
                               *args], capture_output=True, text=True, env=env, cwd=tmp_path)

    helped = cli("frame-notes", "--help")
    assert helped.returncode == 0 and "Notes per frame." in helped.stdout, helped.stderr
    where = ["--capture", "0", "--basedir", str(tiny / "IH"), "--mano-dir", str(tiny / "mano")]
    run = cli("process", ONE, *where, "--backend", gl_platform, "--logs", str(tmp_path / "logs"), "--quiet")
    assert run.returncode == 0, run.stdout + run.stderr
    header = next(line for line in run.stdout.splitlines() if line.startswith("sequence"))
    assert header.split()[3:9] == ["annots", "lbs", "render", "refine", "notes", "check"]
    row = next(line for line in run.stdout.splitlines() if line.startswith(ONE))
    # refine-masks is optional and not asked for: "off"
    assert row.split()[9:11] == ["off", "done"] and row.split()[-1] == "ok", run.stdout
    root = tiny / "IH" / "images" / "train" / "Capture0" / ONE
    frames = (root / "frames.txt").read_text().split()
    assert sorted(p.stem for p in (root / "notes").iterdir()) == sorted(frames)
    assert list(Manifest.read(root).stages) == ["get_annots", "prepare_blend_weights", "render_mesh", "frame_notes"]
    again = cli("frame-notes", "--capture", "0", "--seq", ONE, *where[2:])
    assert again.returncode == 0 and "(up to date)" in again.stdout, again.stdout + again.stderr
