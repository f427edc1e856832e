"""A synthetic MANO-format hand model, written as MANO_RIGHT.pkl / MANO_LEFT.pkl.

The official MANO files cannot be redistributed, so the demo and the tests use this stand-in. It
has the official keys, array shapes and kinematic tree (778 vertices, 1538 faces, an open wrist
with a 16-vertex boundary, 16 joints), and it is stored the way the official files are: protocol-2
pickles whose `shapedirs` is a chumpy `Select` over a `Ch`, a scipy csc `J_regressor`, a uint32
`kintree_table` with root parent 4294967295, and the left file with the known `shapedirs[:, 0, :]`
defect, carrying float noise like the official file's (never bit-identical to the right model's).
It therefore goes through exactly the loader the official files go through.

Geometry (metres, model frame): the wrist joint at the origin, fingers along +y, palm width
along x, the palmar side towards -z; the right thumb on the -x side. The palm is a tube of rings
closed by a cap; each finger and the thumb is a tube grown from a hole in that surface, so the
mesh is one connected manifold.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse

from ..core.fileio import write_bytes
from ..core.mano import PARENTS, model_filename

# Topology constants, chosen so the counts equal the official model's (see `_count_check`).
WRIST_RING = 16          # vertices of the open wrist boundary
WRIST_RINGS_Y = (-0.010, 0.010)
GRID_NX, GRID_NZ = 13, 4  # palm cross-section as the boundary of a 13 x 4 quad grid: 34 vertices
PALM_RINGS_Y = np.linspace(0.018, 0.085, 7)
# finger blocks in the palm cap (grid column of the hole centre), ordered index, middle, ring, pinky
FINGER_BLOCK_COLUMNS = {"index": 2, "middle": 5, "ring": 8, "pinky": 11}
# MANO joint ids (MCP/CMC, PIP/MCP, DIP/IP) of each finger
FINGER_JOINTS = {"index": (1, 2, 3), "middle": (4, 5, 6), "pinky": (7, 8, 9), "ring": (10, 11, 12),
                 "thumb": (13, 14, 15)}
# bone lengths (proximal, middle, distal) and base / tip radii, metres
FINGER_BONES = {"index": (0.040, 0.025, 0.021), "middle": (0.045, 0.028, 0.023),
                "ring": (0.042, 0.027, 0.022), "pinky": (0.032, 0.020, 0.019)}
FINGER_SPLAY = {"index": -0.10, "middle": -0.02, "ring": 0.05, "pinky": 0.13}  # radians about z
FINGER_RADII = {"index": (0.0088, 0.0068), "middle": (0.0090, 0.0070),
                "ring": (0.0085, 0.0066), "pinky": (0.0076, 0.0060)}
THUMB_BONES = (0.030, 0.032, 0.027)   # hole centre to MCP, MCP to IP, IP to tip
THUMB_DIRECTION = np.array([-0.62, 0.66, -0.42])
THUMB_RADII = (0.0105, 0.0078)
# relaxed mean pose: flexion (radians) of the three joints of each finger
MEAN_FLEXION = {"index": (0.12, 0.20, 0.10), "middle": (0.15, 0.22, 0.12), "ring": (0.18, 0.25, 0.12),
                "pinky": (0.22, 0.28, 0.14), "thumb": (0.05, 0.10, 0.12)}
FINGERS = ("thumb", "index", "middle", "ring", "pinky")
# the fingertip vertex of each finger in the official MANO topology (smplx's vertex_ids["mano"])
OFFICIAL_TIP_VERTICES = {"thumb": 744, "index": 320, "middle": 443, "ring": 554, "pinky": 671}
BLEND_WIDTH = 0.005  # half-width (m) of the skinning-weight transition around a joint


@dataclass
class HandModelArrays:
    """The right-hand model in plain arrays, plus what the capture generator needs to know."""

    v_template: np.ndarray      # 778x3
    faces: np.ndarray           # 1538x3
    weights: np.ndarray         # 778x16
    J_regressor: np.ndarray     # 16x778
    shapedirs: np.ndarray       # 778x3x10
    posedirs: np.ndarray        # 778x3x135
    hands_mean: np.ndarray      # 45
    tip_vertices: dict          # finger name -> vertex id of its tip
    flexion_axes: np.ndarray    # 15x3 unit axes (joints 1..15) that curl a finger towards the palm


class _MeshBuilder:
    def __init__(self):
        self.points: list[np.ndarray] = []
        self.faces: list[tuple[int, int, int]] = []

    def add(self, p) -> int:
        self.points.append(np.asarray(p, dtype=np.float64))
        return len(self.points) - 1

    def quad(self, a, b, c, d):
        """A quad ordered counter-clockwise about its outward normal."""
        self.faces += [(a, b, c), (a, c, d)]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    u = np.clip((x / BLEND_WIDTH + 1.0) / 2.0, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _palm_size(y: float) -> tuple[float, float]:
    """Half width and half thickness of the palm at height y."""
    a = (y - PALM_RINGS_Y[0]) / (PALM_RINGS_Y[-1] - PALM_RINGS_Y[0])
    return 0.036 + 0.007 * np.sin(np.pi / 2 * a), 0.0165 - 0.0035 * a


def _grid_boundary() -> list[tuple[int, int]]:
    """(i, j) grid positions of the palm cross-section loop, counter-clockwise about +y."""
    loop = [(i, 0) for i in range(GRID_NX)] + [(GRID_NX, j) for j in range(GRID_NZ)]
    loop += [(i, GRID_NZ) for i in range(GRID_NX, 0, -1)] + [(0, j) for j in range(GRID_NZ, 0, -1)]
    # counter-clockwise about +y means positive area in the (z, x) plane
    zx = np.array([(j, i) for i, j in loop], dtype=float)
    area = np.sum(zx[:, 0] * np.roll(zx[:, 1], -1) - np.roll(zx[:, 0], -1) * zx[:, 1])
    return loop if area > 0 else loop[::-1]


def _grid_xz(i: int, j: int, y: float) -> np.ndarray:
    """Position of grid point (i, j) on the rounded-rectangle cross-section at height y."""
    w, t = _palm_size(y)
    u, v = 2.0 * i / GRID_NX - 1.0, 2.0 * j / GRID_NZ - 1.0
    n = (abs(u) ** 4 + abs(v) ** 4) ** 0.25
    if max(abs(u), abs(v)) >= 1.0 - 1e-9:  # on the loop: round the rectangle's corners
        u, v = u / n, v / n
    return np.array([w * u, y, t * v])


def _loft(mesh: _MeshBuilder, lower: list[int], upper: list[int]) -> None:
    """Triangulate the band between two counter-clockwise rings about +y of different sizes."""
    def angles(ring):
        p = np.array([mesh.points[k] for k in ring])
        return np.mod(np.arctan2(p[:, 0] / np.abs(p[:, 0]).max(), p[:, 2] / np.abs(p[:, 2]).max()), 2 * np.pi)

    def rotate_to_smallest(ring):
        a = angles(ring)
        start = int(np.argmin(a))
        ring = ring[start:] + ring[:start]
        a = np.unwrap(np.roll(a, -start))
        return ring, np.append(a, a[0] + 2 * np.pi)

    lower, a = rotate_to_smallest(lower)
    upper, b = rotate_to_smallest(upper)
    i = j = 0
    n, m = len(lower), len(upper)
    while i < n or j < m:
        if i < n and (j == m or a[i + 1] <= b[j + 1]):
            mesh.faces.append((lower[i], lower[(i + 1) % n], upper[j % m]))
            i += 1
        else:
            mesh.faces.append((lower[i % n], upper[(j + 1) % m], upper[j]))
            j += 1


def _hole_loop(quads: list[tuple[int, int, int, int]]) -> list[int]:
    """Ordered outer boundary of a patch of oriented quads (counter-clockwise about its normal)."""
    edges = {(q[k], q[(k + 1) % 4]) for q in quads for k in range(4)}
    outer = {a: b for a, b in edges if (b, a) not in edges}
    start = next(iter(outer))
    loop = [start]
    while outer[loop[-1]] != start:
        loop.append(outer[loop[-1]])
    return loop


def _frame(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors e1, e2 with e1 x e2 = axis."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = helper - helper.dot(axis) * axis
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(axis, e1)


def _tube(mesh: _MeshBuilder, base: list[int], center: np.ndarray, axis: np.ndarray,
          stations: np.ndarray, radii: np.ndarray, length: float) -> tuple[list[list[int]], int]:
    """Grow a tube with a rounded tip from the counter-clockwise ring `base` along `axis`.

    Returns the rings (base first) and the tip vertex.
    """
    e1, e2 = _frame(axis)
    rel = np.array([mesh.points[k] for k in base]) - center
    theta = np.arctan2(rel @ e2, rel @ e1)
    directions = np.cos(theta)[:, None] * e1 + np.sin(theta)[:, None] * e2
    for k, d in zip(base, directions):  # round the hole onto a circle of the tube's base radius
        mesh.points[k] = center + radii[0] * d
    rings = [base]
    for s, r in zip(stations, radii[1:]):
        rings.append([mesh.add(center + s * axis + r * d) for d in directions])
    for lower, upper in zip(rings[:-1], rings[1:]):
        n = len(lower)
        for i in range(n):
            mesh.quad(lower[i], lower[(i + 1) % n], upper[(i + 1) % n], upper[i])
    tip = mesh.add(center + length * axis)
    last = rings[-1]
    for i in range(len(last)):
        mesh.faces.append((last[i], last[(i + 1) % len(last)], tip))
    return rings, tip


def _tube_radii(stations: np.ndarray, length: float, r0: float, r1: float) -> np.ndarray:
    """Tapering radius with a hemispherical tip; the first entry is the base radius."""
    s = np.concatenate([[0.0], stations])
    r = r0 + (r1 - r0) * s / length
    tip_start = length - r1
    cap = s > tip_start
    r[cap] *= np.sqrt(np.clip(1.0 - ((s[cap] - tip_start) / r1) ** 2, 0.05, 1.0))
    return r


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).apply(v)


@dataclass
class _Palm:
    """The wrist and palm surface with a hole per finger: vertex ids of its rings and holes."""

    wrist_rings: list[list[int]]
    palm_rings: list[list[int]]
    hole_loops: dict[str, list[int]]
    removed_vertices: set[int]  # the hole centres, dropped at the end
    top: float


@dataclass
class _Rigging:
    """Per vertex skinning memberships, per joint regressor rows, fingertips and flexion axes."""

    weights_of: dict = field(default_factory=dict)
    regress: dict = field(default_factory=dict)
    tips: dict = field(default_factory=dict)
    flexion_axes: np.ndarray = field(default_factory=lambda: np.zeros((16, 3)))


def build_right_hand() -> HandModelArrays:
    """Construct the synthetic right hand (deterministic)."""
    mesh = _MeshBuilder()
    palm = _build_palm(mesh)
    rig = _Rigging()
    for name in FINGERS:
        _grow_finger(mesh, palm, name, rig)
    wrist = palm.wrist_rings[0] + palm.wrist_rings[1]
    rig.regress[0] = {k: 1.0 / len(wrist) for k in wrist}
    model = _assemble(mesh, palm.removed_vertices, rig)
    _count_check(model)
    return model


def _build_palm(mesh: _MeshBuilder) -> _Palm:
    """Wrist rings (the lowest stays open), palm rings and the cap grid, with the finger holes cut."""
    loop = _grid_boundary()
    wrist_rings = []
    for y in WRIST_RINGS_Y:
        theta = 2 * np.pi * np.arange(WRIST_RING) / WRIST_RING
        wrist_rings.append([mesh.add((0.029 * np.sin(t), y, 0.017 * np.cos(t))) for t in theta])
    for lower, upper in zip(wrist_rings[:-1], wrist_rings[1:]):
        for i in range(WRIST_RING):
            mesh.quad(lower[i], lower[(i + 1) % WRIST_RING], upper[(i + 1) % WRIST_RING], upper[i])

    # palm rings, the cap grid, and their quads (holes cut out below)
    palm_rings = [[mesh.add(_grid_xz(i, j, y)) for i, j in loop] for y in PALM_RINGS_Y]
    _loft(mesh, wrist_rings[-1], palm_rings[0])
    top = PALM_RINGS_Y[-1]
    grid = {ij: palm_rings[-1][k] for k, ij in enumerate(loop)}
    for i in range(1, GRID_NX):
        for j in range(1, GRID_NZ):
            grid[(i, j)] = mesh.add(_grid_xz(i, j, top) + (0.0, 0.004 * (1 - abs(2 * j / GRID_NZ - 1)), 0.0))
    wall_quads = {}
    for k in range(len(palm_rings) - 1):
        lower, upper = palm_rings[k], palm_rings[k + 1]
        n = len(loop)
        for m in range(n):
            wall_quads[(k, m)] = (lower[m], lower[(m + 1) % n], upper[(m + 1) % n], upper[m])
    cap_quads = {(i, j): (grid[(i, j)], grid[(i, j + 1)], grid[(i + 1, j + 1)], grid[(i + 1, j)])
                 for i in range(GRID_NX) for j in range(GRID_NZ)}

    # the holes: a 2x2 block of cap quads per finger, of wall quads for the thumb
    finger_holes = {name: [(c + di, 1 + dj) for di in (-1, 0) for dj in (0, 1)]
                    for name, c in FINGER_BLOCK_COLUMNS.items()}
    side = [m for m, ij in enumerate(loop) if ij[0] == 0 and 1 <= ij[1] <= GRID_NZ - 1]
    side_quads = [m for m in side if loop[(m + 1) % len(loop)][0] == 0 and 1 <= loop[(m + 1) % len(loop)][1] <= GRID_NZ - 1]
    thumb_hole = [(k, m) for k in (1, 2) for m in side_quads]
    removed_vertices = {grid[(c, 2)] for c in FINGER_BLOCK_COLUMNS.values()}
    removed_vertices.add(palm_rings[2][[m for m in side if loop[m] == (0, 2)][0]])
    hole_loops = {name: _hole_loop([cap_quads.pop(q) for q in quads]) for name, quads in finger_holes.items()}
    hole_loops["thumb"] = _hole_loop([wall_quads.pop(q) for q in thumb_hole])
    for q in list(wall_quads.values()) + list(cap_quads.values()):
        mesh.quad(*q)
    return _Palm(wrist_rings, palm_rings, hole_loops, removed_vertices, top)


def _grow_finger(mesh: _MeshBuilder, palm: _Palm, name: str, rig: _Rigging) -> None:
    """Grow one finger (or the thumb) from its hole, and rig it: regressor rows, weights, axes."""
    ring = palm.hole_loops[name]
    hole_center = np.mean([mesh.points[k] for k in ring], axis=0)
    if name == "thumb":
        axis = THUMB_DIRECTION / np.linalg.norm(THUMB_DIRECTION)
        b1, b2, b3 = THUMB_BONES
        stations = np.concatenate([b1 * np.array([0.35, 0.7, 1.0]), b1 + b2 * np.array([1 / 3, 2 / 3, 1.0]),
                                   b1 + b2 + b3 * np.array([0.25, 0.5, 0.72, 0.88, 0.96])])
        r0, r1 = THUMB_RADII
        center = hole_center
        curl = np.array([0.6, 0.0, -0.8])
    else:
        axis = _rotate(np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0]), FINGER_SPLAY[name])
        b1, b2, b3 = FINGER_BONES[name]
        stations = np.concatenate([b1 * np.array([0.25, 0.5, 0.75, 1.0]), b1 + b2 * np.array([1 / 3, 2 / 3, 1.0]),
                                   b1 + b2 + b3 * np.array([0.2, 0.4, 0.6, 0.8, 0.93])])
        r0, r1 = FINGER_RADII[name]
        center = hole_center * np.array([1, 0, 1]) + np.array([0, palm.top, 0])
        curl = np.array([0.0, 0.0, -1.0])  # towards the palmar side
    length = b1 + b2 + b3
    radii = _tube_radii(stations, length, r0, r1)
    rings, tip = _tube(mesh, ring, center, axis, stations, radii, length)
    rig.tips[name] = tip
    j1, j2, j3 = FINGER_JOINTS[name]
    # joint regressor: the centroid of the ring that sits at each joint
    station_index = {j2: int(np.argmin(np.abs(stations - b1))) + 1, j3: int(np.argmin(np.abs(stations - b1 - b2))) + 1}
    for j, r in station_index.items():
        rig.regress[j] = {k: 1.0 / len(rings[r]) for k in rings[r]}
    if name == "thumb":  # the CMC joint sits inside the palm, between the hole and the palm axis
        mid_ring = [k for k in palm.palm_rings[2] if k not in palm.removed_vertices]
        row = {k: 0.6 / len(ring) for k in ring}
        for k in mid_ring:
            row[k] = row.get(k, 0.0) + 0.4 / len(mid_ring)
        rig.regress[j1] = row
    else:
        rig.regress[j1] = {k: 1.0 / len(ring) for k in ring}
    # skinning weights: a smooth partition of unity along the finger axis
    finger_vertices = sorted({k for r in rings for k in r} | {tip})
    t = np.array([(mesh.points[k] - center) @ axis for k in finger_vertices])
    steps = [_smoothstep(t - b) for b in (0.0, b1, b1 + b2)]
    memberships = {0: 1 - steps[0], j1: steps[0] - steps[1], j2: steps[1] - steps[2], j3: steps[2]}
    for idx, k in enumerate(finger_vertices):
        rig.weights_of[k] = {j: float(m[idx]) for j, m in memberships.items() if m[idx] > 0}
    flex = np.cross(axis, curl / np.linalg.norm(curl))
    rig.flexion_axes[[j1, j2, j3]] = flex / np.linalg.norm(flex)


def _assemble(mesh: _MeshBuilder, removed_vertices: set[int], rig: _Rigging) -> HandModelArrays:
    """Drop the hole centres, renumber, and build the model arrays (with blend shapes and mean pose)."""
    points = np.array(mesh.points)
    keep = np.array([k not in removed_vertices for k in range(len(points))])
    new_index = np.cumsum(keep) - 1
    # the fingertips get the official model's vertex ids (smplx's MANO tip ids), as code written
    # for the real model expects: a swap of vertex numbers, the geometry unchanged
    swap = np.arange(int(keep.sum()))
    for name, target in OFFICIAL_TIP_VERTICES.items():
        here = int(np.flatnonzero(swap == new_index[rig.tips[name]])[0])
        swap[[here, target]] = swap[[target, here]]
    relabel = np.argsort(swap)  # vertex number before the swaps -> after
    new_index = relabel[new_index]
    faces = new_index[np.array(mesh.faces)]
    v_template = points[keep][swap]
    V = len(v_template)
    weights = np.zeros((V, 16))
    weights[:, 0] = 1.0
    for k, w in rig.weights_of.items():
        weights[new_index[k]] = 0.0
        for j, value in w.items():
            weights[new_index[k], j] = value
    J_regressor = np.zeros((16, V))
    for j, row in rig.regress.items():
        for k, w in row.items():
            J_regressor[j, int(new_index[k])] = w
    joints = J_regressor @ v_template

    hands_mean = np.zeros((15, 3))
    for name in FINGERS:
        for j, angle in zip(FINGER_JOINTS[name], MEAN_FLEXION[name]):
            hands_mean[j - 1] = angle * rig.flexion_axes[j]
    rng = np.random.default_rng(48)
    normals = _vertex_normals(v_template, faces)
    pattern = rng.normal(size=(15, 9))
    pattern /= np.linalg.norm(pattern, axis=1, keepdims=True)
    posedirs = 0.003 * np.einsum("vj,vc,jk->vcjk", weights[:, 1:], normals, pattern).reshape(V, 3, 135)
    shapedirs = _shape_directions(v_template, weights, joints, rng)
    return HandModelArrays(v_template=v_template, faces=faces, weights=weights, J_regressor=J_regressor,
                           shapedirs=shapedirs, posedirs=posedirs, hands_mean=hands_mean.ravel(),
                           tip_vertices={name: int(new_index[k]) for name, k in rig.tips.items()},
                           flexion_axes=rig.flexion_axes[1:])


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(vertices)
    for c in range(3):
        np.add.at(normals, faces[:, c], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def _shape_directions(v: np.ndarray, weights: np.ndarray, joints: np.ndarray, rng) -> np.ndarray:
    """10 shape directions (metres per unit beta): size, finger length, palm width, thickness, noise."""
    V = len(v)
    sd = np.zeros((V, 3, 10))
    sd[:, :, 0] = 0.04 * (v - joints[0])
    finger_share = 1.0 - weights[:, 0]
    sd[:, 1, 1] = 0.08 * finger_share * np.maximum(v[:, 1] - 0.085, 0.0)
    sd[:, 0, 2] = 0.06 * v[:, 0]
    sd[:, 2, 3] = 0.10 * v[:, 2]
    for k in range(4, 10):
        freq = rng.normal(scale=25.0, size=(3, 3))
        phase = rng.uniform(0, 2 * np.pi, size=3)
        sd[:, :, k] = 0.0015 * np.sin(v @ freq + phase)
    return sd


def _count_check(model: HandModelArrays) -> None:
    assert model.v_template.shape == (778, 3), model.v_template.shape
    assert model.faces.shape == (1538, 3), model.faces.shape


# ---------------------------------------------------------------------------------------------
# Mirroring and writing


def _mirror_pose(pose: np.ndarray) -> np.ndarray:
    """Axis-angle vectors (...x3 blocks) under the reflection x -> -x: (a, b, c) -> (a, -b, -c)."""
    p = np.asarray(pose, dtype=np.float64).reshape(-1, 3).copy()
    p[:, 1:] *= -1
    return p.reshape(np.shape(pose))


def mirror_to_left(right: HandModelArrays) -> dict[str, np.ndarray]:
    """The correctly mirrored left model (before the official file's defect is applied)."""
    m = np.array([-1.0, 1.0, 1.0])
    # posedirs act on (R - I) entries; under R -> M R M an entry (a, b) changes sign by m_a m_b
    entry_sign = np.outer(m, m).ravel()
    posedirs = right.posedirs.reshape(-1, 3, 15, 9) * m[None, :, None, None] * entry_sign
    return {
        "v_template": right.v_template * m,
        "faces": right.faces[:, [0, 2, 1]],
        "shapedirs": right.shapedirs * m[None, :, None],
        "posedirs": posedirs.reshape(-1, 3, 135),
        "hands_mean": _mirror_pose(right.hands_mean),
    }


def defect_noise(column: np.ndarray, seed: int = 71) -> np.ndarray:
    """Noise like the official left file's on its un-negated shapedirs column.

    There every entry differs from the right model's by a median 2.7e-9 and at most 1.4e-6 against
    values of about 5e-4: relative noise of a few 1e-6 with heavy tails. Student-t noise of that
    median, capped at 2e-4 of the largest value, never zero (bit-identical columns never occur).
    """
    rng = np.random.default_rng(seed)
    scale = np.abs(column)
    noise = 5e-6 * scale * rng.standard_t(1.5, size=column.shape)
    cap = 2e-4 * scale.max()
    noise = np.clip(noise, -cap, cap)
    tiny = np.abs(noise) < 1e-12
    noise[tiny] = 1e-12 * np.where(rng.random(int(tiny.sum())) < 0.5, -1.0, 1.0)
    return noise


class _ChumpyCh:
    pass


class _ChumpySelect:
    pass


@contextlib.contextmanager
def _chumpy_modules():
    """Register stand-in chumpy modules so pickle writes `chumpy.ch.Ch` / `chumpy.reordering.Select`."""
    names = {"chumpy": None, "chumpy.ch": ("Ch", _ChumpyCh), "chumpy.reordering": ("Select", _ChumpySelect)}
    saved = {name: sys.modules.get(name) for name in names}
    try:
        for name, entry in names.items():
            module = types.ModuleType(name)
            if entry:
                cls_name, cls = entry
                cls.__module__, cls.__qualname__, cls.__name__ = name, cls_name, cls_name
                setattr(module, cls_name, cls)
            sys.modules[name] = module
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _chumpy_select(array: np.ndarray):
    ch = _ChumpyCh()
    ch.__dict__.update({"x": np.ascontiguousarray(array), "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {}})
    select = _ChumpySelect()
    select.__dict__.update({"a": ch, "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {},
                            "preferred_shape": array.shape, "idxs": np.arange(array.size)})
    return select


def model_file_dict(right: HandModelArrays, hand: str, rng_seed: int = 45) -> dict:
    """The pickle content of MANO_<HAND>.pkl, in the official structure (chumpy shapedirs etc.)."""
    if hand == "right":
        arrays = {"v_template": right.v_template, "faces": right.faces, "shapedirs": right.shapedirs,
                  "posedirs": right.posedirs, "hands_mean": right.hands_mean}
    else:
        arrays = mirror_to_left(right)
        arrays["shapedirs"] = arrays["shapedirs"].copy()
        # the official left file's defect: the right model's column, up to float noise
        arrays["shapedirs"][:, 0, :] = right.shapedirs[:, 0, :] + defect_noise(right.shapedirs[:, 0, :])
    rng = np.random.default_rng(rng_seed)
    components, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    if hand == "left":
        components = _mirror_pose(components.T).T
    kintree = np.stack([PARENTS, np.arange(16)]).astype(np.int64) % (2 ** 32)
    J_regressor = scipy.sparse.csc_matrix(right.J_regressor)
    return {
        "hands_components": components.T.copy(),
        "f": arrays["faces"].astype(np.uint32),
        "J_regressor": J_regressor,
        "kintree_table": kintree.astype(np.uint32),
        "J": right.J_regressor @ arrays["v_template"],
        "bs_style": "lbs",
        "hands_coeffs": rng.normal(scale=0.3, size=(12, 45)),
        "weights": right.weights,
        "posedirs": arrays["posedirs"],
        "hands_mean": arrays["hands_mean"],
        "v_template": arrays["v_template"],
        "shapedirs": _chumpy_select(arrays["shapedirs"]),
        "bs_type": "lrotmin",
    }


# InterHand2.6M's joint order within a hand: thumb tip, IP, MCP, CMC; index, middle, ring and
# pinky tip to base; wrist. Each non-tip joint with the MANO joint it is.
INTERHAND_JOINTS = [("thumb", 15, 14, 13), ("index", 3, 2, 1), ("middle", 6, 5, 4), ("ring", 12, 11, 10),
                    ("pinky", 9, 8, 7)]


def interhand_regressor(right: HandModelArrays) -> np.ndarray:
    """The synthetic model's counterpart of InterHand2.6M's J_regressor_mano_ih26m.npy: float32
    (21, 778), rows in InterHand2.6M's joint order; a fingertip is its tip vertex, every other joint
    the model's own joint regressor row (mirroring keeps vertex ids, so it serves both hands)."""
    rows = []
    for name, *joints in INTERHAND_JOINTS:
        tip = np.zeros(len(right.v_template))
        tip[right.tip_vertices[name]] = 1.0
        rows += [tip] + [right.J_regressor[j] for j in joints]
    rows.append(right.J_regressor[0])
    return np.stack(rows).astype(np.float32)


def write_synthetic_mano(mano_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """Write MANO_RIGHT.pkl, MANO_LEFT.pkl and J_regressor_mano_ih26m.npy into `mano_dir`;
    existing files are kept unless asked. Returns the files written."""
    from ..core.fileio import save_npy
    from ..core.fit_quality import REGRESSOR_NAME

    mano_dir = Path(mano_dir)
    right = build_right_hand()
    written = []
    for hand in ("right", "left"):
        path = mano_dir / model_filename(hand)
        if path.exists() and not overwrite:
            continue
        content = model_file_dict(right, hand)
        with _chumpy_modules():
            data = pickle.dumps(content, protocol=2)
        write_bytes(path, data)
        written.append(path)
    path = mano_dir / REGRESSOR_NAME
    if overwrite or not path.exists():
        save_npy(path, interhand_regressor(right))
        written.append(path)
    return written


def finger_flexion_pose(flexion: np.ndarray, hand: str = "right") -> np.ndarray:
    """Finger parameters (relative to hands_mean) that add `flexion` to every finger joint.

    flexion : Nx5x3 radians, fingers ordered thumb, index, middle, ring, pinky and joints from
    the palm outwards  ->  Nx45 for the synthetic model of `hand`.
    """
    axes = build_right_hand_axes()
    flexion = np.asarray(flexion, dtype=np.float64).reshape(-1, 5, 3)
    pose = np.zeros((len(flexion), 15, 3))
    for f, name in enumerate(FINGERS):
        for k, j in enumerate(FINGER_JOINTS[name]):
            pose[:, j - 1] = flexion[:, f, k, None] * axes[j - 1]
    pose = pose.reshape(-1, 45)
    return pose if hand == "right" else _mirror_pose(pose)


_AXES_CACHE: list[np.ndarray] = []


def build_right_hand_axes() -> np.ndarray:
    """15x3 flexion axes of the synthetic right hand (cached)."""
    if not _AXES_CACHE:
        _AXES_CACHE.append(build_right_hand().flexion_axes)
    return _AXES_CACHE[0]
