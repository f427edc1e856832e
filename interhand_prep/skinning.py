"""Skinning-weight and blend-shape grids, as batched pure functions over arrays (metres).

Closest points on triangle meshes come from point-cloud-utils (libigl's AABB tree), nearest
vertices from scipy's cKDTree. To amortise the per-call tree build, the meshes of many frames are
queried in one call: frame k's mesh and grid points are translated by k * spacing along x, with
the spacing larger than any grid's extent plus its mesh's, so every grid point's closest feature
is on its own frame's mesh (checked).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import point_cloud_utils as pcu
from scipy.spatial import cKDTree


def grid_axes(vertices: np.ndarray, voxel: float, padding: float) -> list[np.ndarray]:
    """Per-axis grid coordinates around `vertices` (Vx3, m): arange(min - pad, max + pad + voxel, voxel)."""
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    return [np.arange(lo[d] - padding, hi[d] + padding + voxel, voxel) for d in range(3)]


def grid_points(axes: list[np.ndarray]) -> np.ndarray:
    """Axes of lengths X, Y, Z -> XxYxZx3 grid point coordinates (meshgrid, indexing "ij")."""
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


@dataclass
class ClosestSurface:
    """Closest surface points of query points: distance P, face index P, barycentric Px3."""

    distance: np.ndarray
    face: np.ndarray
    barycentric: np.ndarray

    def interpolate(self, faces: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Barycentric interpolation of per-vertex `values` (VxC) at the closest points -> PxC."""
        return np.einsum("pk,pkc->pc", self.barycentric, values[faces[self.face]])


def _frame_spacing(meshes: list[np.ndarray], points: list[np.ndarray]) -> float:
    """A translation step that keeps frames apart: larger than any two frames' joint extents."""
    extent = max(np.ptp(np.concatenate([m, p]), axis=0).max() + np.abs(np.concatenate([m, p])).max()
                 for m, p in zip(meshes, points))
    # a power of two keeps the shifted coordinates exactly representable
    return float(2.0 ** np.ceil(np.log2(4.0 * extent + 1e-9)))


def _check_own_frame(index: np.ndarray, sizes: list[int], per_frame: int) -> None:
    """Every batched answer must come from the query's own frame (guaranteed by the spacing)."""
    owner = np.repeat(np.arange(len(sizes)), sizes)
    if not np.array_equal(index // per_frame, owner):
        raise AssertionError("a batched closest-point query crossed frames; spacing too small")


def closest_surface(points: list[np.ndarray], vertices: list[np.ndarray], faces: np.ndarray) -> list[ClosestSurface]:
    """Closest points on each frame's mesh, all frames in one query.

    points : list of Px3 query points (one array per frame), vertices : list of Vx3 meshes sharing
    `faces` (Fx3) -> one ClosestSurface per frame (distances in the input unit).
    """
    spacing = _frame_spacing(vertices, points)
    shifts = [np.array([k * spacing, 0.0, 0.0]) for k in range(len(points))]
    all_v = np.concatenate([v + s for v, s in zip(vertices, shifts)])
    all_f = np.concatenate([faces + k * len(vertices[0]) for k in range(len(vertices))])
    all_p = np.concatenate([p + s for p, s in zip(points, shifts)])
    distance, face, bary = pcu.closest_points_on_mesh(np.ascontiguousarray(all_p), np.ascontiguousarray(all_v),
                                                      np.ascontiguousarray(all_f))
    sizes = [len(p) for p in points]
    _check_own_frame(face, sizes, len(faces))
    out, start = [], 0
    for k, n in enumerate(sizes):
        sl = slice(start, start + n)
        out.append(ClosestSurface(distance=distance[sl], face=face[sl] - k * len(faces), barycentric=bary[sl]))
        start += n
    return out


def nearest_vertex(points: list[np.ndarray], vertices: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Nearest vertex of each frame's mesh, all frames in one KD-tree: [(distance P, index P)]."""
    spacing = _frame_spacing(vertices, points)
    shifts = [np.array([k * spacing, 0.0, 0.0]) for k in range(len(points))]
    tree = cKDTree(np.concatenate([v + s for v, s in zip(vertices, shifts)]))
    distance, index = tree.query(np.concatenate([p + s for p, s in zip(points, shifts)]), workers=-1)
    sizes = [len(p) for p in points]
    _check_own_frame(index, sizes, len(vertices[0]))
    out, start = [], 0
    for k, n in enumerate(sizes):
        out.append((distance[start:start + n], index[start:start + n] - k * len(vertices[0])))
        start += n
    return out


def surface_weight_grid(grid: np.ndarray, closest: ClosestSurface, faces: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """XxYxZx3 grid + its closest surface points -> XxYxZx(J+1) float32: J weights, then distance."""
    values = closest.interpolate(faces, weights)
    return np.concatenate([values, closest.distance[:, None]], axis=1).reshape(grid.shape[:3] + (-1,)).astype(np.float32)


def vertex_weight_grid(grid: np.ndarray, distance: np.ndarray, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """XxYxZx3 grid + nearest vertices -> XxYxZx(J+1) float32: that vertex's J weights, then distance."""
    return np.concatenate([weights[index], distance[:, None]], axis=1).reshape(grid.shape[:3] + (-1,)).astype(np.float32)


def skinning_transforms(poses: np.ndarray, rest_joints: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Per-joint rigid transforms of linear blend skinning (smplx's batch_rigid_transform).

    poses : Nx48 axis-angle (global first), rest_joints : NxJx3 (m), parents : J  ->  NxJx4x4
    mapping rest-pose points to posed points relative to each joint.
    """
    import torch
    from smplx.lbs import batch_rigid_transform, batch_rodrigues

    N, J = rest_joints.shape[:2]
    with torch.no_grad():
        rot = batch_rodrigues(torch.from_numpy(np.asarray(poses, dtype=np.float64).reshape(-1, 3))).view(N, J, 3, 3)
        _, transforms = batch_rigid_transform(rot, torch.from_numpy(np.ascontiguousarray(rest_joints, dtype=np.float64)),
                                              torch.from_numpy(np.asarray(parents, dtype=np.int64)), dtype=torch.float64)
    return transforms.numpy()


def inverse_skinning(posed: np.ndarray, transforms: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Undo linear blend skinning: posed NxVx3 (pose space, m), transforms NxJx4x4, weights VxJ
    -> NxVx3 unposed vertices (template plus shape and pose blend shapes)."""
    per_vertex = np.einsum("vj,njab->nvab", weights, transforms)
    inverse = np.linalg.inv(per_vertex)
    return np.einsum("nvab,nvb->nva", inverse[..., :3, :3], posed) + inverse[..., :3, 3]
