"""The run skeleton shared by every stage that records itself in the manifest (prep.json).

    plan -> up to date? -> lock -> plan again -> free space -> prepare -> journal -> write -> record

- `plan` (the stage's) reads the last finished run's record and the journal of an unfinished one
  and says what is stale and why; it writes nothing.
- `prepare` computes what needs no writing and may refuse (InputError). A run that refuses or
  fails up to here leaves the sequence folder and its manifest exactly as they were: the record
  of the last good run stays.
- Before the first write the driver lists every unit of work the run will do (a view, a frame's
  grids, the whole get_annots output) in the journal `.<stage>.progress` of the sequence folder,
  with the digest of everything the unit depends on; `write` writes the outputs and reports each
  unit as it finishes, and the driver appends that too.
- Then the new record replaces the old one in the manifest and the journal is deleted.

A run stopped inside `write` (Ctrl-C, SIGKILL, a Slurm time limit, a full disk) leaves the old
record and the journal. The stage is then stale ("interrupted"). For a unit the journal names, the
journal decides: done if its last line says done with the digest the unit has now, else redone
(it may have been half-way, or written with other options); for every other unit the old record
still decides. So the next run does only the rest, and never trusts a file that an unfinished run
may have replaced.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .. import __version__
from ..core.fileio import FILE_MODE, check_free_space
from ..core.layout import VIEW_KINDS, SequenceLayout
from ..core.locking import sequence_lock
from ..core.manifest import Manifest, digest, stage_record
from ..core.selection import SequenceSelector
from ..core.processed import require_finished
from ..core import registry
from ..core.registry import StageEntry

log = logging.getLogger(__name__)


class Journal:
    """The units of an unfinished run of one stage: `<folder>/.<stage>.progress`, lines
    `todo <unit> <digest>` (written before the run's first write) and `done <unit> <digest>`
    (appended as each unit's files are complete). Runs that stop one after another append to the
    same journal; a unit's last line counts. A torn last line (a kill during the write) is ignored."""

    def __init__(self, layout: SequenceLayout, stage: str):
        self.path = layout.progress(stage)
        self._fd: int | None = None

    def exists(self) -> bool:
        return self.path.is_file()

    def entries(self) -> dict[str, tuple[str, str]]:
        """{unit: (state "todo" or "done", digest)} from each unit's last line (empty: no journal)."""
        try:
            text = self.path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return {}
        out = {}
        for line in text.split("\n")[:-1]:  # the part after the last newline is torn or empty
            parts = line.split(" ")
            if len(parts) == 3 and parts[0] in ("todo", "done"):
                out[parts[1]] = (parts[0], parts[2])
        return out

    def open(self) -> None:
        """Start (or continue) the journal: from now on the folder holds work of an unfinished run."""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)

    def add(self, state: str, units: Iterable[tuple[str, str]]) -> None:
        data = "".join(f"{state} {unit} {unit_digest}\n" for unit, unit_digest in units).encode()
        if data and self._fd is not None:
            os.write(self._fd, data)  # one append: whole lines, in order

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def finish(self) -> None:
        """The run completed and is recorded: no journal any more."""
        self.close()
        self.path.unlink(missing_ok=True)


@dataclass
class Previous:
    """What earlier runs of a stage left: the manifest, the last finished run's record, and the
    journal of an unfinished one ({unit: (state, digest)}; `interrupted` when there is one)."""

    manifest: Manifest
    record: dict
    journal: dict[str, tuple[str, str]]
    interrupted: bool

    @classmethod
    def read(cls, layout: SequenceLayout, stage: str) -> "Previous":
        manifest = Manifest.read(layout.root)
        journal = Journal(layout, stage)
        return cls(manifest, manifest.stage(stage) or {}, journal.entries(), journal.exists())

    def up_to_date(self, unit: str, unit_digest: str, by_record: bool) -> tuple[bool, bool]:
        """Whether `unit` (its files on disk) needs no work: the journal decides for the units it
        names, the record (`by_record`: its digests match) for the others. -> (no work, resumed:
        done by an unfinished run)."""
        entry = self.journal.get(unit)
        if entry is None:
            return by_record, False
        return entry == ("done", unit_digest), entry == ("done", unit_digest)

    def interruption_note(self, resumed: int, total: int) -> str | None:
        if not self.interrupted:
            return None
        return f"resuming an interrupted run: {resumed} of {total} unit(s) already done"


def unit_digest(recipe: dict, *parts: str) -> str:
    """The digest a journal stores for a unit: the stage's recipe, the package version and the
    unit's own inputs (frame and camera digests)."""
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return digest(__version__.encode(), text.encode(), *(p.encode() for p in parts))


@dataclass
class Plan:
    """What a run of a stage would do.

    reason       why it must run; None when its outputs are up to date
    recipe       what decides its outputs (compared by the next run), stored in the record
    inputs       paths and identities of what it read, for people and check-seq
    state        further record keys (per-frame and per-camera digests)
    todo         {unit: digest} of the units this run computes
    total        units of a whole run (for the summary and the journal note)
    resumed      units an interrupted run already did (skipped now)
    needed_bytes the free disk space the todo units need (an estimate; checked before any work),
    needed_for   what they are, for the message when the disk is too full
    stale_files  outputs a fresh run would not have, removed at the end
    data         the stage's own payload (frames, cameras, meshes...)
    """

    reason: str | None
    recipe: dict
    inputs: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    todo: dict[str, str] = field(default_factory=dict)
    total: int = 0
    resumed: int = 0
    needed_bytes: float = 0.0
    needed_for: str = ""
    stale_files: list = field(default_factory=list)
    data: Any = None


@dataclass
class StageResult:
    """What a run of a stage did, common to every stage (each adds its own counts and summary).

    up_to_date  nothing was stale: the run did nothing
    reason      why it ran (the option or input that changed, an unfinished run...)
    resumed     units an unfinished earlier run had done, not done again
    seconds     the whole run, planning included
    """

    layout: SequenceLayout
    up_to_date: bool = field(default=False, kw_only=True)
    reason: str = field(default="", kw_only=True)
    resumed: int = field(default=0, kw_only=True)
    seconds: float = field(default=0.0, kw_only=True)

    def summary(self) -> str:
        raise NotImplementedError


def view_unit(frame: int, cam: str) -> str:
    """A camera view's name in the journal of a per-view stage."""
    return f"{int(frame)}:{cam}"


@dataclass
class ViewPlan:
    """What a per-view stage must do: `todo` {view unit: digest} in frame-major order, why
    (`reason`, None: nothing), the views an unfinished run did (`resumed`), the bytes still to
    write and the files of views no longer wanted (`stale_files`)."""

    reason: str | None
    todo: dict[str, str]
    resumed: int
    total: int
    needed_bytes: float
    stale_files: list


def plan_views(stage: str, layout: SequenceLayout, previous: "Previous", recipe: dict, global_reason: str | None,
               frames: list[int], cameras: list, frame_digests: dict[str, str], camera_digests: dict[str, str],
               formats: dict[str, str]) -> ViewPlan:
    """The staleness rule of a stage with one output file per view and kind (`formats` {kind:
    format}, rows of layout.VIEW_KINDS written by `stage`): `global_reason` (a changed recipe,
    --overwrite) redoes every view; otherwise a view is redone when its frame's or camera's digest
    changed since the recorded run, when a file is missing, or where the journal of an unfinished
    run does not say it was done with the digest it has now. `cameras` have .cam_id, .width and
    .height; files of the stage's kinds that no wanted view has are stale."""
    old_frames = previous.record.get("frames", {}) if not global_reason else {}
    old_cams = previous.record.get("cameras", {}) if not global_reason else {}
    changed_frames = {f for f in frames if old_frames.get(str(f)) != frame_digests[str(f)]}
    changed_cams = {c.cam_id for c in cameras if old_cams.get(c.cam_id) != camera_digests[c.cam_id]}
    bytes_per_pixel = sum(VIEW_KINDS[kind].formats[fmt][2] for kind, fmt in formats.items())
    todo: dict[str, str] = {}
    resumed = missing = 0
    needed = 0.0
    for f in frames:
        for cam in cameras:
            unit = view_unit(f, cam.cam_id)
            unit_hash = unit_digest(recipe, frame_digests[str(f)], camera_digests[cam.cam_id])
            recorded = f not in changed_frames and cam.cam_id not in changed_cams
            fresh, by_journal = previous.up_to_date(unit, unit_hash, recorded)
            if fresh and layout.view_done(cam.cam_id, f, formats):
                resumed += by_journal
                continue
            todo[unit] = unit_hash
            missing += recorded
            needed += cam.width * cam.height * bytes_per_pixel
            # files rewritten in place free their old space
            needed -= sum(p.stat().st_size for p in layout.view_files(cam.cam_id, f, formats) if p.is_file())
    expected = {p for c in cameras for f in frames for p in layout.view_files(c.cam_id, f, formats)}
    stale_files = [p for kind in VIEW_KINDS.values() if kind.stage == stage
                   for p in layout.existing_view_files(kind.name) if p not in expected]
    reasons = []
    if not global_reason:
        if changed_frames:
            reasons.append(f"{len(changed_frames)} frame(s) new or changed")
        if changed_cams:
            reasons.append(f"{len(changed_cams)} camera(s) new or changed")
        if missing:
            reasons.append(f"{missing} view(s) missing")
        if stale_files:
            reasons.append(f"{len(stale_files)} file(s) of views no longer wanted")
    total = len(frames) * len(cameras)
    reason = None
    if global_reason or reasons or previous.interrupted:
        reason = join_reasons(global_reason, "; ".join(reasons), previous.interruption_note(resumed, total))
    return ViewPlan(reason, todo, resumed, total, max(needed, 0.0), stale_files)


def collect_tasks(pool, jobs: list, finished: Callable[[Any], None]) -> None:
    """Hand each finished task's result of `jobs` (futures of `pool`) to `finished`, as they
    complete. On a stop or a failure, the tasks already running finish (their files stay whole),
    the others are cancelled, and the results of every task that finished are still handed on (so
    they go into the journal) before the exception goes up."""
    from concurrent.futures import as_completed

    from ..core.errors import interrupts_ignored

    reported = set()
    try:
        for job in as_completed(jobs):
            reported.add(job)
            finished(job.result())
    except BaseException:
        with interrupts_ignored():
            pool.shutdown(wait=True, cancel_futures=True)
            for job in jobs:
                if job not in reported and job.done() and not job.cancelled() and job.exception() is None:
                    finished(job.result())
        raise


def join_reasons(*reasons: str | None) -> str | None:
    parts = [r for r in reasons if r]
    return "; ".join(parts) if parts else None


class Stage:
    """One recording stage: its registry entry (name, options, the stages it reads from), and the
    steps the driver calls. Subclasses implement `plan`, `new_result` and `write` (`prepare`,
    `check` and `record_result` when they need them); a stage's module is named after its entry."""

    @property
    def entry(self) -> StageEntry:
        """Its registry entry: the one named after its module."""
        return registry.by_name(type(self).__module__.rsplit(".", 1)[-1])

    @property
    def name(self) -> str:
        """Its manifest record and journal."""
        return self.entry.name

    def check(self, sel: SequenceSelector, opts) -> None:
        """Clear errors for missing prerequisites, before any lock or journal: by default, that no
        stage it reads from was stopped before it finished."""
        require_finished(sel.layout, self.entry.needs, self.name)

    def plan(self, sel: SequenceSelector, opts, previous: Previous) -> Plan:
        raise NotImplementedError

    def new_result(self, sel: SequenceSelector, opts, plan: Plan) -> StageResult:
        """The stage's result (a StageResult with the stage's own counts), before any work."""
        raise NotImplementedError

    def prepare(self, sel: SequenceSelector, opts, plan: Plan, result: StageResult) -> Any:
        """Compute what needs no writing; may refuse with InputError (nothing written yet)."""
        return None

    def write(self, sel: SequenceSelector, opts, plan: Plan, work: Any, result: StageResult,
              done: Callable[[Iterable[str]], None], lock, progress: bool) -> None:
        """Write the outputs; call `done(units)` as units finish (their files complete)."""
        raise NotImplementedError

    def record_result(self, plan: Plan, result: StageResult) -> dict:
        """The counts stored in the record's "result"."""
        return {}


def run_stage(stage: Stage, sel: SequenceSelector, opts, progress: bool = True) -> StageResult:
    """Run `stage` on one sequence if anything is stale (see the module docstring)."""
    start, started = time.perf_counter(), time.time()
    layout = sel.layout
    stage.check(sel, opts)
    plan = stage.plan(sel, opts, Previous.read(layout, stage.name))
    result = stage.new_result(sel, opts, plan)
    if plan.reason is None:
        result.up_to_date = True
        result.seconds = time.perf_counter() - start
        return result
    with sequence_lock(layout.root) as lock:
        plan = stage.plan(sel, opts, Previous.read(layout, stage.name))  # again: another run may have done it
        result = stage.new_result(sel, opts, plan)
        if plan.reason is None:
            result.up_to_date = True
            result.seconds = time.perf_counter() - start
            return result
        result.reason, result.resumed = plan.reason, plan.resumed
        log.info("%s: running (%s)", stage.name, plan.reason)
        check_free_space(layout.root, plan.needed_bytes, plan.needed_for or f"{len(plan.todo)} unit(s) of {stage.name}")
        work = stage.prepare(sel, opts, plan, result)
        journal = Journal(layout, stage.name)
        journal.open()
        try:
            journal.add("todo", plan.todo.items())
            stage.write(sel, opts, plan, work, result,
                        lambda units: journal.add("done", ((u, plan.todo[u]) for u in units)), lock, progress)
            Manifest.read(layout.root).record(stage.name, {
                **stage_record(plan.recipe, plan.inputs, stage.record_result(plan, result), started), **plan.state})
            journal.finish()
        finally:
            journal.close()
    result.seconds = time.perf_counter() - start
    return result
