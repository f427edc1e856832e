"""What the stages of a sequence folder have processed, as later stages and commands ask it: the
hands get_annots processed, the MANO files a run on some hands reads, and whether a stage's last
run finished; the cameras and hand meshes of the views render_mesh draws (and the stages after it
read). Read from the manifest (manifest.py), the stages' journals (stages/base.py) and the sequence
folder; the stages ask here instead of importing each other."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import gl_renderer, registry
from .cameras import CameraSet
from .constants import HANDS, SPLITS
from .dataset import InterHandDataset, image_size
from .errors import InputError
from .layout import SequenceLayout
from .manifest import Manifest, digest
from .mano import load_mano_model, model_filename
from .mano_forward import forward
from .selection import SequenceSelector


def recorded_hands(layout: SequenceLayout, manifest: Manifest | None = None) -> tuple[str, ...]:
    """The hands get_annots processed: from its record, else the params folders present."""
    record = (manifest or Manifest.read(layout.root)).stage(registry.GET_ANNOTS.name)
    result = record.get("result") if isinstance(record, dict) else None
    if isinstance(result, dict) and isinstance(result.get("hands"), list):
        return tuple(result["hands"])
    return tuple(layout.hands_present())


def recorded_source(inputs: dict) -> tuple[Path, str, int] | None:
    """(basedir, split, capture) from get_annots' recorded inputs: the images folder is
    <basedir>/images/<split>/Capture<N>/<seq>, also for a sequence written under --out-root."""
    import re

    basedir, images = inputs.get("basedir"), inputs.get("images")
    if not isinstance(basedir, str) or not isinstance(images, str):
        return None
    capture_dir = Path(images).parent
    match = re.fullmatch(r"Capture(\d+)", capture_dir.name)
    if not match or capture_dir.parent.name not in SPLITS:
        return None
    return Path(basedir), capture_dir.parent.name, int(match.group(1))


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


def unfinished(layout: SequenceLayout, stages: tuple[str, ...] | None = None) -> list[str]:
    """The stages among `stages` (default: all) whose last run in the folder stopped before it
    finished (their journal is still there)."""
    return [name for name in (stages or registry.names()) if layout.progress(name).is_file()]


def require_finished(layout: SequenceLayout, stages: tuple[str, ...], by: str) -> None:
    """A one-line error when a stage that `by` reads from was stopped before it finished."""
    stopped = unfinished(layout, stages)
    if stopped:
        raise InputError(f"{layout.root}: {stopped[0]} was stopped before it finished here; rerun it before {by}")


def frame_digest(meshes: dict[str, np.ndarray]) -> str:
    """render_mesh's digest of one frame's meshes {hand: vertices}: a view is redone when it changes."""
    return digest(*(part for hand in sorted(meshes) for part in (hand.encode(), np.ascontiguousarray(meshes[hand]).tobytes())))


def camera_digest(cam: gl_renderer.ViewCamera) -> str:
    """render_mesh's digest of one camera (K, R, T, image size): its views are redone when it changes."""
    return digest(cam.K.astype(np.float64).tobytes(), cam.R.astype(np.float64).tobytes(),
                  np.asarray(cam.T, dtype=np.float64).tobytes(), f"{cam.width}x{cam.height}".encode())


def outdated_render(layout: SequenceLayout, sizes: list[tuple[int, int]], hands: tuple[str, ...]) -> str | None:
    """Why the masks and depth maps recorded in the manifest do not belong to the sequence's
    current cameras (annots.npy, image sizes) and meshes (vertices/ of `hands`, the hands
    get_annots processed); None when they do. For the consumers of finished sequences (export):
    the same digests as the stage's own staleness rule. A hand that render_mesh posed from the
    annotations (not processed by get_annots) cannot be checked here; only the cameras are then."""
    record = Manifest.read(layout.root).stage(registry.RENDER_MESH.name) or {}
    cameras = layout.read_cameras()
    old_cams = record.get("cameras") or {}
    for c, cam in enumerate(cameras.ids):
        view = gl_renderer.ViewCamera(cam, cameras.K[c], cameras.R[c], cameras.T[c].reshape(3), *sizes[c])
        if old_cams.get(cam) != camera_digest(view):
            return f"camera {cam} changed since render_mesh ran"
    drawn = ((record.get("result") or {}).get("hands_drawn") or {})
    if any(count and hand not in hands for hand, count in drawn.items()):
        return None
    old_frames = record.get("frames") or {}
    for frame in layout.read_frames():
        meshes = {h: layout.read_vertices(layout.vertices(h, frame)) for h in hands
                  if layout.vertices(h, frame).is_file()}
        if old_frames.get(str(frame)) != frame_digest(meshes):
            return f"the hand meshes of frame {frame} changed since render_mesh ran"
    return None


def view_cameras(sel: SequenceSelector, layout: SequenceLayout, all_cameras: bool) -> list[gl_renderer.ViewCamera]:
    """The cameras whose views render_mesh draws (the kept ones; with `all_cameras` also those
    get_annots filtered out), with their image sizes (one image header per camera)."""
    kept = layout.read_cameras()
    cams = kept
    if all_cameras:
        ds = InterHandDataset(sel.basedir, sel.split)
        on_disk = ds.sequence_images(sel.capture, sel.seq).cameras
        every = ds.capture_cameras(sel.capture)
        extra = [c for c in sorted(on_disk, key=int) if c not in kept.ids and c in every.ids]
        if extra:
            more = every.subset(extra)
            cams = CameraSet(kept.ids + more.ids, np.concatenate([kept.K, more.K]), np.concatenate([kept.R, more.R]),
                             np.concatenate([kept.T, more.T]))
    out = []
    for c, cam in enumerate(cams.ids):
        folder = layout.camera_dir(cam)
        first = next((p for p in sorted(folder.glob("image*.jpg"))), None) if folder.is_dir() else None
        if first is None:
            raise InputError(f"{folder}: no images to take camera {cam}'s image size from")
        width, height = image_size(first)
        out.append(gl_renderer.ViewCamera(cam, cams.K[c], cams.R[c], cams.T[c].reshape(3), width, height))
    return out


def frame_meshes(sel: SequenceSelector, layout: SequenceLayout, frames: list[int], hands: tuple[str, ...]
                 ) -> tuple[dict[int, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """({frame: {hand: float32 vertices}}, {hand: faces}) for every hand that has MANO in each frame."""
    meshes: dict[int, dict[str, np.ndarray]] = {f: {} for f in frames}
    faces = {}
    mano = None
    for hand in HANDS:
        if hand in hands:
            model = load_mano_model(sel.mano_dir, hand)
            faces[hand] = model.faces
            for f in frames:
                meshes[f][hand] = layout.read_vertices(layout.vertices(hand, f), model.num_vertices)
            continue
        # the hand get_annots did not process: pose it from the annotations where it has MANO
        if mano is None:
            mano = InterHandDataset(sel.basedir, sel.split).capture_mano(sel.capture)
        have = [f for f, present in zip(frames, mano.has(frames, hand)) if present]
        if have:
            model = load_mano_model(sel.mano_dir, hand)
            faces[hand] = model.faces
            pose, shape, trans = mano.arrays(have, hand)
            vertices = forward(model, pose, shape, trans).vertices.astype(np.float32)
            for f, v in zip(have, vertices):
                meshes[f][hand] = v
    return meshes, faces


# ---------------------------------------------------------------------------------------------
# refine_masks: what its refined masks depend on (the stage's staleness rule; export asks it too)


def images_identity(layout: SequenceLayout, cam: str, frames: list[int]) -> bytes:
    """Size and modification time of a camera's images: a changed image redoes its camera's views."""
    parts = []
    for f in frames:
        try:
            st = layout.image(cam, f).stat()
            parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{f}:-")
    return ";".join(parts).encode()


def refine_recipe(options: dict, render_record: dict) -> dict:
    """refine_masks' recipe: its options, the method's settings they give, and render_mesh's recipe."""
    from .mask_refine import RefineParams

    return {"options": options, "method": RefineParams(band_mm=options["band_mm"]).as_dict(),
            "render": digest(repr(sorted((render_record.get("recipe") or {}).items())).encode())}


def refine_digests(layout: SequenceLayout, render_record: dict, cams: list[str], frames: list[int]
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """refine_masks' digests of each frame (render_mesh's: the meshes it drew) and of each camera
    (render_mesh's, and its images' sizes and times)."""
    render_frames, render_cams = render_record.get("frames") or {}, render_record.get("cameras") or {}
    return ({str(f): str(render_frames.get(str(f))) for f in frames},
            {c: digest(str(render_cams.get(c)).encode(), images_identity(layout, c, frames)) for c in cams})


def outdated_refinement(layout: SequenceLayout, cams: list[str], frames: list[int],
                        manifest: Manifest | None = None) -> str | None:
    """Why the refined masks of the views (cams x frames) are not usable as they are (refine_masks
    has no record, or its rule says they are stale, or a file is missing); None when they are."""
    manifest = manifest or Manifest.read(layout.root)
    stage = registry.REFINE_MASKS.name
    record = manifest.stage(stage)
    if not isinstance(record, dict):
        return f"{stage} has not run here"
    render = manifest.stage(registry.RENDER_MESH.name) or {}
    recipe = record.get("recipe") or {}
    options = recipe.get("options") or {}
    if "band_mm" not in options or recipe != refine_recipe(options, render):
        return f"{stage} ran with another method or render_mesh ran with other options since"
    frame_digests, camera_digests = refine_digests(layout, render, cams, frames)
    done_frames, done_cams = record.get("frames") or {}, record.get("cameras") or {}
    for f in frames:
        if done_frames.get(str(f)) != frame_digests[str(f)]:
            return f"the masks of frame {f} were rendered again since {stage}"
    for cam in cams:
        if done_cams.get(cam) != camera_digests[cam]:
            return f"camera {cam} or its images changed since {stage}"
    for cam in cams:
        for f in frames:
            if not layout.refined_mask(cam, f).is_file():
                return f"{layout.refined_mask(cam, f)} is missing"
    return None
