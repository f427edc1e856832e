"""Skinning-weight and blend-shape grids, as pure functions over arrays (metres).

Closest points on the triangle mesh come from point-cloud-utils (libigl's AABB tree, float64,
exact), nearest vertices from its k-d tree (nanoflann). Each frame is queried on its own: the result of a
frame never depends on which other frames are processed with it, so a rerun that redoes some
frames writes the same bytes as a fresh run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mano import ManoModel
from .mano_forward import axis_angle_to_matrix, rigid_transforms, shaped_joints

WEIGHT_CHANNELS = 17  # 16 skinning weights, then the distance (m)
BLEND_SHAPE_CHANNELS = 3


def grid_axes(vertices: np.ndarray, voxel: float, padding: float) -> list[np.ndarray]:
    """Per-axis grid coordinates around `vertices` (Vx3, m): arange(min - pad, max + pad + voxel, voxel)."""
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    return [np.arange(lo[d] - padding, hi[d] + padding + voxel, voxel) for d in range(3)]


def grid_shape(vertices: np.ndarray, voxel: float, padding: float) -> tuple[int, int, int]:
    """(X, Y, Z) of the grid around `vertices`."""
    return tuple(len(a) for a in grid_axes(vertices, voxel, padding))


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


def closest_surface(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> ClosestSurface:
    """Closest points on the mesh (vertices Vx3, faces Fx3) of `points` (Px3); distances in the input unit."""
    import point_cloud_utils as pcu  # here: a stage with nothing to do never pays for the import

    distance, face, bary = pcu.closest_points_on_mesh(np.ascontiguousarray(points, dtype=np.float64),
                                                      np.ascontiguousarray(vertices, dtype=np.float64),
                                                      np.ascontiguousarray(faces, dtype=np.int64))
    return ClosestSurface(distance=distance, face=face, barycentric=bary)


def nearest_vertex(points: np.ndarray, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest vertex (Vx3) of every point (Px3) -> (distance P, vertex index P)."""
    import point_cloud_utils as pcu  # nanoflann's k-d tree: twice as fast as scipy's here

    distance, index = pcu.k_nearest_neighbors(np.ascontiguousarray(points, dtype=np.float64),
                                              np.ascontiguousarray(vertices, dtype=np.float64), 1)
    return distance, index


def surface_weight_grid(grid: np.ndarray, closest: ClosestSurface, faces: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """XxYxZx3 grid + its closest surface points -> XxYxZx(J+1) float32: J weights, then distance."""
    values = closest.interpolate(faces, weights)
    return np.concatenate([values, closest.distance[:, None]], axis=1).reshape(grid.shape[:3] + (-1,)).astype(np.float32)


def vertex_weight_grid(grid: np.ndarray, distance: np.ndarray, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """XxYxZx3 grid + nearest vertices -> XxYxZx(J+1) float32: that vertex's J weights, then distance."""
    return np.concatenate([weights[index], distance[:, None]], axis=1).reshape(grid.shape[:3] + (-1,)).astype(np.float32)


def skinning_transforms(poses: np.ndarray, rest_joints: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Per-joint rigid transforms of linear blend skinning.

    poses : Nx48 axis-angle (global first), rest_joints : NxJx3 (m), parents : J  ->  NxJx4x4
    mapping rest-pose points to posed points.
    """
    N, J = rest_joints.shape[:2]
    rotations = axis_angle_to_matrix(np.asarray(poses, dtype=np.float64).reshape(-1, 3)).reshape(N, J, 3, 3)
    return rigid_transforms(rotations, np.asarray(rest_joints, dtype=np.float64), parents)[1]


def inverse_3x3(matrices: np.ndarray) -> np.ndarray:
    """...x3x3 -> their inverses (adjugate over determinant; the skinning matrices are near rotations)."""
    m = matrices
    adjugate = np.empty_like(m)
    adjugate[..., 0, 0] = m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1]
    adjugate[..., 0, 1] = m[..., 0, 2] * m[..., 2, 1] - m[..., 0, 1] * m[..., 2, 2]
    adjugate[..., 0, 2] = m[..., 0, 1] * m[..., 1, 2] - m[..., 0, 2] * m[..., 1, 1]
    adjugate[..., 1, 0] = m[..., 1, 2] * m[..., 2, 0] - m[..., 1, 0] * m[..., 2, 2]
    adjugate[..., 1, 1] = m[..., 0, 0] * m[..., 2, 2] - m[..., 0, 2] * m[..., 2, 0]
    adjugate[..., 1, 2] = m[..., 0, 2] * m[..., 1, 0] - m[..., 0, 0] * m[..., 1, 2]
    adjugate[..., 2, 0] = m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0]
    adjugate[..., 2, 1] = m[..., 0, 1] * m[..., 2, 0] - m[..., 0, 0] * m[..., 2, 1]
    adjugate[..., 2, 2] = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    determinant = np.einsum("...j,...j->...", m[..., 0, :], adjugate[..., :, 0])
    return adjugate / determinant[..., None, None]


def inverse_skinning(posed: np.ndarray, transforms: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Undo linear blend skinning: posed NxVx3 (pose space, m), transforms NxJx4x4, weights VxJ
    -> NxVx3 unposed vertices (template plus shape and pose blend shapes)."""
    per_vertex = np.einsum("vj,njab->nvab", weights, transforms[:, :, :3, :])  # NxVx3x4: [M | t]
    return np.einsum("nvab,nvb->nva", inverse_3x3(per_vertex[..., :3]), posed - per_vertex[..., 3])


def pose_space_vertices(vertices: np.ndarray, Rh: np.ndarray, Th: np.ndarray) -> np.ndarray:
    """World vertices NxVx3 (m) -> pose space (global rotation and translation removed):
    (vertices - Th) @ Rodrigues(Rh), with Rh Nx3 and Th Nx3."""
    return np.einsum("nvi,nij->nvj", vertices - Th[:, None, :], axis_angle_to_matrix(Rh))


def unposed_vertices(model: ManoModel, posed: np.ndarray, poses: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Pose-space vertices NxVx3 -> unposed vertices NxVx3 (template + shape and pose blend shapes),
    by inverse linear blend skinning with the frames' poses (Nx48) and shaped rest joints (shapes Nx10)."""
    transforms = skinning_transforms(poses, shaped_joints(model, shapes), model.parents)
    return inverse_skinning(posed, transforms, model.weights)


def frame_grids(model: ManoModel, posed: np.ndarray, unposed: np.ndarray, voxel: float, padding: float,
                surface_weights: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The bweights and bs grids of one frame.

    posed : Vx3 pose-space vertices, unposed : Vx3 (m)
    -> bweights XxYxZx17 float32 (16 weights of the nearest vertex, or of the closest surface point
    with `surface_weights`, then the distance), bs X'xY'xZ'x3 float32 (shape plus pose blend-shape
    offsets at the closest point of the unposed mesh).
    """
    grid = grid_points(grid_axes(posed, voxel, padding))
    flat = grid.reshape(-1, 3)
    if surface_weights:
        bweights = surface_weight_grid(grid, closest_surface(flat, posed, model.faces), model.faces, model.weights)
    else:
        distance, index = nearest_vertex(flat, posed)
        bweights = vertex_weight_grid(grid, distance, index, model.weights)
    ugrid = grid_points(grid_axes(unposed, voxel, padding))
    closest = closest_surface(ugrid.reshape(-1, 3), unposed, model.faces)
    bs = closest.interpolate(model.faces, unposed - model.v_template).reshape(ugrid.shape).astype(np.float32)
    return bweights, bs


def canonical_grid(model: ManoModel, voxel: float, padding: float) -> np.ndarray:
    """tbw: XxYxZx17 float32 grid around v_template (closest-surface-point weights + distance)."""
    grid = grid_points(grid_axes(model.v_template, voxel, padding))
    closest = closest_surface(grid.reshape(-1, 3), model.v_template, model.faces)
    return surface_weight_grid(grid, closest, model.faces, model.weights)
