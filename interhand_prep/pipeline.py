"""All stages of one sequence, resumable: a stage whose outputs are complete and newer than its
inputs is skipped; a stale one is redone. `python -m interhand_prep.pipeline` runs one sequence
(process.sh starts one such process per sequence, logging to logs/)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import annots, blend_weights, render_mesh
from .annots import SequenceSelector
from .cli import add_sequence_options, run_main, selector_from_args
from .dataset import AnnotationFiles
from .errors import InputError
from .fileio import sequence_lock, write_text
from .mano import model_filename

STAGES = ("annots", "lbs", "render", "check")


@dataclass
class StageReport:
    status: str = "pending"  # done | skipped | failed | not run
    seconds: float = 0.0
    detail: str = ""


@dataclass
class SequenceReport:
    sequence: str
    frames: int = 0
    cameras: int = 0
    stages: dict[str, StageReport] = field(default_factory=lambda: {s: StageReport() for s in STAGES})

    @property
    def ok(self) -> bool:
        return all(s.status in ("done", "skipped") for s in self.stages.values())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "SequenceReport":
        data = json.loads(text)
        return cls(sequence=data["sequence"], frames=data["frames"], cameras=data["cameras"],
                   stages={k: StageReport(**v) for k, v in data["stages"].items()})


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


def stage_outputs(sel: SequenceSelector, stage: str) -> list[Path] | None:
    """Every output file of a finished stage, or None when the stage cannot be judged yet."""
    layout = sel.layout
    if stage == "annots":
        return [layout.annots, layout.cams_txt, layout.frames_txt]
    if not layout.annots.is_file():
        return None
    frames = layout.read_frames()
    if stage == "lbs":
        out = []
        for hand in sel.hands:
            out += [layout.lbs_file(hand, name) for name in ("faces", "parents", "weights", "joints", "tvertices", "tbw")]
            out += [layout.bweights(hand, f) for f in frames] + [layout.bs(hand, f) for f in frames]
        return out
    cams = layout.read_cams()
    return ([layout.mask(c, f) for c in cams for f in frames]
            + [layout.depth(c, f, "npy") for c in cams for f in frames])


def stage_inputs(sel: SequenceSelector, stage: str) -> list[Path]:
    if stage == "annots":
        files = AnnotationFiles(sel.basedir, sel.split)
        return [files.camera, files.mano] + [Path(sel.mano_dir) / model_filename(h) for h in sel.hands]
    return [sel.layout.annots]  # get_annots writes it last: it dates all of that stage's outputs


def stage_state(sel: SequenceSelector, stage: str) -> str:
    """'complete', 'missing' (some output absent) or 'stale' (an input is newer than an output)."""
    outputs = stage_outputs(sel, stage)
    if outputs is None or not all(p.is_file() for p in outputs):
        return "missing"
    oldest = min(p.stat().st_mtime for p in outputs)
    newest_input = max(_mtime(p) for p in stage_inputs(sel, stage))
    return "stale" if newest_input > oldest else "complete"


def run_sequence(sel: SequenceSelector, progress: bool = False, log=print) -> SequenceReport:
    """Run the stages in order under the sequence's lock; a failing stage stops the later ones
    (reported, not raised)."""
    report = SequenceReport(sequence=sel.name)
    try:
        with sequence_lock(sel.layout.root):
            _run_stages(sel, report, progress, log)
    except InputError as exc:  # the lock is held by another run, or the folder is not writable
        report.stages[STAGES[0]] = StageReport("failed", 0.0, str(exc))
        for stage in STAGES[1:]:
            report.stages[stage].status = "not run"
        log(f"error: {exc}")
    return report


def _run_stages(sel: SequenceSelector, report: SequenceReport, progress: bool, log) -> None:
    overwrite = sel.overwrite
    for stage in STAGES:
        entry = report.stages[stage]
        start = time.perf_counter()
        try:
            if stage == "check":  # no outputs of its own: always run, at the end
                from .check import check_sequence

                result = check_sequence(sel.layout.root, sel.mano_dir)
                log(result.summary())
                first = next(iter(result.problems.items()), None)
                entry.status = "done" if result.ok else "failed"
                entry.detail = "" if result.ok else f"check_seq: {len(first[1])} x {first[0]}, e.g. {first[1][0]}"
            elif (state := "missing" if overwrite else stage_state(sel, stage)) == "complete":
                entry.status, entry.detail = "skipped", "outputs complete and up to date"
                log(f"[{stage}] skipped: outputs complete and newer than their inputs")
            else:
                if state == "stale":
                    log(f"[{stage}] inputs changed since the last run: redoing it")
                sel.overwrite = overwrite or state == "stale"
                if stage == "annots":
                    result = annots.run(sel, progress=progress)
                elif stage == "lbs":
                    result = blend_weights.run(sel, progress=progress)
                else:
                    result = render_mesh.run(sel, progress=progress)
                log(result.summary())
                entry.status = "done"
        except InputError as exc:
            entry.status, entry.detail = "failed", str(exc)
            log(f"[{stage}] error: {exc}")
        except Exception as exc:  # keep going with other sequences; the log has the traceback
            import traceback

            entry.status, entry.detail = "failed", f"{type(exc).__name__}: {exc}"
            log(traceback.format_exc())
        finally:
            sel.overwrite = overwrite
        entry.seconds = time.perf_counter() - start
        if entry.status == "failed":
            for later in STAGES[STAGES.index(stage) + 1:]:
                report.stages[later].status = "not run"
            break
    if sel.layout.frames_txt.is_file() and sel.layout.cams_txt.is_file():
        report.frames, report.cameras = len(sel.layout.read_frames()), len(sel.layout.read_cams())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interhand_prep.pipeline", description="All stages of one sequence.")
    add_sequence_options(parser)
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    return parser


def main(args) -> int:
    sel = selector_from_args(args)
    report = run_sequence(sel, progress=not args.quiet, log=lambda m: print(m, flush=True))
    if args.report:
        write_text(args.report, report.to_json())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(run_main(build_parser(), main))
