"""Merge processed sequences into one sequence folder made of relative symbolic links.

<root>/merge/<new_name>/ holds links to every image, mask, depth map, params, vertices and skinning
grid of the sources (the shared lbs files and tpose.npy from the first one), and small files of its
own: annots.npy (cameras of the first sequence, images of all), frames.txt, cams.txt, seqs.txt.
It loads exactly like a single processed sequence. Nothing is written when a check fails.

Frames keep their InterHand2.6M ids (they must not collide). The outputs of an optional stage
(refine_masks: mask_cihp/ and mask_quality.csv, whose rows of all sources are joined) are merged
only when every source has them, finished, with the same options; otherwise they are left out
whole, with a note, and the merged manifest does not record that stage. Part labels (render_mesh
--parts: parts/ and parts.json) likewise: merged when every source has them, else left out with a
note, and the merged manifest then records render_mesh without them.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import InputError
from ..core.fileio import folder_swap, relative_symlink, write_bytes, write_text
from ..core.layout import LBS_SHARED_FILES, VIEW_KINDS, SequenceLayout, merge_dir
from ..core.manifest import Manifest
from ..core import registry
from ..core.processed import recorded_hands, unfinished
from ..core.constants import HANDS, SPLITS

_CAPTURE_RE = re.compile(r"^Capture(\d+)$")
CAMERA_TOLERANCE = 1e-6
QUALITY_HEADER = ("frame", "camera", "hand", "mano_pixels", "refined_pixels", "iou_with_mano", "status")


@dataclass
class Source:
    split: str
    capture: int
    seq: str
    layout: SequenceLayout

    @property
    def name(self) -> str:
        return f"{self.split}/Capture{self.capture}/{self.seq}"


def parse_entry(entry: str, split: str, capture: int) -> tuple[str, int, str]:
    """'seq', 'Capture<N>/seq' or 'split/Capture<N>/seq' -> (split, capture, seq)."""
    parts = [p for p in entry.strip().split("/") if p]
    if len(parts) == 1:
        return split, capture, parts[0]
    if len(parts) in (2, 3):
        match = _CAPTURE_RE.match(parts[-2])
        if match and (len(parts) == 2 or parts[0] in SPLITS):
            return (parts[0] if len(parts) == 3 else split), int(match.group(1)), parts[-1]
    raise InputError(f"cannot read sequence entry {entry!r}: use seq, Capture<N>/seq or <split>/Capture<N>/seq")


def _hands(layout: SequenceLayout) -> list[str]:
    return list(recorded_hands(layout))


def check_sources(sources: list[Source]) -> None:
    """Every refusal: unprocessed source, different cameras, hands or parameters, colliding frames."""
    if len(sources) < 2:
        raise InputError("merging needs at least two sequences")
    for s in sources:
        if not s.layout.annots.is_file():
            raise InputError(f"{s.name} has not been processed ({s.layout.annots} is missing); run process.sh first")
    first = sources[0]
    cams = first.layout.read_cams()
    cameras = first.layout.read_cameras()
    hands = _hands(first.layout)
    seen: dict[int, str] = {}
    for s in sources:
        other = s.layout.read_cams()
        if other != cams:
            diff = sorted(set(other) ^ set(cams), key=int)
            raise InputError(f"camera sets differ between {first.name} and {s.name} (e.g. cam{diff[0] if diff else '?'}); "
                             "merge sequences processed with the same cameras")
        theirs = s.layout.read_cameras()
        for name in ("K", "R", "T"):
            delta = np.abs(getattr(theirs, name) - getattr(cameras, name)).max(axis=tuple(range(1, getattr(cameras, name).ndim)))
            if (delta > CAMERA_TOLERANCE * np.maximum(1.0, np.abs(getattr(cameras, name)).max())).any():
                cam = cameras.ids[int(np.argmax(delta))]
                raise InputError(f"camera parameters differ between {first.name} and {s.name} ({name} of cam{cam}); "
                                 "sequences from different captures cannot be merged")
        if _hands(s.layout) != hands:
            raise InputError(f"hands differ: {first.name} has {hands}, {s.name} has {_hands(s.layout)}")
        for stage in (registry.PREPARE_BLEND_WEIGHTS.name, registry.RENDER_MESH.name):
            ours, theirs = _options(first.layout, stage), _options(s.layout, stage)
            if ours != theirs:
                raise InputError(f"{stage} options differ between {first.name} ({ours}) and {s.name} ({theirs}); "
                                 "merge sequences processed with the same options")
        for frame in s.layout.read_frames():
            if frame in seen:
                raise InputError(f"frame ids collide: frame {frame} is in {seen[frame]} and {s.name}")
            seen[frame] = s.name


def _options(layout: SequenceLayout, stage: str) -> dict | None:
    """A stage's recorded options (None when the sequence has no readable record of it)."""
    recipe = Manifest.read(layout.root).recipe(stage)
    return recipe.get("options") if isinstance(recipe, dict) else None


def _link_if_present(target: Path, link: Path) -> None:
    if target.is_file():
        relative_symlink(target, link)


def _quality_rows(layout: SequenceLayout) -> list[list[str]] | None:
    """The rows of a sequence's mask_quality.csv (None: missing, unreadable or another header)."""
    try:
        lines = list(csv.reader(io.StringIO(layout.mask_quality.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not lines or tuple(lines[0]) != QUALITY_HEADER:
        return None
    return lines[1:]


def _joined_quality_rows(tables: list[list[list[str]]]) -> list[list[str]]:
    """The rows of the sources' tables, in their order, with one row per view and hand of the merged
    sequence: a hand that a source does not have (no MANO in any of its frames) is absent from each
    of its views, so those views get a no_hand row for it."""
    hands = {row[2] for table in tables for row in table if len(row) == len(QUALITY_HEADER)}
    out = []
    for table in tables:
        views: dict[tuple[str, str], dict[str, list[str]]] = {}
        for row in table:
            if len(row) == len(QUALITY_HEADER):
                views.setdefault((row[0], row[1]), {})[row[2]] = row
        for (frame, cam), by_hand in views.items():
            out += [by_hand.get(h) or [frame, cam, h, "0", "", "", "no_hand"] for h in HANDS if h in hands]
    return out


def _optional_missing(source: Source, entry: registry.StageEntry, first_recipe: dict | None) -> str | None:
    """Why a source lacks the merged outputs of an optional stage (None: it has them, like the first)."""
    layout = source.layout
    if unfinished(layout, (entry.name,)):
        return f"{source.name}: {entry.name} was stopped before it finished"
    recipe = Manifest.read(layout.root).recipe(entry.name)
    if not isinstance(recipe, dict):
        return f"{source.name} has no {entry.name} record"
    theirs = {k: recipe.get(k) for k in ("options", "method")}
    if first_recipe is not None and theirs != first_recipe:
        return f"{entry.name} options differ between the sources ({source.name}: {theirs.get('options')})"
    kinds = [k for k in VIEW_KINDS.values() if k.stage == entry.name and k.merged]
    for frame in layout.read_frames():
        for cam in layout.read_cams():
            for kind in kinds:
                if not any(layout.view(kind.name, cam, frame, fmt).is_file() for fmt in kind.formats):
                    return f"{source.name} lacks {layout.view(kind.name, cam, frame, next(iter(kind.formats)))}"
    if entry is registry.REFINE_MASKS and _quality_rows(layout) is None:
        return f"{source.name} has no readable {layout.mask_quality.name}"
    return None


def optional_stages(sources: list[Source]) -> tuple[list[registry.StageEntry], list[str]]:
    """The optional stages whose outputs every source has (merged), and a note per stage that only
    some sources have (left out)."""
    merged, notes = [], []
    for entry in registry.STAGES:
        if not entry.optional:
            continue
        recipe = Manifest.read(sources[0].layout.root).recipe(entry.name)
        first_recipe = {k: recipe.get(k) for k in ("options", "method")} if isinstance(recipe, dict) else None
        why = [w for w in (_optional_missing(s, entry, first_recipe) for s in sources) if w]
        if not why:
            merged.append(entry)
        elif len(why) < len(sources):  # some have them: say why none are merged
            kinds = [f"{k.name}/" for k in VIEW_KINDS.values() if k.stage == entry.name and k.merged]
            extra = [sources[0].layout.mask_quality.name] if entry is registry.REFINE_MASKS else []
            notes.append(f"{' and '.join(kinds + extra)} left out of the merge: {why[0]}"
                         + (f" (and {len(why) - 1} more)" if len(why) > 1 else "")
                         + f"; run {entry.command} on every source to merge them")
    return merged, notes


def _has_parts(layout: SequenceLayout) -> bool:
    """Whether render_mesh wrote part labels here (recorded, with their table)."""
    record = Manifest.read(layout.root).stage(registry.RENDER_MESH.name) or {}
    return bool((record.get("inputs") or {}).get("parts")) and layout.parts_json.is_file()


def _parts_note(sources: list[Source]) -> tuple[bool, str | None]:
    """(whether parts/ is merged, the note when some sources have part labels and others not)."""
    lacking = [s.name for s in sources if not _has_parts(s.layout)]
    if not lacking:
        return True, None
    if len(lacking) == len(sources):
        return False, None
    return False, (f"parts/ and parts.json left out of the merge: {lacking[0]} has no part labels"
                   + (f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else "")
                   + "; run render-mesh --parts on every source to merge them")


def _merged_manifest(first: SequenceLayout, out: SequenceLayout, left_out: list[str], parts: bool = True) -> None:
    """The first source's manifest (what the sources were processed with: they agree, for
    check_seq), without the records of optional stages left out of the merge, and without part
    labels where they are left out."""
    if not first.manifest.is_file():
        return
    manifest = Manifest.read(first.root)
    render = registry.RENDER_MESH.name
    drop_parts = not parts and bool(((manifest.stage(render) or {}).get("inputs") or {}).get("parts"))
    if manifest.problem or not (drop_parts or any(name in manifest.stages for name in left_out)):
        write_bytes(out.manifest, first.manifest.read_bytes())
        return
    stages = {name: record for name, record in manifest.stages.items() if name not in left_out}
    if drop_parts:
        stages[render] = {**stages[render], "inputs": {**(stages[render].get("inputs") or {}), "parts": False}}
    kept = Manifest(out.manifest, stages)
    name = next(iter(stages), None)
    if name is not None:
        kept.record(name, stages[name])  # writes the whole manifest (checksum included)


def build_merge(sources: list[Source], dest: Path, note: Callable[[str], None] = print) -> None:
    """Write the merged sequence into `dest` (a new, empty folder); `note` gets what was left out."""
    first = sources[0].layout
    out = SequenceLayout(dest)
    cams = first.read_cams()
    hands = _hands(first)
    optional, notes = optional_stages(sources)
    parts, parts_note = _parts_note(sources)
    for line in notes + ([parts_note] if parts_note else []):
        note(line)
    merged_stages = {e.name for e in registry.STAGES if not e.optional} | {e.name for e in optional}
    kinds = [k for k in VIEW_KINDS.values() if k.merged and k.stage in merged_stages and (parts or k.name != "parts")]
    ims: dict[int, list[str]] = {}
    for s in sources:
        src = s.layout
        annots = src.read_annots()
        frames = src.read_frames()
        for frame, entry in zip(frames, annots["ims"]):
            expected = [src.image_key(c, frame) for c in cams]
            if not isinstance(entry, dict) or entry.get("ims") != expected:
                raise InputError(f"{src.annots}: the image list of frame {frame} does not match cams.txt "
                                 "(run check_seq.py on it)")
            ims[frame] = expected
        for frame in frames:
            for cam in cams:
                relative_symlink(src.image(cam, frame), out.image(cam, frame))
                for kind in kinds:
                    for fmt in kind.formats:
                        _link_if_present(src.view(kind.name, cam, frame, fmt), out.view(kind.name, cam, frame, fmt))
            for hand in hands:
                relative_symlink(src.params(hand, frame), out.params(hand, frame))
                relative_symlink(src.vertices(hand, frame), out.vertices(hand, frame))
                _link_if_present(src.bweights(hand, frame), out.bweights(hand, frame))
                _link_if_present(src.bs(hand, frame), out.bs(hand, frame))
    if parts:
        relative_symlink(first.parts_json, out.parts_json)
    for hand in hands:
        _link_if_present(first.tpose_params(hand), out.tpose_params(hand))
        for name in LBS_SHARED_FILES:
            _link_if_present(first.lbs_file(hand, name), out.lbs_file(hand, name))
    frames = sorted(ims)
    annots = first.read_annots()
    out.write_annots_dict({"cams": annots["cams"], "ims": [{"ims": ims[f]} for f in frames]})
    out.write_ids(out.frames_txt, frames)
    out.write_ids(out.cams_txt, cams)
    out.write_ids(out.seqs_txt, [s.name for s in sources])
    if registry.REFINE_MASKS in optional:  # the rows of every source; frames keep their ids
        rows = _joined_quality_rows([_quality_rows(s.layout) for s in sources])
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([list(QUALITY_HEADER), *rows])
        write_text(out.mask_quality, buf.getvalue())
    _merged_manifest(first, out, [e.name for e in registry.STAGES if e.name not in merged_stages], parts)


def merge_sequences(basedir: Path, entries: list[str], new_name: str, split: str = "train", capture: int = 0,
                    out_root: Path | None = None, force: bool = False, note: Callable[[str], None] = print) -> Path:
    """Merge `entries` into <out_root or basedir>/merge/<new_name> -> that folder; `note` gets what
    was left out (outputs of an optional stage that only some sources have)."""
    sources = []
    for entry in entries:
        sp, cap, seq = parse_entry(entry, split, capture)
        sources.append(Source(sp, cap, seq, SequenceLayout.for_sequence(basedir, sp, cap, seq, out_root)))
    dest = merge_dir(out_root or basedir, new_name)
    if new_name.startswith("."):
        raise InputError(f"--new-name {new_name!r} must not start with a dot")
    if dest.exists() and not force:
        raise InputError(f"{dest} exists; pass --force to replace it")
    check_sources(sources)
    with folder_swap(dest) as tmp:  # --force: the old merge (links only) is replaced whole
        build_merge(sources, tmp, note)
    return dest


def main(args) -> int:
    """merge-seq / merge_seq.py"""
    dest = merge_sequences(args.basedir, args.seq, args.new_name, split=args.split, capture=args.capture,
                           out_root=args.out_root, force=args.force, note=lambda line: print(f"note: {line}"))
    layout = SequenceLayout(dest)
    print(f"{dest}: {len(args.seq)} sequences, {len(layout.read_frames())} frames, {len(layout.read_cams())} cameras")
    return 0
