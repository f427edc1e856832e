"""A synthetic capture in the exact InterHand2.6M 30 fps layout, rendered from a MANO model.

Writes `images/<split>/Capture<N>/<seq>/cam<id>/image<frame>.jpg` and
`annotations/<split>/InterHand2.6M_<split>_{camera,MANO_NeuralAnnot,joint_3d,data}.json` (plus
`annotations/skeleton.txt` and `subject.txt`) with the real schemas, and reproduces what real
captures contain: real camera ids on a dome about a metre from the hands (focal ~1250 px), mostly
portrait 334x512 and some landscape 512x334 cameras, RGB and monochrome cameras (stored, as in the
dataset, as 3-channel JPEGs with equal channels), single-hand and interacting sequences, frames
whose MANO entry of one hand is null, all-black frames in some RGB cameras, a frame missing in one
camera, and a camera with parameters but no images. Deterministic for a given spec.

Two appearances (`CaptureSpec.appearance`):

- "plain" (the default): the images show exactly the annotated MANO hands (z-buffered surface
  splats, flat skin colour, Lambert shading towards the camera, uniform dark background);
- "fit_error": the images show a true hand that the annotated MANO fit misses by 3.5-6.5 mm
  (mean joint error per frame), with forearms, sleeves, a torso in a patterned shirt, shaded and
  textured skin, light spots; the true hand masks are written beside the dataset under
  `<basedir>/synthetic_truth/<split>/Capture<N>/<seq>/cam<id>/image<frame>.png` (`truth_mask_path`;
  labels 0, 100 left, 200 right). The MANO parameters, joints and image list are those of the
  plain mode with the same spec; the cameras are turned about the vertical so that none stands
  behind the person (`_horseshoe`). See `scene` for what is drawn and how.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from PIL import Image

from ..core import dataset
from ..core.cameras import CameraSet, look_at_rotation
from ..core.fileio import write_bytes, write_text
from ..core.layout import encode_mask
from ..core.fit_quality import REGRESSOR_NAME, load_joint_regressor, regress_joints
from ..core.constants import HANDS
from ..core.mano import load_mano_model
from ..core.mano_forward import axis_angle_to_matrix, forward
from .hand import finger_flexion_pose, write_synthetic_mano
from .scene import truth_mask_path  # noqa: F401  (part of this module's interface)

PORTRAIT_SIZE = (334, 512)  # (width, height)
DOME_CENTER_MM = np.array([0.0, -30.0, 1000.0])
BACKGROUND = np.array([28.0, 26.0, 30.0])
SKIN = {"right": np.array([224.0, 172.0, 140.0]), "left": np.array([200.0, 150.0, 128.0])}
SPLATS_PER_HAND = 60000
HOLE_DEPTH_MM = 5.0  # a splat this much behind its nearest neighbour is a see-through gap
BLACK_LEVEL = 0  # all-black frames are exactly black, as the dataset's are
APPEARANCES = ("plain", "fit_error")


@dataclass
class SequenceSpec:
    """One sequence: its name, which hands it shows ('right', 'left' or 'both'), its length."""

    name: str
    hands: str = "both"
    num_frames: int = 8


@dataclass
class CaptureSpec:
    """What to generate. The special cases are keyed by sequence name and frame offset.

    black: {seq: {offset: [camera ids]}} RGB cameras whose image of that frame is all black;
    null_mano: {seq: {offset: [hands]}} hands whose MANO entry is null in that frame;
    missing_images: {seq: {offset: [camera ids]}} cameras lacking that frame's image;
    cameras_without_images: camera ids in camera.json that get no image folder;
    far_off: {seq: {offset: mm}} frames whose annotated joints are this far from the MANO fit's
    (other frames: 1.5 to 5 mm; each joint 0.5 to 1.5 times the frame's value, in a random direction);
    invalid_joints: {seq: {offset: [joint rows 0-41]}} joints annotated as not valid.
    With `default_cases` set, each sequence of 6 or more frames gets one of each.
    appearance: "plain" (the annotated MANO hands) or "fit_error" (a true hand off the annotated
    fit, in a cluttered scene, with true masks; `scene`); render_workers: the processes that render
    the fit_error images (0: one per core).
    """

    capture: int = 0
    split: str = "train"
    num_cameras: int = 12
    sequences: list[SequenceSpec] = field(default_factory=lambda: [
        SequenceSpec("0051_dinosaur", "right"), SequenceSpec("0266_dh_pray", "both")])
    seed: int = 0
    camera_ids: list[str] | None = None
    black: dict = field(default_factory=dict)
    null_mano: dict = field(default_factory=dict)
    missing_images: dict = field(default_factory=dict)
    cameras_without_images: list[str] = field(default_factory=list)
    far_off: dict = field(default_factory=dict)
    invalid_joints: dict = field(default_factory=dict)
    default_cases: bool = True
    jpeg_quality: int = 90
    image_scale: float = 1.0  # < 1 for small images (tests); focal length and principal point follow
    appearance: str = "plain"
    render_workers: int = 0

    @property
    def portrait_size(self) -> tuple[int, int]:
        return tuple(int(round(n * self.image_scale)) for n in PORTRAIT_SIZE)


@dataclass
class CaptureManifest:
    """What was generated: the spec with its special cases filled in, cameras and frame ids."""

    spec: CaptureSpec
    basedir: Path
    mano_dir: Path
    cameras: CameraSet
    portrait: dict[str, bool]
    rgb: dict[str, bool]
    frames: dict[str, list[int]]  # sequence -> frame ids
    # sequence -> frame -> hand -> the distance (mm) by which each of its 21 annotated joints was
    # moved off the MANO fit's joint, NaN where the joint is not valid
    joint_errors: dict = field(default_factory=dict)
    # fit_error appearance: sequence -> frame -> hand -> mean distance (mm) between the true hand's
    # and the annotated MANO hand's 21 joints (the joint regressor on both meshes)
    true_joint_errors: dict = field(default_factory=dict)
    # fit_error appearance: sequence -> hand -> (pose Nx48, shape Nx10, trans Nx3) of the true hand,
    # and its vertices Nx778x3 (metres; the MANO mesh of those parameters with its skin moved off
    # MANO's shape space along the normals by one or two millimetres: `scene.true_motion`)
    true_params: dict = field(default_factory=dict)
    true_vertices: dict = field(default_factory=dict)


def choose_cameras(num: int, rng: np.random.Generator) -> list[str]:
    """`num` real camera ids, with landscape and mono cameras in about their real proportion."""
    table = dataset.read_camera_table(dataset.PACKAGED_CAMERA_TABLE)
    ids = list(table)
    landscape = [i for i in ids if not table[i].portrait]
    portrait_rgb = [i for i in ids if table[i].portrait and table[i].rgb]
    portrait_mono = [i for i in ids if table[i].portrait and not table[i].rgb]
    n_land = max(1, round(num * len(landscape) / len(ids))) if num >= 4 else 0
    n_mono = max(1, round((num - n_land) * len(portrait_mono) / (len(portrait_mono) + len(portrait_rgb)))) if num >= 3 else 0
    n_rgb = num - n_land - n_mono
    chosen = (list(rng.choice(portrait_rgb, n_rgb, replace=False)) + list(rng.choice(portrait_mono, n_mono, replace=False))
              + list(rng.choice(landscape, n_land, replace=False)))
    return sorted((str(c) for c in chosen), key=int)


def dome_cameras(ids: list[str], portrait: dict[str, bool], rng: np.random.Generator,
                 portrait_size: tuple[int, int] = PORTRAIT_SIZE) -> tuple[CameraSet, dict]:
    """Cameras spread over a dome about the hands, ~1 m away, looking at its centre."""
    n = len(ids)
    golden = np.pi * (3 - np.sqrt(5))
    k = np.arange(n) + 0.5
    elevation = np.arcsin(np.clip(-0.75 + 1.55 * k / n, -1, 1))  # from below to well above the hands
    azimuth = golden * np.arange(n) + rng.uniform(0, 2 * np.pi)
    # world y points down (as in InterHand2.6M), so "above" is -y
    direction = np.stack([np.cos(elevation) * np.sin(azimuth), -np.sin(elevation), -np.cos(elevation) * np.cos(azimuth)], 1)
    distance = rng.uniform(950.0, 1150.0, n)
    campos = DOME_CENTER_MM + direction * distance[:, None]
    target = DOME_CENTER_MM + rng.normal(scale=15.0, size=(n, 3))
    down = np.tile([0.0, 1.0, 0.0], (n, 1))
    down[[not portrait[i] for i in ids]] = [1.0, 0.0, 0.0]  # landscape: rig rotated about the optical axis
    R = look_at_rotation(campos, target, down)
    sizes = {i: portrait_size if portrait[i] else portrait_size[::-1] for i in ids}
    scale = portrait_size[1] / PORTRAIT_SIZE[1]
    focal = rng.uniform(1240.0, 1275.0, (n, 2))
    focal[:, 1] = focal[:, 0] + rng.normal(scale=0.3, size=n)
    focal *= scale
    princpt = np.array([[sizes[i][0] / 2, sizes[i][1] / 2] for i in ids]) + rng.uniform(-25, 25, (n, 2)) * scale
    record = {
        "campos": {i: campos[c].tolist() for c, i in enumerate(ids)},
        "camrot": {i: R[c].tolist() for c, i in enumerate(ids)},
        "focal": {i: focal[c].tolist() for c, i in enumerate(ids)},
        "princpt": {i: princpt[c].tolist() for c, i in enumerate(ids)},
    }
    return CameraSet.from_interhand(record, ids), record


def hand_motion(hands: str, num_frames: int, rng: np.random.Generator, betas: dict) -> dict:
    """MANO parameters {hand: (pose Nx48, shape Nx10, trans Nx3)} for a sequence, world metres."""
    t = np.arange(num_frames) / 30.0
    out = {}
    for hand in HANDS:
        if hands not in ("both", hand):
            continue
        side = 1.0 if hand == "right" else -1.0
        # fingers up (world -y); in interacting sequences the palms face each other
        base = np.array([0.0, 0.0, np.pi])
        if hands == "both":
            base_R = axis_angle_to_matrix(np.array([[0.0, side * np.pi / 2, 0.0]]))[0] @ axis_angle_to_matrix(base[None])[0]
        else:
            base_R = axis_angle_to_matrix(np.array([[0.0, side * 0.5, 0.0]]))[0] @ axis_angle_to_matrix(base[None])[0]
        phase = rng.uniform(0, 2 * np.pi, 3)
        wobble = 0.25 * np.sin(2 * np.pi * 0.4 * t[:, None] + phase) * np.array([1.0, 0.6, 0.4])
        from scipy.spatial.transform import Rotation

        global_orient = (Rotation.from_rotvec(wobble) * Rotation.from_matrix(base_R)).as_rotvec()
        finger_phase = rng.uniform(0, 2 * np.pi, (1, 5, 1))
        flexion = 0.55 + 0.5 * np.sin(2 * np.pi * 0.6 * t[:, None, None] + finger_phase) * np.ones((1, 1, 3))
        flexion = flexion * np.array([0.5, 1.0, 1.0, 1.0, 1.0])[None, :, None]
        fingers = finger_flexion_pose(flexion, hand)
        gap = 0.045 if hands == "both" else 0.0
        trans = np.array([-side * gap, 0.03, 1.0]) + 0.01 * np.sin(2 * np.pi * 0.3 * t[:, None] + phase)
        pose = np.concatenate([global_orient, fingers], axis=1)
        out[hand] = (pose, np.tile(betas[hand], (num_frames, 1)), trans)
    return out


def _surface_samples(faces: np.ndarray, vertices: np.ndarray, count: int, rng) -> tuple[np.ndarray, np.ndarray]:
    tri = vertices[faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face_ids = rng.choice(len(faces), count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    return face_ids, bary


def render_splats(points_mm: np.ndarray, colors: np.ndarray, cameras: CameraSet, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Z-buffered point splats: points_mm Px3 world (mm), colors Px3 -> one HxWx3 uint8 per camera.

    A pixel that no front-surface sample reached shows a farther surface (or the background)
    through the gap; such pixels take the colour of their nearest 3x3 neighbour instead.
    """
    pixels, depth = cameras.project(points_mm)
    images = []
    for c, (w, h) in enumerate(sizes):
        uv = np.rint(pixels[c]).astype(np.int64)
        ok = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h) & (depth[c] > 0)
        flat = uv[ok, 1] * w + uv[ok, 0]
        order = np.argsort(-depth[c][ok], kind="stable")  # far first: the nearest write wins
        zbuf = np.full(h * w, np.inf)
        color = np.empty((h * w, 3))
        color[:] = BACKGROUND
        zbuf[flat[order]] = depth[c][ok][order]
        color[flat[order]] = colors[ok][order]
        zbuf, color = zbuf.reshape(h, w), color.reshape(h, w, 3)
        # the 3x3 neighbourhood of every pixel, shifted into a leading axis
        zpad = np.pad(zbuf, 1, constant_values=np.inf)
        cpad = np.pad(color, ((1, 1), (1, 1), (0, 0)), mode="edge")
        shifts = [(dy, dx) for dy in range(3) for dx in range(3)]
        zn = np.stack([zpad[dy:dy + h, dx:dx + w] for dy, dx in shifts])
        nearest = np.argmin(zn, axis=0)
        hits = np.isfinite(zn).sum(axis=0)
        gap = (zbuf > np.take_along_axis(zn, nearest[None], 0)[0] + HOLE_DEPTH_MM) & (np.isfinite(zbuf) | (hits >= 5))
        if gap.any():
            ys, xs = np.nonzero(gap)
            dy, dx = np.array(shifts)[nearest[ys, xs]].T
            color[ys, xs] = cpad[ys + dy, xs + dx]
        images.append(np.clip(color, 0, 255).astype(np.uint8))
    return images


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _fill_default_cases(spec: CaptureSpec, ids: list[str], rgb: dict[str, bool]) -> None:
    rgb_ids = [i for i in ids if rgb[i]]
    for seq in spec.sequences:
        if seq.num_frames < 6:
            continue
        if rgb_ids:
            spec.black.setdefault(seq.name, {2: rgb_ids[: max(1, len(rgb_ids) // 3)]})
        if seq.hands == "both":
            spec.null_mano.setdefault(seq.name, {3: ["left"]})
        spec.missing_images.setdefault(seq.name, {4: [ids[-1]]})
        spec.far_off.setdefault(seq.name, {1: 35.0})
        spec.invalid_joints.setdefault(seq.name, {5: [0, 1, 2, 3, 25, 26, 27, 28]})
    if len(ids) >= 6 and not spec.cameras_without_images:
        spec.cameras_without_images = [ids[1]]


@dataclass
class _Rig:
    """The capture's cameras: ids, flags, CameraSet, camera.json record, image sizes (w, h)."""

    ids: list[str]
    portrait: dict[str, bool]
    rgb: dict[str, bool]
    cameras: CameraSet
    record: dict
    sizes: list[tuple[int, int]]


@dataclass
class _Hands:
    """Per hand: the loaded model, its shape, surface samples for splatting; the joint regressor."""

    models: dict
    betas: dict
    samples: dict
    regressor: np.ndarray


@dataclass
class _Records:
    """The annotation files being built: MANO and joint_3d entries by frame, COCO images and boxes."""

    mano: dict = field(default_factory=dict)
    joints: dict = field(default_factory=dict)
    images: list = field(default_factory=list)
    annotations: list = field(default_factory=list)


def _make_rig(spec: CaptureSpec, rng: np.random.Generator) -> _Rig:
    table = dataset.read_camera_table(dataset.PACKAGED_CAMERA_TABLE)
    ids = [str(i) for i in spec.camera_ids] if spec.camera_ids else choose_cameras(spec.num_cameras, rng)
    portrait = {i: table[i].portrait for i in ids}
    cameras, record = dome_cameras(ids, portrait, rng, spec.portrait_size)
    sizes = [spec.portrait_size if portrait[i] else spec.portrait_size[::-1] for i in ids]
    return _Rig(ids, portrait, {i: table[i].rgb for i in ids}, cameras, record, sizes)


def _make_hands(mano_dir: Path, rng: np.random.Generator) -> _Hands:
    models = {hand: load_mano_model(mano_dir, hand) for hand in HANDS}
    betas = {hand: rng.normal(scale=0.6, size=10) for hand in HANDS}
    samples = {hand: _surface_samples(models[hand].faces, models[hand].v_template, SPLATS_PER_HAND, rng)
               for hand in HANDS}
    regressor = load_joint_regressor(mano_dir / REGRESSOR_NAME, models["right"].num_vertices)
    return _Hands(models, betas, samples, regressor)


def generate_capture(basedir: str | Path, mano_dir: str | Path, spec: CaptureSpec | None = None,
                     progress: bool = False) -> CaptureManifest:
    """Generate the capture of `spec` under `basedir`, with the MANO model of `mano_dir`.

    A synthetic model is written into `mano_dir` first if it holds none. Annotation files of the
    split that already exist are extended (other captures are kept).
    """
    spec = spec or CaptureSpec()
    if spec.appearance not in APPEARANCES:
        raise ValueError(f"unknown appearance {spec.appearance!r}; expected one of {', '.join(APPEARANCES)}")
    basedir, mano_dir = Path(basedir), Path(mano_dir)
    write_synthetic_mano(mano_dir)
    rng = np.random.default_rng(spec.seed)
    rig = _make_rig(spec, rng)
    if spec.default_cases:
        _fill_default_cases(spec, rig.ids, rig.rgb)
    hands = _make_hands(mano_dir, rng)
    noise = np.random.default_rng([spec.seed, 15])  # its own stream: the images stay as they were
    fit = _FitErrorImages(spec, rig, hands) if spec.appearance == "fit_error" else None
    if fit is not None:
        rig = fit.rig  # the dome opened behind the person
    records = _Records()
    frames: dict[str, list[int]] = {}
    joint_errors: dict = {}
    next_frame = 1
    sequences = spec.sequences
    if progress:
        from tqdm import tqdm

        sequences = tqdm(spec.sequences, desc="synthetic sequences", unit="seq")
    try:
        for seq in sequences:
            frames[seq.name] = list(range(next_frame, next_frame + seq.num_frames))
            next_frame += seq.num_frames + 37
            joint_errors[seq.name] = _generate_sequence(basedir, spec, seq, frames[seq.name], rig, hands, rng, noise,
                                                        records, fit)
    finally:
        if fit is not None:
            fit.close()
    _write_annotations(basedir, spec, rig.record, records)
    return CaptureManifest(spec=spec, basedir=basedir, mano_dir=mano_dir, cameras=rig.cameras, portrait=rig.portrait,
                           rgb=rig.rgb, frames=frames, joint_errors=joint_errors,
                           true_joint_errors=fit.joint_errors if fit else {}, true_params=fit.params if fit else {},
                           true_vertices=fit.vertices if fit else {})


def _generate_sequence(basedir: Path, spec: CaptureSpec, seq: SequenceSpec, frame_ids: list[int], rig: _Rig,
                       hands: _Hands, rng: np.random.Generator, noise: np.random.Generator, records: _Records,
                       fit: "_FitErrorImages | None" = None) -> dict:
    """One sequence's annotations and images -> {frame: {hand: injected joint errors (21,) mm}}."""
    motion = hand_motion(seq.hands, seq.num_frames, rng, hands.betas)
    posed = {hand: forward(hands.models[hand], *params) for hand, params in motion.items()}
    fitted = {hand: regress_joints(hands.regressor, out.vertices) for hand, out in posed.items()}  # mm
    null = spec.null_mano.get(seq.name, {})
    rendered = fit.sequence(seq, frame_ids, motion, fitted) if fit is not None else None
    injected = {}
    for offset, frame in enumerate(frame_ids):
        present = [h for h in posed if h not in null.get(offset, [])]
        records.mano[str(frame)] = {hand: ({"pose": motion[hand][0][offset].tolist(),
                                            "shape": motion[hand][1][offset].tolist(),
                                            "trans": motion[hand][2][offset].tolist()} if hand in present else None)
                                    for hand in HANDS}
        world_joints = np.zeros((42, 3))
        valid = np.zeros(42, bool)
        invalid = set(spec.invalid_joints.get(seq.name, {}).get(offset, []))
        injected[frame] = {}
        for hand in present:
            rows = np.arange(21) + (0 if hand == "right" else 21)
            base = spec.far_off.get(seq.name, {}).get(offset, noise.uniform(1.5, 5.0))
            distance = base * noise.uniform(0.5, 1.5, 21)
            direction = noise.normal(size=(21, 3))
            direction /= np.linalg.norm(direction, axis=1, keepdims=True)
            world_joints[rows] = fitted[hand][offset] + distance[:, None] * direction
            valid[rows] = [row not in invalid for row in rows]
            injected[frame][hand] = np.where(valid[rows], distance, np.nan)
        hand_type = "interacting" if len(present) == 2 else (present[0] if present else "right")
        records.joints[str(frame)] = {"world_coord": world_joints.tolist(), "joint_valid": valid[:, None].tolist(),
                                      "hand_type": hand_type, "hand_type_valid": bool(present), "seq": seq.name}
        # Every hand with a mesh is drawn, also when its MANO entry is withheld (as when the
        # annotation fails on a real frame).
        if rendered is None:
            images = _frame_images({hand: out.vertices[offset] for hand, out in posed.items()}, hands, rig)
            truths = None
        else:
            images, truths = next(rendered)
        pixels = rig.cameras.project(world_joints[valid])[0] if valid.any() else None
        _write_frame_images(basedir, spec, seq, frame, offset, images, rig, pixels,
                            {"joint_valid": valid[:, None].astype(int).tolist(), "hand_type": hand_type,
                             "hand_type_valid": int(bool(present))}, records, truths)
    return injected


def _frame_images(vertices: dict[str, np.ndarray], hands: _Hands, rig: _Rig) -> list[np.ndarray]:
    """One HxWx3 image per camera of the hands posed as `vertices` ({hand: Vx3 metres})."""
    points, normals, base = [], [], []
    for hand, verts in vertices.items():
        face_ids, bary = hands.samples[hand]
        tri = verts[hands.models[hand].faces[face_ids]]
        points.append(np.einsum("pk,pkd->pd", bary, tri) * 1000.0)
        face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        face_normals /= np.linalg.norm(face_normals, axis=1, keepdims=True)
        normals.append(face_normals)
        base.append(np.broadcast_to(SKIN[hand], face_normals.shape))
    return _shade_and_render(np.concatenate(points), np.concatenate(normals), np.concatenate(base), rig.cameras,
                             rig.sizes)


def _write_frame_images(basedir: Path, spec: CaptureSpec, seq: SequenceSpec, frame: int, offset: int,
                        images: list[np.ndarray], rig: _Rig, pixels: np.ndarray | None, annotation: dict,
                        records: _Records, truths: list | None = None) -> None:
    """The frame's JPEG per camera (black, monochrome or missing as the spec says), with its
    COCO image record and hand box (from the projected joints), and the true mask of each image
    written when `truths` (one per camera) is given."""
    black = spec.black.get(seq.name, {}).get(offset, [])
    missing = spec.missing_images.get(seq.name, {}).get(offset, [])
    for c, cam in enumerate(rig.ids):
        if cam in spec.cameras_without_images or cam in missing:
            continue
        image = np.full_like(images[c], BLACK_LEVEL) if cam in black else images[c]
        if not rig.rgb[cam]:
            gray = np.asarray(Image.fromarray(image).convert("L"))
            image = np.repeat(gray[..., None], 3, axis=2)
        path = dataset.image_path(basedir, spec.split, spec.capture, seq.name, cam, frame)
        write_bytes(path, _jpeg(image, spec.jpeg_quality))
        if truths is not None:
            truth = truth_mask_path(basedir, spec.split, spec.capture, seq.name, cam, frame)
            write_bytes(truth, encode_mask(truths[c]))
        image_id = len(records.images)
        w, h = rig.sizes[c]
        records.images.append({"id": image_id, "file_name": "/".join(path.parts[-4:]), "width": w, "height": h,
                               "capture": spec.capture, "subject": spec.capture, "seq_name": seq.name, "camera": cam,
                               "frame_idx": frame})
        bbox = [0.0, 0.0, 0.0, 0.0]
        if pixels is not None:
            lo, hi = pixels[c].min(0), pixels[c].max(0)
            margin = 0.25 * (hi - lo) + 5.0
            bbox = [float(lo[0] - margin[0]), float(lo[1] - margin[1]),
                    float(hi[0] - lo[0] + 2 * margin[0]), float(hi[1] - lo[1] + 2 * margin[1])]
        records.annotations.append({"id": image_id, "image_id": image_id, "bbox": bbox, **annotation})


def _shade_and_render(points, normals, base, cameras: CameraSet, sizes) -> list[np.ndarray]:
    """Lambert-like shading towards each camera, then splatting. Faces seen from behind are dark."""
    images = []
    for c in range(len(cameras.ids)):
        view = cameras.centers[c] - points
        view /= np.linalg.norm(view, axis=1, keepdims=True)
        light = np.clip(np.einsum("pd,pd->p", normals, view), 0.0, 1.0)
        colors = base * (0.25 + 0.75 * light)[:, None]
        images.append(render_splats(points, colors, cameras.subset([cameras.ids[c]]), [sizes[c]])[0])
    return images


HORSESHOE_GAP = np.radians(100.0)  # fit_error: no camera within 50 degrees (azimuth) of the person's back


def _horseshoe(rig: _Rig, front_yaw: float, rng: np.random.Generator) -> _Rig:
    """The rig of the fit_error appearance: the dome's places dealt out at random among cameras of
    the same orientation (the plain rig puts them in id order, RGB cameras low, mono ones high),
    then every camera turned about the vertical axis through the dome's centre so that the
    azimuths, relative to `front_yaw` (0: world +z), span 360 degrees less HORSESHOE_GAP: a dome
    set up around a seated person, none behind its back. Intrinsics stay with their camera."""
    order = np.arange(len(rig.ids))
    for portrait in (True, False):
        group = np.flatnonzero([rig.portrait[cam] == portrait for cam in rig.ids])
        order[group] = group[rng.permutation(len(group))]
    centres, rotations = rig.cameras.centers[order], rig.cameras.R[order]
    rel = centres - DOME_CENTER_MM
    offset = np.angle(np.exp(1j * (np.arctan2(rel[:, 0], rel[:, 2]) - front_yaw)))
    delta = offset * (np.pi - HORSESHOE_GAP / 2) / np.pi - offset
    record = {key: dict(value) for key, value in rig.record.items()}
    for c, cam in enumerate(rig.ids):
        cos, sin = np.cos(delta[c]), np.sin(delta[c])
        M = np.array([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])
        record["campos"][cam] = (DOME_CENTER_MM + M @ rel[c]).tolist()
        record["camrot"][cam] = (rotations[c] @ M.T).tolist()
    return _Rig(rig.ids, rig.portrait, rig.rgb, CameraSet.from_interhand(record, rig.ids), record, rig.sizes)


class _FitErrorImages:
    """The images and true masks of the fit_error appearance, drawn from a random stream of their
    own (the annotations are those of the plain mode)."""

    def __init__(self, spec: CaptureSpec, rig: _Rig, hands: _Hands):
        from . import scene

        self.scene = scene
        self.spec = spec
        self.rng = np.random.default_rng([spec.seed, scene.FIT_ERROR_STREAM])
        self.hands = hands
        self.rings = {hand: scene.boundary_loop(hands.models[hand].faces) for hand in HANDS}
        self.tex = {hand: hands.models[hand].v_template * 1000.0 for hand in HANDS}
        tone = scene.SKIN_TONES[self.rng.choice(len(scene.SKIN_TONES), p=scene.SKIN_TONE_P)]
        self.tone = tone * self.rng.uniform(0.95, 1.05, 3)
        front = self.rng.uniform(0, 2 * np.pi)
        self.yaw = front + np.pi  # where the person's back is
        self.rig = rig = _horseshoe(rig, front, self.rng)
        self.looks = scene.camera_looks(len(rig.ids), self.rng)
        self.renderer = scene.FrameRenderer(rig.cameras, rig.sizes, self.looks, spec.seed, spec.render_workers)
        self.joint_errors: dict = {}
        self.params: dict = {}
        self.vertices: dict = {}
        self.count = 0

    def sequence(self, seq: SequenceSpec, frame_ids: list[int], motion: dict, fitted: dict):
        """An iterator over the sequence's frames: (images, true masks), one per camera (None for
        a camera that gets no image in that frame)."""
        scene = self.scene
        models = self.hands.models
        true = scene.true_motion(models, self.hands.regressor, motion, fitted, self.rng)
        self.params[seq.name] = true.params
        self.vertices[seq.name] = true.vertices
        self.joint_errors[seq.name] = {frame: {hand: float(true.joint_error[hand][k]) for hand in true.joint_error}
                                       for k, frame in enumerate(frame_ids)}
        self.count += 1
        look = scene.sequence_scene(self.count, seq.hands, fitted, self.rng,
                                    self.yaw + self.rng.uniform(-0.12, 0.12), self.tone)
        distractor = None
        if look.distractor is not None:
            other, pose, shape, trans = look.distractor
            distractor = forward(models[other], pose[None], shape[None], trans[None]).vertices[0]
        faces = {hand: models[hand].faces for hand in HANDS}
        tasks = []
        for offset, frame in enumerate(frame_ids):
            missing = self.spec.missing_images.get(seq.name, {}).get(offset, [])
            cams = [c for c, cam in enumerate(self.rig.ids)
                    if cam not in self.spec.cameras_without_images and cam not in missing]
            parts = scene.frame_parts(look, {hand: v[offset] for hand, v in true.vertices.items()}, faces,
                                      self.rings, self.tex, distractor)
            tasks.append(scene.RenderTask(look, parts, (self.count, frame), cams))

        def results():
            for task, views in zip(tasks, self.renderer.map(tasks)):
                images, truths = [None] * len(self.rig.ids), [None] * len(self.rig.ids)
                for c, (image, truth) in zip(task.cameras, views):
                    images[c], truths[c] = image, truth
                yield images, truths

        return results()

    def close(self) -> None:
        self.renderer.close()


def skeleton_text() -> str:
    lines = ["# joint_name joint_id joint_parent_id"]
    names = []
    for side in ("r", "l"):
        for finger in ("thumb", "index", "middle", "ring", "pinky"):
            names += [f"{side}_{finger}{k}" for k in (4, 3, 2, 1)]
        names.append(f"{side}_wrist")
    for j, name in enumerate(names):
        hand_offset = 0 if j < 21 else 21
        local = j - hand_offset
        parent = -1 if local == 20 else (hand_offset + 20 if local % 4 == 3 else j + 1)
        lines.append(f"{name} {j} {parent}")
    return "\n".join(lines) + "\n"


def _merge_json(path: Path, capture: int, record) -> None:
    data = orjson.loads(path.read_bytes()) if path.exists() else {}
    data[str(capture)] = record
    write_bytes(path, orjson.dumps(data))


def _write_annotations(basedir: Path, spec: CaptureSpec, camera_record: dict, records: _Records) -> None:
    files = dataset.AnnotationFiles(basedir, spec.split)
    _merge_json(files.camera, spec.capture, camera_record)
    _merge_json(files.mano, spec.capture, records.mano)
    _merge_json(files.joint_3d, spec.capture, records.joints)
    coco = orjson.loads(files.data.read_bytes()) if files.data.exists() else {"images": [], "annotations": []}
    coco["images"] = [im for im in coco["images"] if im["capture"] != spec.capture]
    kept = {im["id"] for im in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in kept]
    offset = max(kept, default=-1) + 1
    for im, an in zip(records.images, records.annotations):
        im["id"] += offset
        an["id"] += offset
        an["image_id"] += offset
    coco["images"] += records.images
    coco["annotations"] += records.annotations
    write_bytes(files.data, orjson.dumps(coco))
    annotations = dataset.annotations_folder(basedir)
    write_text(annotations / "skeleton.txt", skeleton_text())
    subjects = annotations / "subject.txt"
    lines = subjects.read_text().splitlines() if subjects.exists() else ["# capture subject"]
    line = f"Capture{spec.capture} {spec.capture}"
    if line not in lines:
        lines.append(line)
    write_text(subjects, "\n".join(lines) + "\n")
