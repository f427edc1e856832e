"""The `fit_error` appearance of synthetic captures: camera images of a TRUE hand that the annotated
MANO fit misses by a realistic error, in a cluttered, shaded scene, with the true hand masks: a
benchmark with known truth for refining MANO-rendered masks against the images.

What the images show, per frame (one world, seen by every camera alike):

- the true hands: the annotated MANO parameters plus a fit error (`true_motion`): per-joint
  axis-angle offsets of a few degrees (a bias per sequence and hand plus a drift correlated over
  about a third of a second), shape offsets and translation offsets of a few millimetres, and a
  skin lying one or two millimetres off the MANO surface (thicker or thinner all over, plus a
  smooth variation: what no MANO shape reproduces); scaled per frame so that the mean distance
  between the true and the annotated hand's 21 joints (InterHand2.6M's joint regressor, on both
  meshes) follows a smooth curve inside `JOINT_ERROR_RANGE_MM` (3.5-6.5 mm);
- a forearm continuing each hand from its open wrist (the same skin), with a sleeve over part of
  it and over the upper arm, up to the shoulder of a torso in a patterned shirt (stripes, plaid,
  prints, folds) behind the hands; the capture's cameras are placed around the person's front and
  sides (none behind its back: `capture._horseshoe`), yet a body or an arm hides part of a hand in
  some views;
- in one-hand sequences, the other hand and arm of the person, lower down and behind (a distractor:
  not a hand of the sequence);
- shading: diffuse and specular light from a key light (with shadows) and a fill light, ambient
  light, textured skin (low-frequency colour variation, creases, pores), a per-camera exposure that
  saturates highlights, a dark studio background with bright light spots and the dome's bars,
  optical blur, sensor noise; stored as JPEG (grey in mono cameras) as in the plain mode.

The true masks are written beside the dataset, not in its layout:

    <basedir>/synthetic_truth/<split>/Capture<N>/<seq>/cam<id>/image<frame>.png   (`truth_mask_path`)

uint8 (H, W) labels: 0 background, 100 left hand, 200 right hand, exactly the pixels whose centre
(OpenCV convention: pixel = focal * X_cam[:2] / X_cam[2] + princpt at integer coordinates) sees a
true hand of the sequence as the nearest surface. The label follows the visible hand where the
hands touch or occlude each other; a forearm, sleeve, the distractor hand or anything else in front
of a hand makes those pixels background, and the forearm (which starts at the hand mesh's open wrist
boundary) is never hand. A truth mask is written for every image written (black frames included:
the truth is geometric); a hand whose MANO entry is null is still drawn and still in the truth.

The images are rendered in worker processes (so that the calling process never imports pyrender
and keeps its OpenGL platform free): one OpenGL pass per view gives the nearest face at every pixel
centre (pyrender, on the platform `render-mesh --backend auto` would choose), the rest is computed
in numpy from the exact ray-triangle intersections (deferred shading). Everything is deterministic
for a given spec, whatever the number of workers.
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TRUTH_FOLDER = "synthetic_truth"
FIT_ERROR_STREAM = 2606  # this mode's random stream: np.random.default_rng([spec.seed, FIT_ERROR_STREAM])
JOINT_ERROR_RANGE_MM = (3.5, 6.5)  # mean true-vs-annotated joint error of every frame and hand
TRUTH_LABELS = {"left": 100, "right": 200}

# -- fit error (radians, metres, unit-scale before the per-frame scaling to the target error)
GLOBAL_SIGMA = 0.012          # global orientation offset
FINGER_SIGMA = 0.09           # finger joints: bias per sequence
FINGER_DRIFT = 0.04           # finger joints: smooth drift
TRANS_SIGMA = 0.0015          # translation bias per axis
TRANS_DRIFT = 0.0007          # translation drift per axis
SHAPE_SIGMA = 0.35            # betas
DRIFT_FRAMES = 10.0           # correlation length of the drifts (frames at 30 fps)
SURFACE_INFLATE_MM = (0.9, 1.9)  # true surface off MANO's shape space: thicker or thinner all over,
SURFACE_OFFSET_MM = 0.6       # plus a smooth variation along the normals

# -- the person (millimetres, world: y down)
TORSO_DISTANCE = (230.0, 300.0)   # hands centre to the torso's front, horizontally
TORSO_HALF_WIDTH = 175.0
TORSO_HALF_DEPTH = 115.0
FOREARM_LENGTH = 255.0
UPPER_ARM_LENGTH = 290.0

SKIN_TONES = np.array([[236, 196, 170], [226, 178, 146], [205, 152, 118], [180, 128, 95], [140, 95, 70],
                       [110, 75, 55]], float) / 255.0
SKIN_TONE_P = np.array([0.2, 0.3, 0.2, 0.15, 0.1, 0.05])
CLOTH_COLOURS = np.array([
    [22, 22, 26], [238, 238, 232], [34, 44, 92], [118, 118, 124], [168, 32, 36], [40, 92, 52], [200, 178, 148],
    [148, 180, 212], [214, 166, 146], [228, 196, 64], [98, 68, 50], [88, 60, 118], [60, 60, 64], [180, 140, 110],
    [236, 120, 90], [20, 60, 70]], float) / 255.0
# how often each is drawn: dark clothes most often, skin-like ones (beige, pink, tan, orange) least
CLOTH_WEIGHTS = np.array([1.6, 1.0, 1.6, 1.0, 1.0, 1.0, 0.6, 1.0, 0.6, 1.0, 1.0, 1.0, 1.6, 0.6, 0.6, 1.6])
PATTERNS = ("stripes", "plaid", "print", "solid", "stripes", "plaid", "print")
SKIN, CLOTH = 0, 1


def truth_mask_path(basedir: str | Path, split: str, capture: int, seq: str, cam: str, frame: int) -> Path:
    """<basedir>/synthetic_truth/<split>/Capture<N>/<seq>/cam<id>/image<frame>.png"""
    return (Path(basedir) / TRUTH_FOLDER / split / f"Capture{int(capture)}" / seq / f"cam{cam}"
            / f"image{int(frame):04d}.png")


# ---------------------------------------------------------------------------------------------
# The fit error


def smooth_noise(rng: np.random.Generator, n: int, shape: tuple, frames: float) -> np.ndarray:
    """Gaussian noise (n, *shape), unit variance, correlated over about `frames` frames."""
    from scipy.ndimage import gaussian_filter1d

    pad = int(4 * frames) + 1
    white = rng.normal(size=(n + 2 * pad,) + tuple(shape))
    smooth = gaussian_filter1d(white, frames, axis=0, mode="wrap")[pad:pad + n]
    return smooth * np.sqrt(2.0 * np.sqrt(np.pi) * frames)


@dataclass
class TrueHands:
    """The true hands of a sequence: {hand: (pose Nx48, shape Nx10, trans Nx3)}, their vertices
    {hand: NxVx3 metres} and the mean joint error to the annotated fit {hand: N mm}."""

    params: dict
    vertices: dict
    joint_error: dict


def true_motion(models: dict, regressor: np.ndarray, motion: dict, fitted_joints: dict,
                rng: np.random.Generator) -> TrueHands:
    """The true hands behind annotated MANO parameters `motion` {hand: (pose, shape, trans)} whose
    regressed joints are `fitted_joints` {hand: Nx21x3 mm}."""
    from ..core.fit_quality import regress_joints
    from ..core.mano_forward import forward

    params, vertices, errors = {}, {}, {}
    for hand, (pose, shape, trans) in motion.items():
        n = len(pose)
        model = models[hand]
        sigma = np.full((16, 1), FINGER_SIGMA)
        sigma[0] = GLOBAL_SIGMA
        drift = np.full((16, 1), FINGER_DRIFT)
        drift[0] = GLOBAL_SIGMA / 2
        d_pose = (rng.normal(size=(1, 16, 3)) * sigma + smooth_noise(rng, n, (16, 3), DRIFT_FRAMES) * drift)
        d_pose = d_pose.reshape(n, 48)
        d_shape = np.broadcast_to(rng.normal(scale=SHAPE_SIGMA, size=(1, shape.shape[1])), shape.shape)
        d_trans = rng.normal(scale=TRANS_SIGMA, size=(1, 3)) + smooth_noise(rng, n, (3,), DRIFT_FRAMES) * TRANS_DRIFT
        lo, hi = JOINT_ERROR_RANGE_MM
        centre = rng.uniform(lo + 0.5, hi - 1.9)
        target = np.clip(centre + 0.5 * smooth_noise(rng, n, (), 2 * DRIFT_FRAMES), lo + 0.3, hi - 0.3)
        surface = _surface_offset(model, rng)

        def posed(scale):
            k = scale[:, None]
            p = (pose + k * d_pose, shape + k * d_shape, trans + k * d_trans)
            verts = forward(model, *p).vertices
            verts = verts + surface * _vertex_normals_batch(verts, model.faces)
            return p, verts, np.linalg.norm(regress_joints(regressor, verts) - fitted_joints[hand], axis=2).mean(1)

        scale = np.ones(n)
        for _ in range(8):  # the error grows nearly linearly with the offsets' scale
            _, _, error = posed(scale)
            scale = scale * target / np.maximum(error, 1e-6)
        params[hand], vertices[hand], errors[hand] = posed(scale)
    return TrueHands(params, vertices, errors)


def _surface_offset(model, rng) -> np.ndarray:
    """(V, 1) metres along the normals: how the true skin lies off the best MANO surface, which no
    MANO shape reproduces: thicker or thinner all over by SURFACE_INFLATE_MM (either sign), plus a
    smooth variation of about SURFACE_OFFSET_MM."""
    v = model.v_template
    freq = rng.normal(scale=1.0 / 0.03, size=(3, 3))
    phase = rng.uniform(0, 2 * np.pi, 3)
    inflate = rng.uniform(*SURFACE_INFLATE_MM) * rng.choice([-1.0, 1.0])
    wave = SURFACE_OFFSET_MM * np.sin(v @ freq + phase).mean(1, keepdims=True) * np.sqrt(2)
    return (inflate + wave) / 1000.0


def _vertex_normals_batch(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[:, faces]
    fn = np.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])
    normals = np.zeros_like(vertices)
    for c in range(3):
        np.add.at(normals, (slice(None), faces[:, c]), fn)
    return normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    return _vertex_normals_batch(vertices[None], faces)[0]


# ---------------------------------------------------------------------------------------------
# Geometry: parts of a frame


@dataclass
class Part:
    """One surface: vertices Vx3 (metres, world), faces Fx3, texture coordinates Vx3 (mm), a
    material index, a truth label (0, 100, 200) and whether both of its sides can be seen."""

    vertices: np.ndarray
    faces: np.ndarray
    tex: np.ndarray
    material: int
    label: int = 0
    two_sided: bool = True


def boundary_loop(faces: np.ndarray) -> np.ndarray:
    """The longest closed boundary loop of a mesh (the MANO wrist), vertex ids in order."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    keys = {(int(a), int(b)) for a, b in edges}
    nxt = {a: b for a, b in keys if (b, a) not in keys}
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        while nxt[loop[-1]] != start and nxt[loop[-1]] not in seen:
            loop.append(nxt[loop[-1]])
            seen.add(loop[-1])
        loops.append(loop)
    return np.array(max(loops, key=len))


def _chaikin(points: np.ndarray, rounds: int = 3) -> np.ndarray:
    for _ in range(rounds):
        a, b = points[:-1], points[1:]
        mid = np.stack([0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b], 1).reshape(-1, 3)
        points = np.concatenate([points[:1], mid, points[-1:]])
    return points


def _resample(points: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    target = np.linspace(0, s[-1], max(2, int(np.ceil(s[-1] / step)) + 1))
    return np.stack([np.interp(target, s, points[:, k]) for k in range(3)], 1), target


def _rotation_minimizing_frames(path: np.ndarray, first: np.ndarray) -> np.ndarray:
    """(n, 3, 3) frames [e1, e2, t] along `path`, e1 transported from `first` (double reflection)."""
    t = np.gradient(path, axis=0)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    e1 = [first - first.dot(t[0]) * t[0]]
    e1[0] /= np.linalg.norm(e1[0])
    for i in range(len(path) - 1):
        v1 = path[i + 1] - path[i]
        c1 = v1.dot(v1)
        r_l = e1[-1] - (2 / c1) * v1.dot(e1[-1]) * v1
        t_l = t[i] - (2 / c1) * v1.dot(t[i]) * v1
        v2 = t[i + 1] - t_l
        c2 = v2.dot(v2)
        r = r_l - (2 / c2) * v2.dot(r_l) * v2 if c2 > 1e-16 else r_l
        e1.append(r / np.linalg.norm(r))
    e1 = np.array(e1)
    e2 = np.cross(t, e1)
    return np.stack([e1, e2, t], 1)


def _tube_faces(rings: int, around: int) -> np.ndarray:
    i, k = np.meshgrid(np.arange(rings - 1), np.arange(around), indexing="ij")
    a, b = i * around + k, i * around + (k + 1) % around
    c, d = (i + 1) * around + (k + 1) % around, (i + 1) * around + k
    return np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)], 1).reshape(-1, 3)


@dataclass
class ArmLook:
    """One arm's proportions (mm) and sleeve: where it starts (distance from the wrist) and how
    much wider than the arm it is."""

    forearm_growth: float
    upper_radius: float
    sleeve_start: float
    sleeve_gap: float
    wrinkle_phase: float


def arm_parts(hand_vertices_m: np.ndarray, ring: np.ndarray, shoulder: np.ndarray,
              elbow_pole: np.ndarray, look: ArmLook, skin_material: int, sleeve_material: int) -> list[Part]:
    """The forearm (from the hand's open wrist boundary `ring`, sharing its vertices), the upper arm
    up to `shoulder` (mm) and the sleeve over part of them."""
    v = hand_vertices_m * 1000.0
    ring_pts = v[ring]
    centre = ring_pts.mean(0)
    _, _, vt = np.linalg.svd(ring_pts - centre)
    axis = vt[2] if vt[2].dot(centre - v.mean(0)) > 0 else -vt[2]
    wrist_dir = axis
    # elbow: two-link chain from the wrist to the shoulder, bent towards the pole
    to_shoulder = shoulder - centre
    d = np.linalg.norm(to_shoulder)
    u = to_shoulder / d
    lf, lu = FOREARM_LENGTH, UPPER_ARM_LENGTH
    if d >= lf + lu - 1.0:
        elbow = centre + u * d * lf / (lf + lu)
    else:
        along = (d * d + lf * lf - lu * lu) / (2 * d)
        h = np.sqrt(max(lf * lf - along * along, 0.0))
        pole = elbow_pole - elbow_pole.dot(u) * u
        pole /= max(np.linalg.norm(pole), 1e-9)
        elbow = centre + along * u + h * pole
    control = np.array([centre, centre + wrist_dir * 55.0, centre + wrist_dir * 55.0 + (elbow - centre) * 0.35, elbow,
                        shoulder])
    path, s = _resample(_chaikin(control, 3), 9.0)
    path[0] = centre
    offsets = ring_pts - centre
    frames = _rotation_minimizing_frames(path, offsets[0])
    local = np.einsum("kd,ed->ke", offsets, frames[0])  # (k, 3): e1, e2, t components
    angle = np.arctan2(local[:, 1], local[:, 0])
    r0 = np.hypot(local[:, 0], local[:, 1])
    # an ellipse fitted to the ring's extent, growing along the forearm, round on the upper arm
    ra, rb = np.abs(local[:, 0]).max(), np.abs(local[:, 1]).max()
    s_elbow = s[np.argmin(np.linalg.norm(path - elbow, axis=1))]
    grow = 1.0 + (look.forearm_growth - 1.0) * np.clip(s / max(s_elbow, 1.0), 0, 1)
    up = np.clip((s - s_elbow) / 60.0, 0, 1)
    ea = (ra * grow) * (1 - up) + look.upper_radius * up
    eb = (rb * grow) * (1 - up) + look.upper_radius * 0.9 * up
    w = np.clip(s / 35.0, 0, 1)
    w = w * w * (3 - 2 * w)
    ellipse = np.stack([np.cos(angle)[None] * ea[:, None], np.sin(angle)[None] * eb[:, None]], -1)
    ring_xy = np.stack([local[:, 0], local[:, 1]], -1)[None]
    xy = (1 - w)[:, None, None] * ring_xy + w[:, None, None] * ellipse
    tz = (1 - w)[:, None] * local[None, :, 2]
    arm = (path[:, None] + xy[..., :1] * frames[:, None, 0] + xy[..., 1:] * frames[:, None, 1]
           + tz[..., None] * frames[:, None, 2])
    arm[0] = ring_pts
    around = len(ring)
    tex_arm = np.stack([np.broadcast_to(angle * r0.mean(), arm.shape[:2]), np.broadcast_to(s[:, None], arm.shape[:2]),
                        np.zeros(arm.shape[:2])], -1)
    parts = [Part(arm.reshape(-1, 3) / 1000.0, _tube_faces(len(path), around), tex_arm.reshape(-1, 3), skin_material)]
    start = int(np.searchsorted(s, look.sleeve_start))
    if start < len(path) - 2:
        n_around = 24
        phi = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
        ss = s[start:]
        wrinkle = (1.8 * np.sin(2 * np.pi * ss / 38.0 + look.wrinkle_phase)[:, None]
                   * (0.6 + 0.4 * np.cos(2 * phi + ss[:, None] / 50)))
        ra_s = ea[start:, None] + look.sleeve_gap + wrinkle
        rb_s = eb[start:, None] + look.sleeve_gap + wrinkle
        sx, sy = np.cos(phi)[None] * ra_s, np.sin(phi)[None] * rb_s
        sleeve = path[start:, None] + sx[..., None] * frames[start:, None, 0] + sy[..., None] * frames[start:, None, 1]
        tex = np.stack([np.broadcast_to(phi * (ea[start:, None] + look.sleeve_gap), sleeve.shape[:2]),
                        np.broadcast_to(ss[:, None], sleeve.shape[:2]), np.zeros(sleeve.shape[:2])], -1)
        parts.append(Part(sleeve.reshape(-1, 3) / 1000.0, _tube_faces(len(ss), n_around), tex.reshape(-1, 3),
                          sleeve_material))
    return parts


def torso_parts(centre: np.ndarray, facing: np.ndarray, right: np.ndarray, top_y: float, bottom_y: float,
                folds: list, material: int) -> list[Part]:
    """The torso in its shirt: a closed elliptic cylinder (mm) with cloth folds and shoulders
    rounded down to the sides, closed at the top, facing `facing`; one-sided (it is closed)."""
    n_phi, n_y = 72, 44
    phi = np.linspace(-np.pi / 2, 1.5 * np.pi, n_phi, endpoint=False)  # the texture's seam at the back
    y = np.linspace(top_y, bottom_y, n_y)
    P, Y = np.meshgrid(phi, y, indexing="ij")
    fold = sum(a * np.sin(k * P + fy * (Y - top_y) / 100 + ph) for a, k, fy, ph in folds)
    shoulder = np.clip(1 - (Y - top_y) / 70.0, 0, 1) ** 2 * np.abs(np.cos(P)) ** 3 * 40.0
    down = np.array([0.0, 1.0, 0.0])
    pts = (centre + ((TORSO_HALF_WIDTH + fold) * np.cos(P))[..., None] * right
           + ((TORSO_HALF_DEPTH + fold) * np.sin(P))[..., None] * facing + (Y - centre[1] + shoulder)[..., None] * down)
    verts = pts.reshape(-1, 3)
    i, k = np.meshgrid(np.arange(n_phi), np.arange(n_y - 1), indexing="ij")
    a, b = i * n_y + k, ((i + 1) % n_phi) * n_y + k
    faces = np.concatenate([np.stack([a, b, b + 1], -1), np.stack([a, b + 1, a + 1], -1)], 1).reshape(-1, 3)
    arc = (P + np.pi / 2) * (TORSO_HALF_WIDTH + TORSO_HALF_DEPTH) / 2
    tex = np.stack([arc.ravel(), Y.ravel() - top_y, np.zeros(len(verts))], 1)
    body = Part(verts / 1000.0, _outward(verts, faces, centre), tex, material, two_sided=False)
    # the top: a fan from the top ring to a point above the centre, facing up
    ring = pts[:, 0]
    apex = centre + (top_y - 15.0 - centre[1]) * down
    cap_verts = np.concatenate([ring, apex[None]])
    cap_faces = np.stack([np.arange(n_phi), (np.arange(n_phi) + 1) % n_phi, np.full(n_phi, n_phi)], 1)
    normal = np.cross(cap_verts[cap_faces[:, 1]] - cap_verts[cap_faces[:, 0]],
                      cap_verts[cap_faces[:, 2]] - cap_verts[cap_faces[:, 0]])
    if normal[:, 1].mean() > 0:  # y points down: an upward normal has y < 0
        cap_faces = cap_faces[:, ::-1]
    rel = cap_verts - centre
    cap_tex = np.stack([rel @ right, rel @ facing, np.zeros(len(cap_verts))], 1)
    return [body, Part(cap_verts / 1000.0, cap_faces, cap_tex, material, two_sided=False)]


def _outward(verts: np.ndarray, faces: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Faces wound counter-clockwise seen from outside (away from the vertical axis through
    `centre`): OpenGL's front faces."""
    tri = verts[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out = tri.mean(1) - centre
    out[:, 1] = 0.0
    flip = np.einsum("fd,fd->f", normal, out) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, ::-1]
    return faces


# ---------------------------------------------------------------------------------------------
# The look of a capture and of a sequence: drawn once in the parent from this mode's stream


@dataclass
class Material:
    kind: int                     # SKIN or CLOTH
    colours: np.ndarray           # (3, 3) RGB in [0, 1]: base and pattern colours
    pattern: str = "solid"        # cloth: stripes, plaid, print, solid
    period: float = 20.0          # mm
    angle: float = 0.0            # radians
    fold_depth: float = 0.25
    fold_period: float = 60.0
    fold_angle: float = 0.0
    specular: float = 0.2
    shininess: float = 25.0
    texture_seed: int = 0


@dataclass
class Light:
    position: np.ndarray          # mm, world
    intensity: float
    colour: np.ndarray            # (3,)
    shadows: bool = False


@dataclass
class SequenceScene:
    """What stays the same over a sequence: materials, lights, the torso, arm proportions."""

    key: int
    materials: list
    lights: list
    ambient: float
    static: list                  # [Part]
    shoulders: dict               # hand -> (3,) mm
    elbow_pole: dict              # hand -> (3,) mm
    arms: dict                    # hand -> ArmLook
    skin_material: dict           # hand -> material index
    sleeve_material: int
    distractor: tuple | None      # (hand, pose (48,), shape (10,), trans (3,)) or None
    shadow_camera: tuple          # (R, T mm, half field of view in radians) at the shadowing light


@dataclass
class CameraLook:
    exposure: float
    gain: np.ndarray              # (3,)
    background_seed: int
    blur: float
    noise: float


def _skin_material(rng, tone: np.ndarray) -> Material:
    colours = np.stack([tone, tone * np.array([0.92, 0.82, 0.8]), tone * 0.75])  # base, redder, darker
    return Material(SKIN, colours, specular=rng.uniform(0.12, 0.28), shininess=rng.uniform(18, 40),
                    texture_seed=int(rng.integers(1 << 30)))


def _cloth_material(rng) -> Material:
    idx = rng.choice(len(CLOTH_COLOURS), 3, replace=False, p=CLOTH_WEIGHTS / CLOTH_WEIGHTS.sum())
    return Material(CLOTH, CLOTH_COLOURS[idx] * rng.uniform(0.85, 1.1, (3, 1)), pattern=str(rng.choice(PATTERNS)),
                    period=float(rng.uniform(6.0, 30.0)),
                    angle=float(rng.uniform(-0.4, 0.4) + rng.choice([0, np.pi / 2])),
                    fold_depth=float(rng.uniform(0.15, 0.4)), fold_period=float(rng.uniform(35, 90)),
                    fold_angle=float(rng.uniform(0, np.pi)), specular=float(rng.uniform(0.01, 0.06)), shininess=8.0,
                    texture_seed=int(rng.integers(1 << 30)))


def _unit(v):
    return v / np.linalg.norm(v)


def sequence_scene(key: int, hands: str, fitted_joints: dict, rng: np.random.Generator, person_yaw: float,
                   tone: np.ndarray) -> SequenceScene:
    """The person (torso, shoulders, arms), clothes and lights of one sequence around its hands
    (`fitted_joints` {hand: Nx21x3 mm}); `person_yaw`: where the person's back is (radians about
    the vertical, 0 = world +z); `tone`: the skin's RGB in [0, 1]."""
    centre = np.concatenate([j.reshape(-1, 3) for j in fitted_joints.values()]).mean(0)
    back = np.array([np.sin(person_yaw), 0.0, np.cos(person_yaw)])
    facing = -back
    up = np.array([0.0, -1.0, 0.0])
    down = -up
    right = np.cross(facing, up)  # the person's right: where the right hand is
    tone_l = tone * rng.uniform(0.96, 1.04, 3)
    materials = [_skin_material(rng, tone), _skin_material(rng, np.clip(tone_l, 0, 1)), _cloth_material(rng)]
    skin_material = {"right": 0, "left": 1}
    shirt = 2
    torso_centre = centre + back * (rng.uniform(*TORSO_DISTANCE) + TORSO_HALF_DEPTH)
    top_y = centre[1] - rng.uniform(110, 190)
    folds = [(rng.uniform(2, 7), int(rng.integers(2, 9)), rng.uniform(-4, 4), rng.uniform(0, 2 * np.pi))
             for _ in range(5)]
    static = torso_parts(torso_centre, facing, right, top_y, top_y + 720.0, folds, shirt)
    shoulders, poles, arms = {}, {}, {}
    for hand, side in (("right", 1.0), ("left", -1.0)):
        shoulders[hand] = (torso_centre + side * right * (TORSO_HALF_WIDTH - 45.0)
                           + down * (top_y + 45.0 - torso_centre[1]))
        poles[hand] = _unit(down + 0.6 * side * right + 0.3 * back)
        long_sleeve = rng.random() < 0.7
        arms[hand] = ArmLook(forearm_growth=rng.uniform(1.25, 1.45), upper_radius=rng.uniform(40, 50),
                             sleeve_start=rng.uniform(55, 170) if long_sleeve else rng.uniform(300, 380),
                             sleeve_gap=rng.uniform(5, 11), wrinkle_phase=rng.uniform(0, 2 * np.pi))
    # lights: a key light above, on a random side, and a fill light
    az = rng.uniform(0, 2 * np.pi)
    el = rng.uniform(0.5, 1.2)
    key_dir = np.array([np.cos(el) * np.sin(az), -np.sin(el), np.cos(el) * np.cos(az)])
    az2 = az + np.pi + rng.uniform(-0.8, 0.8)
    el2 = rng.uniform(0.1, 0.8)
    fill_dir = np.array([np.cos(el2) * np.sin(az2), -np.sin(el2), np.cos(el2) * np.cos(az2)])
    lights = [Light(centre + key_dir * 1400.0, rng.uniform(0.85, 1.05), np.array([1.0, 0.97, 0.92]), shadows=True),
              Light(centre + fill_dir * 1400.0, rng.uniform(0.3, 0.5), np.array([0.92, 0.96, 1.0]))]
    distractor = None
    if hands != "both":
        other = "left" if hands == "right" else "right"
        side = 1.0 if other == "right" else -1.0
        fingers = _unit(-side * right + 0.5 * down)
        z_axis = -_unit(back - back.dot(fingers) * fingers)  # model -z (palm) towards the torso
        x_axis = np.cross(fingers, z_axis)
        from scipy.spatial.transform import Rotation

        orient = Rotation.from_matrix(np.stack([x_axis, fingers, z_axis], 1)).as_rotvec()
        from .hand import finger_flexion_pose

        flexion = rng.uniform(0.3, 0.9, (1, 5, 3)) * np.array([0.5, 1, 1, 1, 1])[None, :, None]
        pose = np.concatenate([orient, finger_flexion_pose(flexion, other)[0]])
        wrist = (centre + down * rng.uniform(260, 340) + back * rng.uniform(120, 180)
                 + side * right * rng.uniform(60, 140))
        distractor = (other, pose, rng.normal(scale=0.5, size=10), wrist / 1000.0)
    # the shadow camera: at the key light, looking at the hands
    from ..core.cameras import look_at_rotation

    R = look_at_rotation(lights[0].position[None], centre[None], np.array([[1.0, 0.0, 0.0]])
                         if abs(key_dir[0]) < 0.9 else np.array([[0.0, 0.0, 1.0]]))[0]
    T = -R @ lights[0].position
    return SequenceScene(key, materials, lights, rng.uniform(0.22, 0.32), static, shoulders, poles, arms, skin_material,
                         shirt, distractor, (R, T, SHADOW_HALF_FOV))


def camera_looks(n: int, rng: np.random.Generator) -> list[CameraLook]:
    return [CameraLook(exposure=float(rng.uniform(0.95, 1.35)), gain=rng.uniform(0.94, 1.06, 3),
                       background_seed=int(rng.integers(1 << 30)), blur=float(rng.uniform(0.7, 1.2)),
                       noise=float(rng.uniform(2.0, 4.0))) for _ in range(n)]


def frame_parts(scene: SequenceScene, hand_vertices: dict, faces: dict, rings: dict, tex: dict,
                distractor_vertices: np.ndarray | None) -> list[Part]:
    """The moving parts of a frame: the true hands (labelled), their arms, the distractor."""
    parts = []
    shown = dict(hand_vertices)
    for hand, verts in shown.items():
        parts.append(Part(verts, faces[hand], tex[hand], scene.skin_material[hand], TRUTH_LABELS[hand]))
    arms = dict(shown)
    if distractor_vertices is not None:
        other = scene.distractor[0]
        parts.append(Part(distractor_vertices, faces[other], tex[other], scene.skin_material[other], 0))
        arms[other] = distractor_vertices
    for hand, verts in arms.items():
        parts += arm_parts(verts, rings[hand], scene.shoulders[hand], scene.elbow_pole[hand],
                           scene.arms[hand], scene.skin_material[hand], scene.sleeve_material)
    return parts


# ---------------------------------------------------------------------------------------------
# Rendering (worker processes)


@dataclass
class RenderTask:
    """One frame to render: its sequence's scene, the moving parts, (sequence number, frame id)
    (which seed the per-view noise) and the indices of the cameras to render."""

    scene: SequenceScene
    parts: list
    index: tuple
    cameras: list


@dataclass
class _StaticView:
    """What the static parts (the torso) look like from one camera, computed once per sequence:
    the colour without and with the shadowing light's share (H, W, 3), and where each static
    pixel lies in the shadow camera (H, W, 3: u, v px, z mm)."""

    unshadowed: np.ndarray
    shadowed_share: np.ndarray
    light_uvz: np.ndarray


@dataclass
class _WorkerState:
    rig: tuple = None             # (ids, K, R, T, sizes, looks, seed)
    renderer: object = None
    textures: dict = field(default_factory=dict)
    backgrounds: dict = field(default_factory=dict)
    scene_key: int | None = None
    static_geometry: object = None
    static_views: dict = field(default_factory=dict)


_STATE = _WorkerState()


def _init_worker(rig: tuple) -> None:
    _STATE.rig = rig


def render_frame(task: RenderTask) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image HxWx3 uint8, truth HxW uint8) of each camera of the task."""
    ids, K, R, T, sizes, looks, seed = _STATE.rig
    if _STATE.renderer is None:
        _STATE.renderer = _IdRenderer(ids, K, R, T, sizes)
    renderer = _STATE.renderer
    scene = task.scene
    if _STATE.scene_key != scene.key:
        renderer.set_static(scene.static)
        _STATE.static_geometry = _Geometry(scene.static)
        _STATE.static_views = {}
        _STATE.scene_key = scene.key
    static = _STATE.static_geometry
    dynamic = _Geometry(task.parts)
    renderer.set_dynamic(task.parts)
    shadow = None
    Rs, Ts, half_fov = scene.shadow_camera
    Ks = renderer.square_intrinsics(half_fov)
    if task.parts and any(light.shadows for light in scene.lights):
        shadow = _ShadowMap(Ks, Rs, Ts, renderer.shadow_depth(Ks, Rs, Ts))
    out = []
    for c in task.cameras:
        view = _STATE.static_views.get(c)
        if view is None:
            view = _STATE.static_views[c] = _static_view(renderer.faces(c, static_only=True), static, scene, K[c], R[c],
                                                         T[c], sizes[c], (Ks, Rs, Ts))
        face = renderer.faces(c)
        rng = np.random.default_rng([seed, FIT_ERROR_STREAM, task.index[0], task.index[1], c])
        out.append(_compose(face, view, static, dynamic, scene, K[c], R[c], T[c], sizes[c], looks[c], shadow, rng))
    return out


class _IdRenderer:
    """The nearest face at every pixel centre, one OpenGL pass per view (pyrender, flat colours
    that encode 1 + the face's index: static faces first, then the moving ones).

    One offscreen buffer as large as the largest view in each direction serves every view (a
    view is the top-left (w, h) of it: the same intrinsics put every pixel centre where a
    buffer of the view's own size would) and the shadow camera, so that OSMesa's buffer is never
    recreated. Three scenes share the meshes: all parts, the static parts only (a sequence's
    background), the moving parts only (what casts shadows)."""

    def __init__(self, ids, K, R, T, sizes):
        from ..core import gl_platform, gl_renderer, pyrender_adapter

        gl_platform.select_platform("auto")  # sets PYOPENGL_PLATFORM before pyrender's first import here
        import pyrender

        pyrender_adapter.stable_context_ids()
        self.pr = pyrender
        self.buffer = (max(int(w) for w, _ in sizes), max(int(h) for _, h in sizes))
        self.sizes = [tuple(int(v) for v in s) for s in sizes]
        self.scenes = {name: pyrender.Scene(bg_color=(0, 0, 0, 0), ambient_light=(0, 0, 0))
                       for name in ("all", "static", "dynamic")}
        self._pose = gl_renderer.camera_pose_opengl
        self._z = (gl_renderer.Z_NEAR, gl_renderer.Z_FAR)
        self.cams = {name: [self.scenes[name].add(self._camera(K[c]), pose=self._pose(R[c], T[c]))
                            for c in range(len(ids))] for name in ("all", "static")}
        self.offscreen = pyrender.OffscreenRenderer(*self.buffer)
        self.static_meshes, self.dynamic_meshes = [], []
        self.nodes = {name: [] for name in self.scenes}
        self.num_static = 0
        self.shadow_node = None

    def _camera(self, K):
        return self.pr.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, znear=self._z[0],
                                        zfar=self._z[1])

    def _meshes(self, parts: list, offset: int) -> list:
        pr = self.pr
        meshes = []
        for two_sided in (True, False):
            positions, colours = [], []
            start = offset
            for p in parts:
                if p.two_sided == two_sided:
                    ident = np.arange(start, start + len(p.faces)) + 1
                    rgb = np.stack([ident & 255, (ident >> 8) & 255, (ident >> 16) & 255, np.full_like(ident, 255)], 1)
                    positions.append(p.vertices[p.faces].reshape(-1, 3))
                    colours.append(np.repeat(rgb, 3, axis=0))
                start += len(p.faces)
            if not positions:
                continue
            positions = np.concatenate(positions).astype(np.float32)
            material = pr.MetallicRoughnessMaterial(baseColorFactor=[1.0, 1.0, 1.0, 1.0], doubleSided=two_sided)
            primitive = pr.Primitive(positions=positions, color_0=np.concatenate(colours).astype(np.uint8),
                                     material=material, mode=pr.GLTF.TRIANGLES,
                                     indices=np.arange(len(positions), dtype=np.uint32).reshape(-1, 3))
            meshes.append(pr.Mesh([primitive]))
        return meshes

    def _place(self, names: tuple, meshes: list, kind: str) -> None:
        for name in names:
            for node in [n for n in self.nodes[name] if n.name == kind]:
                self.scenes[name].remove_node(node)
            self.nodes[name] = [n for n in self.nodes[name] if n.name != kind]
            for mesh in meshes:
                node = self.pr.Node(name=kind, mesh=mesh)
                self.scenes[name].add_node(node)
                self.nodes[name].append(node)

    def set_static(self, parts: list) -> None:
        self.num_static = sum(len(p.faces) for p in parts)
        self._place(("all", "static"), self._meshes(parts, 0), "static")

    def set_dynamic(self, parts: list) -> None:
        self._place(("all", "dynamic"), self._meshes(parts, self.num_static), "dynamic")

    def faces(self, c: int, static_only: bool = False) -> np.ndarray:
        """(H, W) int64 of camera c: 1 + the index of the face nearest at each pixel centre, 0 for
        none (static faces first, then the moving ones)."""
        name = "static" if static_only else "all"
        scene = self.scenes[name]
        scene.main_camera_node = self.cams[name][c]
        colour, _ = self.offscreen.render(scene, flags=self.pr.RenderFlags.FLAT)
        w, h = self.sizes[c]
        colour = colour[:h, :w].astype(np.int64)
        return colour[..., 0] | (colour[..., 1] << 8) | (colour[..., 2] << 16)

    def square_intrinsics(self, half_fov: float) -> np.ndarray:
        """K of a camera that sees `half_fov` (radians) about its axis across the buffer's smaller side."""
        w, h = self.buffer
        f = min(w, h) / 2 / np.tan(half_fov)
        return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])

    def shadow_depth(self, K, R, T) -> np.ndarray:
        """Depth (z, mm; 0 = nothing) of the moving parts seen from the shadow camera (the buffer's
        size)."""
        scene = self.scenes["dynamic"]
        if self.shadow_node is None:
            self.shadow_node = scene.add(self._camera(K), pose=self._pose(R, T))
        else:
            self.shadow_node.camera = self._camera(K)
            scene.set_pose(self.shadow_node, self._pose(R, T))
        scene.main_camera_node = self.shadow_node
        depth = self.offscreen.render(scene, flags=self.pr.RenderFlags.DEPTH_ONLY)
        return np.asarray(depth, dtype=np.float32) * 1000.0


class _Geometry:
    """The faces of some parts in one array (face k of the parts is row k), with their materials,
    labels, vertex normals and texture coordinates (millimetres)."""

    def __init__(self, parts: list):
        verts, faces, tex, normals, mat, label = [], [], [], [], [], []
        base = 0
        for p in parts:
            verts.append(p.vertices * 1000.0)
            faces.append(p.faces + base)
            tex.append(p.tex.astype(np.float32))
            normals.append(vertex_normals(p.vertices, p.faces).astype(np.float32))
            mat.append(np.full(len(p.faces), p.material))
            label.append(np.full(len(p.faces), p.label))
            base += len(p.vertices)
        self.num_faces = sum(len(p.faces) for p in parts)
        if not parts:
            return
        self.vertices = np.concatenate(verts)
        self.faces = np.concatenate(faces)
        self.tex = np.concatenate(tex)
        self.normals = np.concatenate(normals)
        self.material = np.concatenate(mat)
        self.label = np.concatenate(label).astype(np.uint8)


@dataclass
class _ShadowMap:
    K: np.ndarray
    R: np.ndarray
    T: np.ndarray
    depth: np.ndarray             # (h, w) mm, 0 = nothing

    def __post_init__(self):
        from scipy.ndimage import maximum_filter

        self.near = maximum_filter(self.depth > 0, size=3)  # where a 3x3 lookup can meet an occluder

    def project(self, P: np.ndarray) -> np.ndarray:
        cam = P @ self.R.T + self.T
        z = cam[:, 2]
        return np.stack([self.K[0, 0] * cam[:, 0] / z + self.K[0, 2], self.K[1, 1] * cam[:, 1] / z + self.K[1, 2], z],
                        1)

    def lit(self, uvz: np.ndarray) -> np.ndarray:
        """Share (0-1) of a 3x3 neighbourhood of the map from which each point (u, v, z) is lit."""
        h, w = self.depth.shape
        x = np.rint(uvz[:, 0]).astype(np.int64)
        y = np.rint(uvz[:, 1]).astype(np.int64)
        lit = np.ones(len(uvz), np.float32)
        inside = (x >= 1) & (x < w - 1) & (y >= 1) & (y < h - 1)
        idx = np.nonzero(inside)[0]
        idx = idx[self.near[y[idx], x[idx]]]
        if not len(idx):
            return lit
        xs, ys, z = x[idx], y[idx], uvz[idx, 2]
        count = np.zeros(len(idx), np.float32)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                occ = self.depth[ys + dy, xs + dx]
                count += (occ <= 0) | (z <= occ + SHADOW_BIAS_MM)
        lit[idx] = count / 9.0
        return lit


SHADOW_BIAS_MM = 4.0
SHADOW_HALF_FOV = np.radians(14.0)  # the shadow camera, 1.4 m from the hands, sees about 0.7 m across


# ---------------------------------------------------------------------------------------------
# Shading


def _noise_texture(rng: np.random.Generator, size: int, sigma: tuple, channels: int = 1) -> np.ndarray:
    """Tileable Gaussian-filtered noise (size, size, channels), zero mean, unit std; sigma (sy, sx) texels."""
    white = rng.normal(size=(channels, size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    g = np.exp(-2 * np.pi ** 2 * ((sigma[0] * fy) ** 2 + (sigma[1] * fx) ** 2))
    out = np.fft.irfft2(np.fft.rfft2(white) * g, s=(size, size))
    out = (out - out.mean(axis=(1, 2), keepdims=True)) / out.std(axis=(1, 2), keepdims=True)
    return np.moveaxis(out, 0, -1)


def _sample(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping: tex (S, S, C) at texel coordinates u (x), v (y) -> (N, C)."""
    size = tex.shape[0]
    x0, y0 = np.floor(u), np.floor(v)
    fx, fy = (u - x0).astype(np.float32)[:, None], (v - y0).astype(np.float32)[:, None]
    x0, y0 = x0.astype(np.int64) % size, y0.astype(np.int64) % size
    x1, y1 = (x0 + 1) % size, (y0 + 1) % size
    return ((tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx) * (1 - fy) + (tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx) * fy)


SKIN_TILE_MM, CLOTH_TILE_MM = 256.0, 512.0  # the albedo textures' tiles (square, repeated)


def _texture_size() -> int:
    """Texels across a tile: 1024 for full-size images, fewer for small ones (tests)."""
    height = max(max(size) for size in _STATE.rig[4])
    return 1024 if height >= 384 else 512 if height >= 192 else 256


def _albedo_texture(m: Material) -> np.ndarray:
    """The material's albedo (with cloth folds) as a tiled (n, n, 3) float32 texture (n = _texture_size())."""
    key = (m.kind, m.texture_seed)
    tex = _STATE.textures.get(key)
    if tex is not None:
        return tex
    rng = np.random.default_rng(m.texture_seed)
    n = _texture_size()
    if m.kind == SKIN:
        s = n / SKIN_TILE_MM  # texels per mm
        low = _noise_texture(rng, n, (12 * s, 12 * s), 2)  # brightness and redness
        mid = _noise_texture(rng, n, (2.5 * s, 2.5 * s))[..., 0]
        fine = _noise_texture(rng, n, (0.3 * s, 0.3 * s))[..., 0]
        crease = _noise_texture(rng, n, (0.35 * s, 5.5 * s))[..., 0]
        lines = np.exp(-(crease / 0.18) ** 2)
        base = (m.colours[0] * (1 + 0.06 * low[..., :1])
                + (m.colours[1] - m.colours[0]) * np.clip(0.45 + 0.35 * low[..., 1:], 0, 1))
        tex = base * (1 + 0.05 * mid - 0.25 * lines + 0.035 * fine)[..., None]
    else:
        s = n / CLOTH_TILE_MM
        yy, xx = np.mgrid[0:n, 0:n] / s
        ca, cs = np.cos(m.angle), np.sin(m.angle)
        u, v = xx * ca - yy * cs, xx * cs + yy * ca
        c0, c1, c2 = m.colours
        if m.pattern == "stripes":
            a = (np.mod(u / m.period, 1.0) < 0.45)[..., None]
            col = np.where(a, c1, c0)
        elif m.pattern == "plaid":
            a = (np.mod(u / m.period, 1.0) < 0.3).astype(float)[..., None]
            b = (np.mod(v / (m.period * 1.3), 1.0) < 0.3).astype(float)[..., None]
            thin = (np.mod(u / m.period + 0.6, 1.0) < 0.06).astype(float)[..., None]
            col = c0 * (1 - 0.5 * a - 0.5 * b) + c1 * 0.5 * (a + b) + thin * (c2 - c0) * 0.7
        elif m.pattern == "print":
            blob = _noise_texture(rng, n, (m.period * 0.6 * s, m.period * 0.6 * s), 2)
            a = (blob[..., :1] > 1.0)
            b = (blob[..., 1:] > 1.2) & ~a
            col = np.where(a, c1, np.where(b, c2, c0))
        else:
            col = np.broadcast_to(c0, (n, n, 3))
        weave = _noise_texture(rng, n, (0.4 * s, 0.4 * s))[..., 0]
        warp = _noise_texture(rng, n, (20 * s, 20 * s))[..., 0]
        fa, fs = np.cos(m.fold_angle), np.sin(m.fold_angle)
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * fa + yy * fs) / m.fold_period + 1.5 * warp)
        tex = col * ((1 + 0.04 * weave) * (1 - m.fold_depth * wave ** 3))[..., None]
    tex = np.clip(tex, 0, 1).astype(np.float32)
    _STATE.textures[key] = tex
    return tex


def _albedo(m: Material, tex: np.ndarray) -> np.ndarray:
    t = _albedo_texture(m)
    if m.kind == SKIN:  # a slanted planar projection of the 3D texture coordinates
        s = len(t) / SKIN_TILE_MM
        return _sample(t, (tex[:, 0] + 0.6 * tex[:, 2]) * s, (tex[:, 1] - 0.3 * tex[:, 2]) * s)
    s = len(t) / CLOTH_TILE_MM
    return _sample(t, tex[:, 0] * s, tex[:, 1] * s)


def _background(seed: int, size: tuple) -> np.ndarray:
    """A dark studio seen by one camera (H, W, 3) float32 in [0, 255]: gradient, structure, lights."""
    key = (seed, size)
    if key in _STATE.backgrounds:
        return _STATE.backgrounds[key]
    w, h = size
    scale = h / PORTRAIT_HEIGHT if w < h else w / PORTRAIT_HEIGHT
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(14, 34)
    g = rng.normal(size=2) * 10 / max(w, h)
    img = base + g[0] * (xx - w / 2) + g[1] * (yy - h / 2)
    blotch = _noise_texture(rng, 64, (6.0, 6.0))[..., 0]
    img = img + 8.0 * _sample(blotch[..., None], xx.ravel() * 64 / max(w, h), yy.ravel() * 64 / max(w, h)).reshape(h, w)
    img = np.repeat(img[..., None], 3, axis=2) * rng.uniform(0.92, 1.08, 3)
    for _ in range(rng.integers(0, 4)):  # the dome's frame: faint straight bars
        angle = rng.uniform(0, np.pi)
        off = rng.uniform(-0.5, 0.5) * max(w, h)
        dist = np.abs((xx - w / 2) * np.cos(angle) + (yy - h / 2) * np.sin(angle) - off)
        img += (rng.uniform(10, 35) * np.exp(-(dist / (rng.uniform(2, 6) * scale)) ** 2))[..., None]
    for _ in range(rng.integers(1, 5)):  # lights of the dome: saturated spots with a glow
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(2, 10) * scale
        d = np.hypot(xx - cx, yy - cy)
        img += (400 * np.exp(-(d / r) ** 4) + rng.uniform(20, 70) * np.exp(-d / (3 * r)))[..., None]
    img = np.clip(img, 0, 255).astype(np.float32)
    _STATE.backgrounds[key] = img
    return img


PORTRAIT_HEIGHT = 512


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _normalize(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.sqrt(_dot(a, a)), 1e-12)[:, None]


def _shade(geo: _Geometry, fid: np.ndarray, xs: np.ndarray, ys: np.ndarray, scene: SequenceScene, K, R, T):
    """Colours of pixels (xs, ys) showing faces `fid` of `geo`: (without the shadowing light,
    that light's share) (N, 3) each in [0, 1] units, and the surface points (N, 3) mm."""
    origin = -R.T @ T
    d = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones(len(xs))], 1) @ R
    i0, i1, i2 = geo.faces[fid].T
    v0 = geo.vertices[i0]
    e1, e2 = geo.vertices[i1] - v0, geo.vertices[i2] - v0
    p = np.cross(d, e2)
    det = _dot(e1, p)
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    s = origin - v0
    b1 = _dot(s, p) / det
    q = np.cross(s, e1)
    b2 = _dot(d, q) / det
    t = _dot(e2, q) / det
    b1, b2 = np.clip(b1, 0, 1), np.clip(b2, 0, 1)
    total = np.maximum(b1 + b2, 1.0)
    b1, b2 = (b1 / total)[:, None], (b2 / total)[:, None]
    b0 = 1 - b1 - b2
    P = origin + t[:, None] * d
    b0, b1, b2 = b0.astype(np.float32), b1.astype(np.float32), b2.astype(np.float32)
    n = _normalize(b0 * geo.normals[i0] + b1 * geo.normals[i1] + b2 * geo.normals[i2])
    Pf = P.astype(np.float32)
    view = _normalize(origin.astype(np.float32) - Pf)
    n *= np.where(_dot(n, view) < 0, np.float32(-1.0), np.float32(1.0))[:, None]
    tex = b0 * geo.tex[i0] + b1 * geo.tex[i1] + b2 * geo.tex[i2]
    mat = geo.material[fid]
    albedo = np.empty((len(fid), 3), np.float32)
    spec_k, shin, wrap = (np.empty(len(fid), np.float32) for _ in range(3))
    for mi in range(len(scene.materials)):
        sel = mat == mi
        if not sel.any():
            continue
        m = scene.materials[mi]
        albedo[sel] = _albedo(m, tex[sel])
        wrap[sel] = 0.35 if m.kind == SKIN else 0.1
        spec_k[sel] = m.specular
        shin[sel] = m.shininess
    plain = albedo * np.float32(scene.ambient)
    shadowed = np.zeros_like(plain)
    for light in scene.lights:
        l = _normalize(light.position.astype(np.float32) - Pf)
        ndl = _dot(n, l)
        diffuse = np.clip((ndl + wrap) / (1 + wrap), 0, 1)
        hv = _normalize(l + view)
        spec = spec_k * np.clip(_dot(n, hv), 0, 1) ** shin * (ndl > 0)
        intensity = np.float32(light.intensity)
        colour = light.colour.astype(np.float32)
        share = (albedo * (intensity * diffuse)[:, None] + (intensity * spec)[:, None]) * colour
        if light.shadows:
            shadowed += share
        else:
            plain += share
    return plain, shadowed, P


def _static_view(face_ids, geo: _Geometry, scene: SequenceScene, K, R, T, size, shadow_camera) -> _StaticView:
    w, h = size
    unshadowed = np.zeros((h, w, 3), np.float32)
    share = np.zeros((h, w, 3), np.float32)
    uvz = np.zeros((h, w, 3), np.float32)
    ys, xs = np.nonzero(face_ids)
    if len(ys):
        plain, shadowed, P = _shade(geo, face_ids[ys, xs] - 1, xs, ys, scene, K, R, T)
        unshadowed[ys, xs] = plain
        share[ys, xs] = shadowed
        uvz[ys, xs] = _ShadowMap(*shadow_camera, np.zeros((1, 1), np.float32)).project(P)
    return _StaticView(unshadowed, share, uvz)


def _compose(face_ids, view: _StaticView, static: _Geometry, dynamic: _Geometry, scene: SequenceScene, K, R, T, size,
             look: CameraLook, shadow: _ShadowMap | None, rng) -> tuple[np.ndarray, np.ndarray]:
    """The camera's image (uint8 HxWx3) and true mask of a frame."""
    from scipy.ndimage import gaussian_filter

    w, h = size
    image = _background(look.background_seed, (w, h)).copy()
    truth = np.zeros((h, w), np.uint8)
    ys, xs = np.nonzero((face_ids > 0) & (face_ids <= static.num_faces))
    if len(ys):
        lit = shadow.lit(view.light_uvz[ys, xs]) if shadow is not None else 1.0
        colour = view.unshadowed[ys, xs] + np.asarray(lit, np.float32).reshape(-1, 1) * view.shadowed_share[ys, xs]
        image[ys, xs] = colour * 255.0
    ys, xs = np.nonzero(face_ids > static.num_faces)
    if len(ys):
        fid = face_ids[ys, xs] - 1 - static.num_faces
        truth[ys, xs] = dynamic.label[fid]
        plain, shadowed, P = _shade(dynamic, fid, xs, ys, scene, K, R, T)
        lit = shadow.lit(shadow.project(P)) if shadow is not None else np.ones(len(P), np.float32)
        image[ys, xs] = (plain + lit[:, None] * shadowed) * 255.0
    image *= np.float32(look.exposure) * look.gain.astype(np.float32)
    image = gaussian_filter(image, (look.blur, look.blur, 0), truncate=3.0)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(look.noise)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), truth


# ---------------------------------------------------------------------------------------------
# The pool


class FrameRenderer:
    """Renders frames in worker processes, in order, a few frames ahead of the consumer."""

    def __init__(self, cameras, sizes: list, looks: list, seed: int, workers: int = 0):
        import multiprocessing

        from ..core.locking import usable_cpus

        workers = workers or usable_cpus()
        rig = (list(cameras.ids), np.asarray(cameras.K), np.asarray(cameras.R), np.asarray(cameras.T), list(sizes),
               looks, seed)
        # forked workers start at once and need no importable __main__; a process that has
        # imported OpenGL already (its platform fixed, maybe a context open) spawns fresh ones
        fresh = "OpenGL" in sys.modules or "pyrender" in sys.modules
        context = multiprocessing.get_context("spawn" if fresh else "fork")
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                        initargs=(rig,))
        self.window = 2 * workers

    def map(self, tasks):
        """Results of `render_frame` for each task of the iterable, in order."""
        pending = []
        for task in tasks:
            pending.append(self.pool.submit(render_frame, task))
            if len(pending) >= self.window:
                yield pending.pop(0).result()
        while pending:
            yield pending.pop(0).result()

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
