"""All stages of one sequence: get_annots, prepare_blend_weights, render_mesh, refine_masks (when
asked for: --refine-masks), then check_seq.

Each stage decides for itself, from the manifest, whether it has anything to do, and the log says
why it ran (the option or input that changed) or that it was up to date. `python -m
interhand_prep.stages.pipeline` runs one sequence (process.sh starts one such process per sequence).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..cli import add_stage_switches, run_main, stage_parser
from ..core.errors import InputError, Stopped
from ..core.fileio import write_text
from ..core.options import from_args, to_argv
from ..core.selection import SequenceSelector, selector_from_args
from ..core import registry

CHECK = "check"
STAGES = tuple(entry.short for entry in registry.STAGES) + (CHECK,)  # the columns of process's table


OPTIONAL = [entry for entry in registry.STAGES if entry.optional]


def _stage_options(cls, args: argparse.Namespace) -> "StageOptions":
    return cls(**{entry.short: from_args(entry.options, args) for entry in registry.STAGES},
               **{entry.switch_dest: bool(getattr(args, entry.switch_dest, False)) for entry in OPTIONAL})


def _stage_argv(self) -> list[str]:
    return ([entry.switch for entry in OPTIONAL if getattr(self, entry.switch_dest)]
            + [arg for entry in registry.STAGES for arg in to_argv(getattr(self, entry.short))])


def _stage_on(self, entry: registry.StageEntry) -> bool:
    return not entry.optional or getattr(self, entry.switch_dest)


# The options of every stage, as one batch run passes them on: one field per stage (`annots`,
# `lbs`, `render`, ...), and whether each optional stage runs (`run_refine_masks`, ...), made from
# the registry.
StageOptions = dataclasses.make_dataclass(
    "StageOptions", [(entry.short, entry.options, dataclasses.field(default_factory=entry.options))
                     for entry in registry.STAGES] + [(entry.switch_dest, bool, False) for entry in OPTIONAL],
    frozen=True, namespace={"from_args": classmethod(_stage_options), "to_argv": _stage_argv, "on": _stage_on,
                            "__module__": __name__,
                            "__doc__": "The options of every stage, as one batch run passes them on."})


@dataclass
class StageReport:
    status: str = "pending"  # done | skipped | off (an optional stage not asked for) | failed | interrupted | not run
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
        return all(s.status in ("done", "skipped", "off") for s in self.stages.values())

    @property
    def interrupted(self) -> bool:
        """Stopped (Ctrl-C, SIGTERM from scancel or a time limit) rather than failed: a rerun resumes."""
        return any(s.status == "interrupted" for s in self.stages.values())

    @property
    def status(self) -> str:
        return "ok" if self.ok else "interrupted" if self.interrupted else "FAILED"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "SequenceReport":
        data = json.loads(text)
        return cls(sequence=data["sequence"], frames=data["frames"], cameras=data["cameras"],
                   stages={k: StageReport(**v) for k, v in data["stages"].items()})

    def fail(self, stage: str, detail: str, seconds: float = 0.0, status: str = "failed") -> None:
        self.stages[stage] = StageReport(status, seconds, detail)
        for later in STAGES[STAGES.index(stage) + 1:]:
            self.stages[later].status = "not run"


def run_sequence(sel: SequenceSelector, opts: StageOptions = StageOptions(), progress: bool = False,
                 log=print) -> SequenceReport:
    """Run the stages in order; a failing stage stops the later ones (reported, not raised)."""
    from .base import run_stage
    from .check_seq import check_sequence

    report = SequenceReport(sequence=sel.name)
    recording = {entry.short: entry for entry in registry.STAGES}
    for stage in STAGES:
        entry = report.stages[stage]
        start = time.perf_counter()
        try:
            if stage != CHECK and not opts.on(recording[stage]):
                entry.status, entry.detail = "off", f"not asked for ({recording[stage].switch})"
                continue
            if stage == CHECK:
                result = check_sequence(sel.layout.root)
                log(result.summary())
                first = next(iter(result.problems.items()), None)
                entry.status = "done" if result.ok else "failed"
                entry.detail = "" if result.ok else f"check_seq: {len(first[1])} x {first[0]}, e.g. {first[1][0]}"
            else:
                result = run_stage(recording[stage].stage, sel, getattr(opts, stage), progress=progress)
                up_to_date = result.up_to_date
                entry.status = "skipped" if up_to_date else "done"
                entry.detail = "up to date" if up_to_date else result.reason
                log(f"[{stage}] " + ("up to date: nothing to do" if up_to_date else f"running: {result.reason}"))
                log(result.summary())
        except KeyboardInterrupt as exc:
            what = "stopped by a signal" if isinstance(exc, Stopped) else "interrupted (Ctrl-C)"
            entry.status, entry.detail = "interrupted", f"{what}; finished files are kept, a rerun does the rest"
            log(f"[{stage}] {entry.detail}")
        except InputError as exc:
            entry.status, entry.detail = "failed", str(exc)
            log(f"[{stage}] error: {exc}")
        except OSError as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            entry.status, entry.detail = "failed", f"{where}{exc.strerror or exc}"
            log(f"[{stage}] error: {entry.detail}")
        except Exception as exc:  # keep going with other sequences; the log has the traceback
            import traceback

            entry.status, entry.detail = "failed", f"{type(exc).__name__}: {exc}"
            log(traceback.format_exc())
        entry.seconds = time.perf_counter() - start
        if entry.status in ("failed", "interrupted"):
            report.fail(stage, entry.detail, entry.seconds, entry.status)
            break
    layout = sel.layout
    if layout.frames_txt.is_file() and layout.cams_txt.is_file():
        report.frames, report.cameras = len(layout.read_frames()), len(layout.read_cams())
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("interhand_prep.stages.pipeline", "All stages of one sequence.",
                          *(entry.options for entry in registry.STAGES))
    add_stage_switches(parser)
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    return parser


def main(args) -> int:
    sel = selector_from_args(args)
    report = run_sequence(sel, StageOptions.from_args(args), progress=not args.quiet,
                          log=lambda m: print(m, flush=True))
    if args.report:
        write_text(args.report, report.to_json())
    return 0 if report.ok else 130 if report.interrupted else 1


if __name__ == "__main__":
    sys.exit(run_main(build_parser(), main))
