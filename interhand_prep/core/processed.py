"""What the stages of a sequence folder have processed, as later stages and commands ask it: the
hands get_annots processed, the MANO files a run on some hands reads, and whether a stage's last
run finished. Read from the manifest (manifest.py) and the stages' journals (stages/base.py)."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .layout import SequenceLayout
from .manifest import Manifest
from .mano import model_filename
from .selection import SequenceSelector

ANNOTS_STAGE = "get_annots"
# the stages that record themselves in the manifest, in pipeline order
RECORDING_STAGES = (ANNOTS_STAGE, "prepare_blend_weights", "render_mesh")


def recorded_hands(layout: SequenceLayout, manifest: Manifest | None = None) -> tuple[str, ...]:
    """The hands get_annots processed: from its record, else the params folders present."""
    record = (manifest or Manifest.read(layout.root)).stage(ANNOTS_STAGE)
    result = record.get("result") if isinstance(record, dict) else None
    if isinstance(result, dict) and isinstance(result.get("hands"), list):
        return tuple(result["hands"])
    return tuple(layout.hands_present())


def processed_hands(sel: SequenceSelector) -> tuple[str, ...]:
    """The hands a later stage works on: those get_annots processed for --hand-type auto; else the
    requested ones, which must be among them."""
    layout = sel.layout
    done = recorded_hands(layout)
    if sel.fixed_hands is None:
        if not done:
            raise InputError(f"{layout.root}: no processed hand (run get_annots.py first)")
        return done
    lacking = [h for h in sel.fixed_hands if h not in done]
    if lacking and done:
        raise InputError(f"{layout.root}: get_annots processed the {' and '.join(done)} hand only, not the "
                         f"{' and '.join(lacking)}; rerun it with --hand-type {sel.hand_type}")
    return sel.fixed_hands


def mano_files(mano_dir: str | Path, hands: tuple[str, ...]) -> list[Path]:
    """The model files a run on `hands` reads (the left model is checked against the right one)."""
    names = {model_filename(h) for h in hands} | ({model_filename("right")} if "left" in hands else set())
    return [Path(mano_dir) / n for n in sorted(names, reverse=True)]


def unfinished(layout: SequenceLayout, stages: tuple[str, ...]) -> list[str]:
    """The stages among `stages` whose last run in the folder stopped before it finished (their
    journal is still there)."""
    return [name for name in stages if layout.progress(name).is_file()]


def require_finished(layout: SequenceLayout, stages: tuple[str, ...], by: str) -> None:
    """A one-line error when a stage that `by` reads from was stopped before it finished."""
    stopped = unfinished(layout, stages)
    if stopped:
        raise InputError(f"{layout.root}: {stopped[0]} was stopped before it finished here; rerun it before {by}")
