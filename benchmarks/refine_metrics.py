"""Scores of hand masks against true hand masks, label-aware: pure functions over arrays.

Masks are uint8 (H, W) label images: 0 background, 100 left hand, 200 right hand (the labels of
`mask/` and of the synthetic truth). A pixel is a hand pixel when its label is not 0.

- IoU: the pixels where prediction and truth carry the same hand label, divided by the pixels
  where either of them carries a hand label. A hand pixel with the other hand's label counts in
  the union but not in the intersection (it is wrong). NaN when neither has a hand pixel.
- Boundary F-score with a tolerance of `tolerance` pixels (2 by default): the boundary of a mask
  is, for each hand label L, the pixels labelled L with a 4-neighbour (or the image border) that
  is not L. A predicted boundary pixel of label L is matched when a true boundary pixel of the
  same label L lies within `tolerance` (Euclidean distance between pixel centres); precision is
  the share of predicted boundary pixels matched (both labels together), recall the share of true
  boundary pixels within `tolerance` of a predicted boundary pixel of their label, and F their
  harmonic mean (0 when either is 0).

Views whose truth shows no hand are not scored (`score_view` returns None); the callers count them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

HAND_LABELS = (100, 200)
TOLERANCE_PX = 2.0


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Label-aware IoU of two label images (NaN when neither shows a hand)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    union = np.count_nonzero((pred > 0) | (truth > 0))
    if union == 0:
        return float("nan")
    return np.count_nonzero((pred == truth) & (truth > 0)) / union


def boundary(mask: np.ndarray, label: int) -> np.ndarray:
    """(H, W) bool: pixels labelled `label` with a 4-neighbour (or the image border) that is not."""
    region = np.asarray(mask) == label
    padded = np.pad(region, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return region & ~inner


def _within(source: np.ndarray, target: np.ndarray, tolerance: float) -> int:
    """How many `source` pixels lie within `tolerance` of a `target` pixel."""
    if not source.any():
        return 0
    if not target.any():
        return 0
    distance = distance_transform_edt(~target)
    return int(np.count_nonzero(distance[source] <= tolerance))


def boundary_scores(pred: np.ndarray, truth: np.ndarray, tolerance: float = TOLERANCE_PX) -> tuple[float, float, float]:
    """(precision, recall, F) of the predicted boundary against the true one, label-aware."""
    matched_pred = matched_true = n_pred = n_true = 0
    for label in HAND_LABELS:
        bp, bt = boundary(pred, label), boundary(truth, label)
        n_pred += int(bp.sum())
        n_true += int(bt.sum())
        matched_pred += _within(bp, bt, tolerance)
        matched_true += _within(bt, bp, tolerance)
    precision = matched_pred / n_pred if n_pred else 0.0
    recall = matched_true / n_true if n_true else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f


@dataclass
class ViewScore:
    iou: float
    precision: float
    recall: float
    f: float


def score_view(pred: np.ndarray, truth: np.ndarray, tolerance: float = TOLERANCE_PX) -> ViewScore | None:
    """IoU and boundary scores of one view; None when the truth shows no hand (not scored)."""
    if pred.shape != truth.shape:
        raise ValueError(f"mask shape {pred.shape} differs from the truth's {truth.shape}")
    if not np.any(truth > 0):
        return None
    precision, recall, f = boundary_scores(pred, truth, tolerance)
    return ViewScore(iou(pred, truth), precision, recall, f)


def summarize(scores: list[ViewScore]) -> dict:
    """Means over views: {'views', 'iou', 'boundary_precision', 'boundary_recall', 'boundary_f'}."""
    if not scores:
        return {"views": 0, "iou": float("nan"), "boundary_precision": float("nan"),
                "boundary_recall": float("nan"), "boundary_f": float("nan")}
    return {"views": len(scores), "iou": float(np.mean([s.iou for s in scores])),
            "boundary_precision": float(np.mean([s.precision for s in scores])),
            "boundary_recall": float(np.mean([s.recall for s in scores])),
            "boundary_f": float(np.mean([s.f for s in scores]))}
