"""The export stage: a processed sequence in the layout another trainer reads.

nerfstudio: transforms.json (cameras, per-view images, masks and depth maps); EasyMocap (and
EasyVolcap): intri.yml, extri.yml, images/<id>/<frame>.jpg, masks/<id>/<frame>.png; COLMAP: a
sparse model per frame (--frames chooses them) with the frame's images and masks, its points the
MANO vertices coloured from the views that see them, as 3D Gaussian splatting trainers read it.
The camera conventions of each are in core/trainer_formats.py and core/colmap.py, the files in
core/layout.py (ExportLayout).

Images and masks are relative symbolic links into the sequence folder (or copies with --copy); the
sources are never rewritten. nerfstudio's depth maps are written anew, in millimetres: nerfstudio
multiplies what it loads by its parser option depth_unit_scale_factor, 1e-3 by default, which
transforms.json cannot set. The export is built under a temporary name and renamed into place, so
an earlier export is replaced whole, never left half old and half new; a rerun with the same
options on an unchanged sequence does nothing.

The masks (nerfstudio's mask_path, EasyMocap's masks/) are the MANO renders (mask/) or the masks
refined against the images (mask_cihp/, refine_masks), as --masks says: auto takes the refined ones
where refine_masks has finished on the sequence and is not out of date (the masks, cameras and
images it refined are the sequence's now, and its method is this version's), else the MANO ones;
refined refuses without them; mano never reads them. Where refine_masks was stopped before it
finished, auto and refined refuse. The summary says which masks were exported.

Part labels (render_mesh --parts) travel beside the masks where the sequence has them:
parts/<id>/<frame>.png and parts.json in both formats, and each nerfstudio frame's "parts_path"
(a key of ours; nerfstudio reads the keys it knows).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.cameras import CameraSet
from ..core.dataset import image_size
from ..core.errors import InputError
from ..core.fileio import folder_swap, relative_symlink, swap_temporary_pattern, write_bytes, write_text
from ..core.constants import SPLITS
from ..core.layout import MASK_LABELS, VIEW_KINDS, ExportLayout, SequenceLayout, decode_depth, decode_mask, encode_mask, render_formats
from ..core.locking import sequence_lock
from ..core import colmap, handavatar, registry
from ..core.processed import outdated_refinement, outdated_render, recorded_hands, require_finished, unfinished
from ..core.manifest import Manifest, digest
from ..core.options import ExportOptions, from_args
from ..core.selection import SequenceSelector
from ..core.trainer_formats import MM_PER_M, easymocap_extri, easymocap_intri, nerfstudio_transforms, transforms_text

log = logging.getLogger(__name__)
STAGE = "export"
NEEDED_STAGES = (registry.GET_ANNOTS.name, registry.RENDER_MESH.name)
# part of every export's recipe: a change of what an export writes makes earlier exports stale
EXPORT_FORMAT_VERSION = 2  # 2: part labels, colmap, handavatar (annotated boxes)
# the parts of a stage record that say when, not what: left out of the source digest
_WHEN = ("started", "finished", "seconds")
# --masks: the view kind whose files the export's masks are (auto: refined where usable, else mano)
MASK_KINDS = {"mano": "mask", "refined": "mask_cihp"}
MASK_NAMES = {"mask": "MANO renders (mask/)", "mask_cihp": "refined against the images (mask_cihp/)"}


@dataclass
class SequenceViews:
    """What a finished sequence offers an export: its cameras (in cams.txt order), frames, image
    sizes, the depth format it was rendered with, and a digest of the stage records it came from."""

    layout: SequenceLayout
    cameras: CameraSet
    frames: list[int]
    sizes: list[tuple[int, int]]
    depth_format: str
    source_digest: str
    mask_kind: str = "mask"         # the view kind the export's masks come from (MASK_KINDS)
    masks_note: str | None = None   # why --masks auto did not take the refined masks the sequence has
    parts: bool = False             # render_mesh wrote part labels: they are exported too

    @property
    def views(self) -> int:
        return len(self.cameras.ids) * len(self.frames)


@dataclass
class ExportResult:
    dest: Path
    format: str
    cameras: int = 0
    frames: int = 0
    copied: bool = False
    depth: bool = False
    up_to_date: bool = False
    seconds: float = 0.0
    masks: str = "mask"               # the view kind the masks came from
    masks_note: str | None = None     # why --masks auto did not take the refined masks, where it had some
    parts: bool = False               # part labels exported too

    def summary(self) -> str:
        used = f"masks: {MASK_NAMES[self.masks]}" + (f"; {self.masks_note}" if self.masks_note else "")
        if self.up_to_date:
            return (f"{self.dest}: {self.format} export is up to date ({self.cameras} cameras x {self.frames} frames, "
                    f"{used}); nothing to do")
        files = ("images, masks and part labels " if self.parts else "images and masks ") + (
            "copied" if self.copied else "linked")
        if self.depth:
            files += ", depth maps in millimetres (nerfstudio's default depth_unit_scale_factor 1e-3 reads them)"
        return (f"{self.dest}: {self.format} export of {self.cameras * self.frames} views ({self.cameras} cameras x "
                f"{self.frames} frames), {files}, in {self.seconds:.1f} s\n  {used}")


def _choose_masks(layout: SequenceLayout, manifest: Manifest, cams: list[str], frames: list[int],
                  masks: str) -> tuple[str, str | None]:
    """--masks -> (the view kind to export, why auto fell back to the MANO masks where the sequence
    has refined ones); one-line InputError where the choice cannot be honoured."""
    stage = registry.REFINE_MASKS.name
    if masks == "mano":
        return MASK_KINDS["mano"], None
    if unfinished(layout, (stage,)):
        raise InputError(f"{layout.root}: {stage} was stopped before it finished here; rerun it before export, "
                         "or export the MANO masks with --masks mano")
    problem = outdated_refinement(layout, cams, frames, manifest)
    if problem is None:
        return MASK_KINDS["refined"], None
    if masks == "refined":
        raise InputError(f"{layout.root}: no refined masks to export ({problem}); run refine_masks.py on it, "
                         "or use --masks mano")
    return MASK_KINDS["mano"], (f"the refined masks are not used ({problem})"
                                if isinstance(manifest.stage(stage), dict) else None)


def finished_sequence(layout: SequenceLayout, masks: str = "mano") -> SequenceViews:
    """The sequence as get_annots and render_mesh (and for `masks` other than mano, refine_masks)
    left it; one-line InputError naming what is missing. The masks chosen are in `mask_kind`, and
    why auto did not take refined ones where there are some in `masks_note`."""
    root = layout.root
    if not root.is_dir():
        import difflib

        siblings = sorted(p.name for p in root.parent.iterdir() if p.is_dir()) if root.parent.is_dir() else []
        close = difflib.get_close_matches(root.name, siblings, n=3)
        raise InputError(f"{root}: no such sequence folder" + (f" (closest: {', '.join(close)})" if close else
                         "; check --capture, --seq, --split, --basedir and --out-root"))
    if not layout.annots.is_file():
        raise InputError(f"{root}: not processed ({layout.annots.name} is missing); run get_annots.py and "
                         "render_mesh.py (or process.sh) on it first")
    manifest = Manifest.read(root)
    if manifest.problem:
        raise InputError(f"{manifest.path}: {manifest.problem}; run process.sh on the sequence so its stages are recorded")
    require_finished(layout, NEEDED_STAGES, "export")
    for stage in NEEDED_STAGES:
        if not isinstance(manifest.stage(stage), dict):
            raise InputError(f"{root}: {stage} has not finished here (no record in {manifest.path.name}); "
                             f"run {stage}.py on it first")
    cams, frames = layout.read_cams(), layout.read_frames()
    cameras = layout.read_cameras()
    if cameras.ids != cams:
        raise InputError(f"{layout.annots}: its cameras differ from cams.txt; rerun get_annots.py")
    render = manifest.stage(registry.RENDER_MESH.name)
    rendered_frames, rendered_cams = set(render.get("frames") or {}), set(render.get("cameras") or {})
    frames_left = [f for f in frames if str(f) not in rendered_frames]
    cams_left = [c for c in cams if c not in rendered_cams]
    if frames_left or cams_left:
        what = (f"{len(frames_left)} frame(s) (e.g. {frames_left[0]})" if frames_left else
                f"{len(cams_left)} camera(s) (e.g. cam{cams_left[0]})")
        raise InputError(f"{root}: render_mesh has not rendered {what} of frames.txt and cams.txt; run render_mesh.py on it")
    depth_format = ((render.get("recipe") or {}).get("options") or {}).get("depth_format", "npy")
    parts = bool((render.get("inputs") or {}).get("parts"))
    if parts and not layout.parts_json.is_file():
        raise InputError(f"{layout.parts_json}: not found; rerun render_mesh.py --parts on the sequence")
    carried = {kind: fmt for kind, fmt in render_formats(depth_format, parts).items() if VIEW_KINDS[kind].exported}
    missing = [p for cam in cams for frame in frames
               for p in [layout.image(cam, frame), *layout.view_files(cam, frame, carried)] if not p.is_file()]
    if missing:
        kinds = ", ".join(["image", *carried][:-1]) + f" and {[*carried][-1]} files"
        raise InputError(f"{missing[0]}: not found; {len(missing)} of the sequence's {kinds} "
                         f"{'is' if len(missing) == 1 else 'are'} missing; rerun process.sh on it")
    sizes = [image_size(layout.image(cam, frames[0])) for cam in cams]
    processed = recorded_hands(layout, manifest)
    outdated = outdated_render(layout, sizes, processed)
    if outdated:
        raise InputError(f"{root}: its masks and depth maps are out of date ({outdated}); run render_mesh.py on it")
    mask_kind, note = _choose_masks(layout, manifest, cams, frames, masks)
    stages = NEEDED_STAGES + ((registry.REFINE_MASKS.name,) if mask_kind == MASK_KINDS["refined"] else ())
    records = {s: {k: v for k, v in manifest.stage(s).items() if k not in _WHEN} for s in stages}
    source = digest(json.dumps(records, sort_keys=True).encode(), json.dumps(sizes).encode())
    return SequenceViews(layout, cameras, frames, sizes, depth_format, source, mask_kind, note, parts)


def _recipe(source: SequenceViews, options: ExportOptions) -> dict:
    return {"version": EXPORT_FORMAT_VERSION, "format": options.format, "copy": options.copy,
            "masks": source.mask_kind, "parts": source.parts, "frames": source.frames,
            "source": str(source.layout.root), "source_digest": source.source_digest}


def expected_files(source: SequenceViews, out: ExportLayout, export_format: str) -> list[Path]:
    """Every file an export of `source` in `export_format` consists of (export.json aside)."""
    if export_format == "handavatar":  # the views it holds depend on the masks: their files are in the anno
        split, capture, name = _sequence_name(source.layout)
        return [out.handavatar_anno(h, split, capture, name) for h in recorded_hands(source.layout)
                if source.layout.params_dir(h).is_dir()]
    if export_format == "colmap":
        return [path for frame in source.frames
                for path in [out.colmap_model(frame, n) for n in ("cameras", "images", "points3D")]
                + [p for cam in source.cameras.ids for p in (out.colmap_image(cam, frame), out.colmap_mask(cam, frame))]]
    files = [out.transforms_json] if export_format == "nerfstudio" else [out.intri_yml, out.extri_yml]
    with_depth = export_format == "nerfstudio" and source.depth_format != "none"
    for cam in source.cameras.ids:
        for frame in source.frames:
            files += [out.image(cam, frame), out.mask(cam, frame)] + ([out.depth(cam, frame)] if with_depth else [])
            files += [out.parts(cam, frame)] if source.parts else []
    return files + ([out.parts_json] if source.parts else [])


def _read_marker(dest: Path) -> dict | None:
    """The export.json of an earlier export at `dest` (None when there is none or it is unreadable)."""
    try:
        marker = json.loads(ExportLayout(dest).marker.read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("tool") == "interhand-prep export" else None


def _check_destination(dest: Path) -> dict | None:
    """Refuse to replace anything but an earlier export (or an empty folder); -> its marker."""
    if not (dest.exists() or dest.is_symlink()):
        return None
    if not dest.is_dir() or dest.is_symlink():
        raise InputError(f"{dest}: exists and is not a folder; choose another --out")
    marker = _read_marker(dest)
    if marker is None and any(dest.iterdir()):
        raise InputError(f"{dest}: exists, is not empty and holds no export of this tool ({ExportLayout.MARKER}); "
                         "choose another --out or remove it")
    return marker


def _place(source: Path, target: Path, copy: bool) -> None:
    if copy:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)  # a new file: the umask's mode
    else:
        relative_symlink(source, target)


def _place_parts(source: SequenceViews, out: ExportLayout, cam: str, frame: int, copy: bool) -> None:
    if source.parts:
        _place(source.layout.parts(cam, frame), out.parts(cam, frame), copy)


def _nerfstudio(source: SequenceViews, out: ExportLayout, copy: bool, tick) -> None:
    seq = source.layout
    with_depth = source.depth_format != "none"
    for cam in source.cameras.ids:
        for frame in source.frames:
            _place(seq.image(cam, frame), out.image(cam, frame), copy)
            _place(seq.view(source.mask_kind, cam, frame, "png"), out.mask(cam, frame), copy)
            _place_parts(source, out, cam, frame, copy)
            if with_depth:
                depth_mm = decode_depth(seq.depth(cam, frame, source.depth_format))[..., 0] * np.float32(MM_PER_M)
                out.depth(cam, frame).parent.mkdir(parents=True, exist_ok=True)
                np.save(out.depth(cam, frame), depth_mm.astype(np.float32))
            tick()

    def files(cam: str, frame: int) -> dict[str, str]:
        paths = {"file_path": out.relative(out.image(cam, frame)), "mask_path": out.relative(out.mask(cam, frame))}
        if with_depth:
            paths["depth_file_path"] = out.relative(out.depth(cam, frame))
        if source.parts:
            paths["parts_path"] = out.relative(out.parts(cam, frame))
        return paths

    transforms = nerfstudio_transforms(source.cameras, source.sizes, source.frames, files)
    write_text(out.transforms_json, transforms_text(transforms))


def _easymocap(source: SequenceViews, out: ExportLayout, copy: bool, tick) -> None:
    seq = source.layout
    for cam in source.cameras.ids:
        for frame in source.frames:
            _place(seq.image(cam, frame), out.image(cam, frame), copy)
            _place(seq.view(source.mask_kind, cam, frame, "png"), out.mask(cam, frame), copy)
            _place_parts(source, out, cam, frame, copy)
            tick()
    write_text(out.intri_yml, easymocap_intri(source.cameras, source.sizes))
    write_text(out.extri_yml, easymocap_extri(source.cameras))


def _colmap(source: SequenceViews, out: ExportLayout, copy: bool, tick) -> None:
    """A COLMAP model per frame: the cameras, the views, and the MANO vertices of every hand drawn
    (vertices/ of the processed hands) as 3D points, each observed by the views whose depth map
    shows it (within 2 mm) and coloured with the median of its pixels there."""
    from PIL import Image

    seq = source.layout
    cams = source.cameras.ids
    hands = [h for h in recorded_hands(seq) if seq.vertices_dir(h).is_dir()]
    cameras_bin = colmap.cameras_bin(source.cameras, source.sizes)
    for frame in source.frames:
        vertices_m = np.concatenate([seq.read_vertices(seq.vertices(h, frame)) for h in hands
                                     if seq.vertices(h, frame).is_file()] or [np.zeros((0, 3))]).astype(np.float64)
        depths, images = [], []
        for cam in cams:
            _place(seq.image(cam, frame), out.colmap_image(cam, frame), copy)
            _place(seq.view(source.mask_kind, cam, frame, "png"), out.colmap_mask(cam, frame), copy)
            depths.append(decode_depth(seq.depth(cam, frame, source.depth_format))[..., 0])
            try:
                with Image.open(seq.image(cam, frame)) as im:
                    images.append(np.asarray(im.convert("RGB")))
            except (OSError, ValueError) as exc:
                raise InputError(f"{seq.image(cam, frame)}: unreadable image ({exc})") from None
            tick()
        pixels, visible = colmap.visible_vertices(vertices_m * MM_PER_M, source.cameras, depths)
        colours = colmap.vertex_colours(pixels, visible, images)
        seen = [np.flatnonzero(visible[c]) for c in range(len(cams))]
        tracks = [[] for _ in range(len(vertices_m))]
        for c, index in enumerate(seen):
            for k, v in enumerate(index):
                tracks[v].append((c + 1, k))
        names = [out.colmap_image_name(cam, frame) for cam in cams]
        write_bytes(out.colmap_model(frame, "cameras"), cameras_bin)
        write_bytes(out.colmap_model(frame, "images"),
                    colmap.images_bin(source.cameras, names, [pixels[c, s] for c, s in enumerate(seen)],
                                      [s + 1 for s in seen]))
        write_bytes(out.colmap_model(frame, "points3D"), colmap.points3d_bin(vertices_m, colours, tracks))


# handavatar: a view is exported when its hand shows on this many pixels of the mask (their patch
# sampler draws from the hand's pixels and fails on none) and its square box meets the image
HANDAVATAR_MIN_MASK_PIXELS = 100


def _sequence_name(layout: SequenceLayout) -> tuple[str, int, str]:
    """(split, capture, sequence) of a processed sequence folder, <split>/Capture<N>/<seq>."""
    import re

    root = layout.root
    match = re.fullmatch(r"Capture(\d+)", root.parent.name)
    if not match or root.parent.parent.name not in SPLITS:
        raise InputError(f"{root}: --format handavatar needs a sequence folder <split>/Capture<N>/<seq> (HandAvatar "
                         "names views by it); a merged sequence has none")
    if "images" in root.name or ".jpg" in root.name:
        raise InputError(f"{root}: HandAvatar finds masks and annotations by replacing 'images' and '.jpg' in "
                         "image paths; a sequence name containing them cannot be exported for it")
    return root.parent.parent.name, int(match.group(1)), root.name


def _mano_models(layout: SequenceLayout, hands: list[str]):
    """The MANO models get_annots processed the hands with (recorded in prep.json)."""
    from ..core.mano import load_mano_model, model_filename

    recorded = ((Manifest.read(layout.root).stage(registry.GET_ANNOTS.name) or {}).get("inputs") or {}).get("mano") or {}
    models = {}
    for hand in hands:
        entry = recorded.get(model_filename(hand)) or {}
        path = Path(entry["path"]) if isinstance(entry.get("path"), str) else None
        if path is None or not path.is_file():
            raise InputError(f"{layout.manifest}: the {hand} MANO model it was processed with is not at "
                             f"{path or '(not recorded)'}; --format handavatar poses HandAvatar's MANO with it")
        models[hand] = load_mano_model(path.parent, hand)
    return models


def _annotated_boxes(layout: SequenceLayout, capture: int):
    """The annotated hand boxes of the capture (data.json of the dataset get_annots read), or None
    where that file is not there."""
    from ..core import annotation_cache
    from ..core.dataset import AnnotationFiles
    from ..core.processed import recorded_source

    inputs = (Manifest.read(layout.root).stage(registry.GET_ANNOTS.name) or {}).get("inputs") or {}
    recorded = recorded_source(inputs)
    if recorded is None:
        return None
    data = AnnotationFiles(recorded[0], recorded[1]).data
    return annotation_cache.load_capture_boxes(data, capture) if data.is_file() else None


def _handavatar(source: SequenceViews, out: ExportLayout, copy: bool, tick) -> None:
    """HandAvatar's (and OHTA's) layout, per processed hand: anno_cam.pkl over every view where the
    hand shows (two-hand frames and mono cameras kept; the hand's mask without the pixels where the
    other hand is in front), masks 0/255 in masks_removeblack/ and masks_SAM/, links to the images."""
    seq = source.layout
    split, capture, name = _sequence_name(seq)
    hands = [h for h in recorded_hands(seq) if seq.params_dir(h).is_dir()]
    models = _mano_models(seq, hands)
    cams = source.cameras.ids
    records = {hand: ({}, {}, {}, []) for hand in hands}  # cameras, mesh_infos, bbox, framelist
    annotated = _annotated_boxes(seq, capture)
    stand_ins = 0
    for frame in source.frames:
        masks = {cam: decode_mask(seq.view(source.mask_kind, cam, frame, "png")) for cam in cams}
        for hand in hands:
            if not seq.params(hand, frame).is_file():
                continue
            params = seq.read_params(seq.params(hand, frame))
            views = handavatar.frame_records(models[hand], params, source.cameras.R, source.cameras.T, source.cameras.K)
            cameras, mesh_infos, boxes, framelist = records[hand]
            for c, cam in enumerate(cams):
                hand_pixels = masks[cam] == MASK_LABELS[hand]
                record, _ = views[c]
                width, height = source.sizes[c]
                # the image's annotated hand box (data.json), as theirs; the fit's projected joints' box
                # (their get_bbox) where the dataset's annotations are not at hand
                box = annotated.box(name, cam, frame) if annotated is not None else None
                if box is None:
                    stand_ins += 1
                    box = handavatar.joint_box(record["joint_img"], record["joint_valid"][:, 0])
                box = handavatar.square_box(box, width, height)
                if box is None or np.count_nonzero(hand_pixels) < HANDAVATAR_MIN_MASK_PIXELS:
                    continue
                view = out.handavatar_name(split, capture, name, cam, frame)
                _place(seq.image(cam, frame), out.handavatar_image(hand, view), copy)
                write_bytes(out.handavatar_mask(hand, view), encode_mask(np.where(hand_pixels, handavatar.MASK_ON, 0)))
                relative_symlink(out.handavatar_mask(hand, view), out.handavatar_mask(hand, view, "masks_SAM"))
                cameras[view], mesh_infos[view], boxes[view] = handavatar.camera_record(source.cameras.K[c]), record, box
                framelist.append(view)
        for _ in cams:
            tick()
    if stand_ins:
        log.info("handavatar: %d view(s) without an annotated hand box (data.json %s): the box of the fit's projected "
                 "joints instead", stand_ins, "has none for them" if annotated is not None else "not found")
    for hand, (cameras, mesh_infos, boxes, framelist) in records.items():
        order = sorted(framelist, key=lambda v: (v.split("/")[3], v))  # camera-major, frames ascending
        write_bytes(out.handavatar_anno(hand, split, capture, name),
                    handavatar.numpy1_pickle([cameras, mesh_infos, boxes, order]))


WRITERS = {"nerfstudio": _nerfstudio, "easymocap": _easymocap, "colmap": _colmap, "handavatar": _handavatar}


def _remove_leftovers(dest: Path) -> None:
    """The temporary folders of an export that was killed before its rename."""
    pattern = swap_temporary_pattern(dest)
    for path in dest.parent.iterdir() if dest.parent.is_dir() else ():
        if pattern.match(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def _for_format(source: SequenceViews, options: ExportOptions) -> SequenceViews:
    """What of the sequence the format exports: colmap the frames of --frames (all by default; it
    needs the depth maps, which say which views see a vertex) and no part labels."""
    import dataclasses

    if options.format == "handavatar":
        _sequence_name(source.layout)  # refused before anything is written
        return dataclasses.replace(source, parts=False)
    if options.format != "colmap":
        return source
    if source.depth_format == "none":
        raise InputError(f"{source.layout.root}: --format colmap needs the depth maps (render_mesh ran with "
                         "--depth-format none); rerun render_mesh.py with --depth-format npy or png16")
    frames = source.frames
    if options.frames is not None:
        absent = [f for f in options.frames if f not in set(frames)]
        if absent:
            raise InputError(f"{source.layout.frames_txt}: frame {absent[0]} of --frames is not a kept frame "
                             f"(kept: {frames[0]}-{frames[-1]}, {len(frames)} frames)")
        frames = list(options.frames)
    return dataclasses.replace(source, frames=frames, parts=False)


def export(sel: SequenceSelector, options: ExportOptions, progress: bool = True) -> ExportResult:
    """Export the sequence of `sel` as `options` say -> what was done."""
    start = time.perf_counter()
    # physical paths, so relative links stay right when a folder on the way is a symbolic link
    layout = SequenceLayout(os.path.realpath(sel.layout.root)) if sel.layout.root.exists() else sel.layout
    dest = Path(options.out) if options.out is not None else layout.export_dir(options.format)
    dest = Path(os.path.realpath(dest.parent)) / dest.name
    source = _for_format(finished_sequence(layout, options.masks), options)
    result = ExportResult(dest, options.format, len(source.cameras.ids), len(source.frames), options.copy,
                          options.format == "nerfstudio" and source.depth_format != "none", masks=source.mask_kind,
                          masks_note=source.masks_note, parts=source.parts)
    marker = _check_destination(dest)
    if (marker is not None and marker.get("recipe") == _recipe(source, options)
            and all(path.exists() for path in expected_files(source, ExportLayout(dest), options.format))):
        result.up_to_date = True  # (exists() follows the links: a link whose target went is missing)
        return result
    with sequence_lock(layout.root):
        # again, under the lock: no stage changes it meanwhile
        source = _for_format(finished_sequence(layout, options.masks), options)
        result.masks, result.masks_note = source.mask_kind, source.masks_note
        _check_destination(dest)
        _remove_leftovers(dest)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=source.views, desc=f"export {options.format}", unit="view", leave=False)
        try:
            with folder_swap(dest) as tmp:
                out = ExportLayout(tmp)
                WRITERS[options.format](source, out, options.copy, bar.update if bar else (lambda: None))
                if source.parts:
                    _place(layout.parts_json, out.parts_json, options.copy)
                write_text(out.marker, json.dumps({
                    "tool": "interhand-prep export", "package_version": __version__,
                    "recipe": _recipe(source, options), "cameras": source.cameras.ids, "frames": source.frames,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1) + "\n")
        finally:
            if bar:
                bar.close()
    result.seconds = time.perf_counter() - start
    return result


def main(args) -> int:
    """export / export.py"""
    sel = SequenceSelector(capture=args.capture, seq=args.seq, split=args.split, basedir=args.basedir,
                           out_root=args.out_root)
    result = export(sel, from_args(ExportOptions, args), progress=not args.quiet)
    print(result.summary())
    return 0
