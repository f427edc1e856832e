"""The MANO forward pass and parameter conventions: pure functions over arrays.

The forward pass is MANO's linear blend skinning (as smplx's `lbs`, use_pca=False,
flat_hand_mean=False: the 45 finger parameters of InterHand2.6M are relative to `hands_mean`),
written in numpy with per-frame operations only, so a frame's result does not depend on which
other frames share its batch. Units are metres throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mano import NUM_JOINTS, ManoModel

FORWARD_CHUNK = 256  # frames per forward-pass block (bounds the NxVx4x4 skinning transforms)


@dataclass
class ManoOutput:
    """vertices : NxVx3, joints : Nx16x3, both in world coordinates (metres)."""

    vertices: np.ndarray
    joints: np.ndarray


def axis_angle_to_matrix(rvec: np.ndarray) -> np.ndarray:
    """rvec : Nx3 axis-angle (radians)  ->  Nx3x3 rotation matrices (Rodrigues' formula,
    R = I + sin(t) K + (1 - cos(t)) K^2 with K the cross-product matrix of the unit axis)."""
    rvec = np.asarray(rvec, dtype=np.float64).reshape(-1, 3)
    angle = np.linalg.norm(rvec, axis=1)
    axis = rvec / np.where(angle > 0, angle, 1.0)[:, None]
    x, y, z = axis.T
    zero = np.zeros_like(x)
    K = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=1).reshape(-1, 3, 3)
    sin, cos = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3) + sin * K + (1.0 - cos) * np.einsum("nij,njk->nik", K, K)


def rigid_transforms(rotations: np.ndarray, rest_joints: np.ndarray, parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward kinematics of linear blend skinning (smplx's `batch_rigid_transform`).

    rotations : NxJx3x3 local joint rotations, rest_joints : NxJx3 (m), parents : J (root -1)
    -> posed joints NxJx3 and NxJx4x4 transforms mapping rest-pose points to posed points.
    """
    N, J = rest_joints.shape[:2]
    relative = rest_joints.copy()
    relative[:, 1:] -= rest_joints[:, parents[1:]]
    local = np.zeros((N, J, 4, 4))
    local[:, :, :3, :3] = rotations
    local[:, :, :3, 3] = relative
    local[:, :, 3, 3] = 1.0
    chain = np.empty_like(local)
    chain[:, 0] = local[:, 0]
    for j in range(1, J):  # parents precede their children in MANO's tree
        chain[:, j] = np.einsum("nab,nbc->nac", chain[:, parents[j]], local[:, j])
    posed_joints = chain[:, :, :3, 3].copy()
    # subtract the rotated rest joint: transforms act on rest-pose points, not joint-relative ones
    chain[:, :, :3, 3] -= np.einsum("njab,njb->nja", chain[:, :, :3, :3], rest_joints)
    return posed_joints, chain


def skin(vertices: np.ndarray, transforms: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Linear blend skinning: vertices NxVx3, transforms NxJx4x4, weights VxJ -> NxVx3."""
    per_vertex = np.einsum("vj,njab->nvab", weights, transforms[:, :, :3, :])
    return np.einsum("nvab,nvb->nva", per_vertex[..., :3], vertices) + per_vertex[..., 3]


def shaped_template(model: ManoModel, shapes: np.ndarray) -> np.ndarray:
    """shapes Nx10 -> NxVx3 template plus shape blend shapes (m)."""
    shapes = np.asarray(shapes, dtype=np.float64)
    return model.v_template + np.einsum("vck,nk->nvc", model.shapedirs[..., : shapes.shape[1]], shapes)


def shaped_joints(model: ManoModel, shapes: np.ndarray) -> np.ndarray:
    """shapes Nx10 -> Nx16x3 rest joints of the shaped template (m)."""
    return np.einsum("jv,nvc->njc", model.J_regressor, shaped_template(model, shapes))


def pose_feature(rotations: np.ndarray) -> np.ndarray:
    """NxJx3x3 joint rotations -> Nx(9(J-1)) pose-corrective features (R - I of joints 1..J-1)."""
    return (rotations[:, 1:] - np.eye(3)).reshape(len(rotations), -1)


def forward(model: ManoModel, pose: np.ndarray, shape: np.ndarray, trans: np.ndarray) -> ManoOutput:
    """MANO in world coordinates.

    pose : Nx48 (global axis-angle, then 45 finger parameters relative to hands_mean), shape : Nx10,
    trans : Nx3 (m)  ->  ManoOutput (vertices NxVx3, joints Nx16x3, metres).
    """
    pose = np.asarray(pose, dtype=np.float64).reshape(-1, 48)
    shape = np.asarray(shape, dtype=np.float64).reshape(len(pose), -1)
    trans = np.asarray(trans, dtype=np.float64).reshape(len(pose), 3)
    vertices, joints = [], []
    for start in range(0, len(pose), FORWARD_CHUNK):
        sl = slice(start, start + FORWARD_CHUNK)
        full_pose = pose[sl].copy()
        full_pose[:, 3:] += model.hands_mean
        rotations = axis_angle_to_matrix(full_pose.reshape(-1, 3)).reshape(-1, NUM_JOINTS, 3, 3)
        template = shaped_template(model, shape[sl])
        rest_joints = np.einsum("jv,nvc->njc", model.J_regressor, template)
        posed = template + np.einsum("vck,nk->nvc", model.posedirs, pose_feature(rotations))
        posed_joints, transforms = rigid_transforms(rotations, rest_joints, model.parents)
        vertices.append(skin(posed, transforms, model.weights) + trans[sl, None])
        joints.append(posed_joints + trans[sl, None])
    if not vertices:
        return ManoOutput(np.zeros((0, model.num_vertices, 3)), np.zeros((0, NUM_JOINTS, 3)))
    return ManoOutput(vertices=np.concatenate(vertices), joints=np.concatenate(joints))


# ---------------------------------------------------------------------------------------------
# Parameter conventions


def easymocap_params(pose: np.ndarray, shape: np.ndarray, trans: np.ndarray, root_joint: np.ndarray,
                     hands_mean: np.ndarray) -> dict[str, np.ndarray]:
    """InterHand MANO parameters -> Animatable-NeRF / EasyMocap parameters, batched.

    pose : Nx48, shape : Nx10, trans : Nx3 (m), root_joint : Nx3 world wrist joint (m, the
    forward pass's joints[:, 0]), hands_mean : 45.
    Returns poses Nx48 (zeros(3), then fingers + hands_mean), Rh Nx3 (global axis-angle),
    Th Nx3 (m), shapes Nx10, such that   vertices = (MANO(poses, Rh=0, Th=0) @ Rodrigues(Rh).T) + Th,
    i.e. (vertices - Th) @ Rodrigues(Rh) is the mesh posed with zero global rotation and translation.
    """
    pose = np.asarray(pose, dtype=np.float64).reshape(-1, 48)
    Rh = pose[:, :3].copy()
    # The global rotation turns the hand about its rest-pose wrist joint J0 (= root_joint - trans):
    # v = R (v0 - J0) + J0 + trans  =>  Th = root_joint - R J0.
    rest_root = root_joint - trans
    Th = root_joint - np.einsum("nij,nj->ni", axis_angle_to_matrix(Rh), rest_root)
    poses = np.concatenate([np.zeros_like(Rh), pose[:, 3:] + hands_mean[None]], axis=1)
    return {"poses": poses, "Rh": Rh, "Th": Th, "shapes": np.asarray(shape, dtype=np.float64).reshape(len(pose), -1)}


def canonical_params(hands_mean: np.ndarray, shape: np.ndarray, root_joint: np.ndarray) -> dict[str, np.ndarray]:
    """The T-pose parameters: mean finger pose, Rh = (0, 0, pi/2), Th = j - Rodrigues(Rh) @ j.

    shape : 10, root_joint : 3 world wrist joint (m) of the first kept frame. Arrays are 1xK.
    """
    Rh = np.array([[0.0, 0.0, np.pi / 2]])
    j = np.asarray(root_joint, dtype=np.float64).reshape(3)
    Th = (j - axis_angle_to_matrix(Rh)[0] @ j)[None]
    poses = np.concatenate([np.zeros(3), hands_mean])[None]
    return {"poses": poses, "Rh": Rh, "Th": Th, "shapes": np.asarray(shape, dtype=np.float64).reshape(1, -1)}
