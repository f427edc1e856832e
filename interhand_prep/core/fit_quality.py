"""How far the MANO fit of each frame is from the annotated 3D joints, as pure array functions.

InterHand2.6M's MANO parameters (NeuralAnnot) are fitted, not measured. Its own joint regressor
(`J_regressor_mano_ih26m.npy`, 21 x 778, rows in InterHand2.6M's joint order) applied to the posed
MANO vertices in millimetres gives a hand's 21 joints, comparable with the annotated `world_coord`
of `InterHand2.6M_<split>_joint_3d.json` (right hand rows 0-20, left 21-41).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import HANDS, JOINTS_PER_HAND
from .errors import InputError

REGRESSOR_NAME = "J_regressor_mano_ih26m.npy"


def load_joint_regressor(path: str | Path, num_vertices: int) -> np.ndarray:
    """The (21, V) regressor of `path` as float64; a one-line error for a missing, unreadable or
    wrong-shaped file."""
    path = Path(path)
    try:
        regressor = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: joint regressor not found (InterHand2.6M's tool/MANO_world_to_camera/"
                         f"{REGRESSOR_NAME}; pass --joint-regressor)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from None
    if regressor.shape != (JOINTS_PER_HAND, num_vertices) or not np.issubdtype(regressor.dtype, np.floating):
        raise InputError(f"{path}: joint regressor has shape {regressor.shape} ({regressor.dtype}), expected "
                         f"({JOINTS_PER_HAND}, {num_vertices}) floats for this MANO model")
    return regressor.astype(np.float64)


def regress_joints(regressor: np.ndarray, vertices_m: np.ndarray) -> np.ndarray:
    """regressor 21xV, vertices NxVx3 (metres) -> joints Nx21x3 (millimetres)."""
    return np.einsum("jv,nvc->njc", regressor, np.asarray(vertices_m, dtype=np.float64) * 1000.0)


@dataclass
class FitErrors:
    """Per frame: mean and maximum Euclidean joint error (mm, NaN without a valid joint), and the
    number of valid joints it is taken over."""

    mean: np.ndarray
    max: np.ndarray
    valid_joints: np.ndarray


def fit_errors(fitted_mm: np.ndarray, annotated_mm: np.ndarray, valid: np.ndarray) -> FitErrors:
    """fitted, annotated : Nx21x3 (mm), valid : Nx21 bool -> FitErrors over the valid joints."""
    distance = np.linalg.norm(fitted_mm - np.where(valid[..., None], annotated_mm, 0.0), axis=2)
    count = valid.sum(axis=1)
    masked = np.where(valid, distance, np.nan)
    with np.errstate(invalid="ignore"):
        mean = np.where(count > 0, np.nansum(masked, axis=1) / np.maximum(count, 1), np.nan)
        worst = np.where(count > 0, np.nanmax(np.where(valid, distance, -np.inf), axis=1), np.nan)
    return FitErrors(mean=mean, max=worst, valid_joints=count)


def error_statistics(mean_errors: np.ndarray) -> dict[str, float] | None:
    """Median, 95th percentile and maximum of the frames' mean errors (frames with valid joints)."""
    values = mean_errors[np.isfinite(mean_errors)]
    if not len(values):
        return None
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)), "max": float(values.max())}


def fit_summary(rows: list[tuple], worst: int = 3) -> list[str]:
    """Per hand: median, 95th percentile and maximum of the frames' mean joint error, and the worst frames."""
    lines = []
    for hand in HANDS:
        mine = [(f, m) for f, h, m, _, _ in rows if h == hand]
        if not mine:
            continue
        stats = error_statistics(np.array([m for _, m in mine], dtype=np.float64))
        if stats is None:
            lines.append(f"{hand}: no frame with a valid annotated joint")
            continue
        ranked = sorted(((m, f) for f, m in mine if np.isfinite(m)), reverse=True)[:worst]
        lines.append(f"{hand}: mean joint error median {stats['median']:.1f} mm, 95% {stats['p95']:.1f} mm, max "
                     f"{stats['max']:.1f} mm; worst frames " + ", ".join(f"{f} ({m:.1f})" for m, f in ranked))
    return lines
