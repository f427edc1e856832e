"""Refining a MANO-rendered hand mask against its camera image: pure functions over arrays.

The rendered mask is exact for the fitted MANO mesh, and that mesh is a few millimetres off the
real hand, so its outline misses fingertips, fills gaps between fingers and spills onto what lies
behind the hand. `refine_view` moves the outline onto the image's edges, but only where the fit
error can put it, and never onto the forearm:

- only a band around the MANO outline can change: `band_mm` millimetres at the hand's distance
  (pixels = band_mm * focal / depth), wider than the fit error, so the true outline lies inside it;
  everything farther out stays background and everything deeper inside stays hand;
- beyond each wrist (the half-plane behind the wrist joint, away from the knuckles, in the image)
  nothing outside the MANO mask becomes hand: the forearm continues the hand with the same skin;
- inside the band, OpenCV's GrabCut decides (colour models of hand and surroundings from the crop
  around the hand, a graph cut that follows image edges);
- components not touching the MANO hand are dropped; every hand pixel takes the label of the
  nearest MANO pixel (the render's depth order decides where the hands overlap);
- a refinement that collapses or explodes (refined area outside [min_ratio, max_ratio] of the
  MANO area, or IoU with MANO below min_iou), a black image or a hand too small to refine keeps
  the MANO mask of that hand, and says why.

Shapes: image (H, W, 3) uint8 (grey cameras: three equal channels), masks (H, W) uint8 labels
(0 background, 100 left hand, 200 right hand; layout.MASK_LABELS). Pixel coordinates follow the
OpenCV convention (integer coordinates at pixel centres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REFINED = "refined"
KEPT = "kept_mano_"  # + reason: black_image, too_small, no_contrast, collapsed, exploded, disagrees
NO_HAND = "no_hand"
RNG_SEED = 20817


@dataclass(frozen=True)
class HandInView:
    """Where one hand is in a view: its mask label, its wrist joint and the middle finger's first
    joint projected into the image (x, y pixels), and the image scale at the wrist."""

    label: int
    wrist: np.ndarray    # (2,) px
    knuckle: np.ndarray  # (2,) px
    px_per_mm: float     # focal length (px) / depth of the wrist (mm)


@dataclass(frozen=True)
class RefineParams:
    """The method's settings; every run records them (they decide the refined masks)."""

    band_mm: float = 8.0         # the outline may move this far from MANO's, either way
    sure_mm: float = 8.0         # MANO pixels this deep inside the outline are hand for sure
    iterations: int = 5          # GrabCut iterations
    min_ratio: float = 0.6       # refined / MANO area outside [min_ratio, max_ratio]: kept MANO
    max_ratio: float = 1.6
    min_iou: float = 0.6         # refined vs MANO IoU below this: kept MANO
    black_level: int = 12        # an image whose brightest pixel in the crop is below: black
    min_pixels: int = 80         # a hand with fewer MANO pixels in a view is kept as MANO
    min_axis_px: float = 6.0     # wrist-knuckle distance in the image below which the wrist cut is off

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class HandOutcome:
    """One hand in one view: its pixels in the MANO mask; in the refinement's result and that
    result's IoU with MANO (None where the refinement did not run; also given where the result was
    not kept); the status (REFINED, KEPT + reason, NO_HAND)."""

    label: int
    mano_pixels: int
    refined_pixels: int | None
    iou: float | None
    status: str


def _disk(radius: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _crop_box(fg: np.ndarray, margin: int) -> tuple[slice, slice]:
    ys, xs = np.nonzero(fg)
    h, w = fg.shape
    return (slice(max(ys.min() - margin, 0), min(ys.max() + margin + 1, h)),
            slice(max(xs.min() - margin, 0), min(xs.max() + margin + 1, w)))


def nearest_labels(labels: np.ndarray) -> np.ndarray:
    """(h, w) uint8 labels -> (h, w) the label of the nearest labelled pixel, everywhere."""
    present = np.unique(labels[labels > 0])
    if len(present) <= 1:
        return np.full(labels.shape, present[0] if len(present) else 0, np.uint8)
    from scipy import ndimage

    _, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    return labels[iy, ix]


def forearm_side(shape: tuple[int, int], origin: tuple[int, int], hand: HandInView, min_axis_px: float) -> np.ndarray | None:
    """(h, w) bool: the pixels of a crop (its top-left pixel at `origin` (y, x) of the image) that
    lie behind the hand's wrist, in the half-plane away from its knuckles; None when the hand
    points (nearly) along the line of sight and the image gives no direction."""
    axis = np.asarray(hand.knuckle, np.float64) - np.asarray(hand.wrist, np.float64)
    length = float(np.hypot(*axis))
    if not np.isfinite(length) or length < min_axis_px:
        return None
    u = axis / length
    ys = np.arange(shape[0], dtype=np.float64)[:, None] + origin[0] - hand.wrist[1]
    xs = np.arange(shape[1], dtype=np.float64)[None, :] + origin[1] - hand.wrist[0]
    return xs * u[0] + ys * u[1] < 0.0


def refine_view(image: np.ndarray, mano: np.ndarray, hands: list[HandInView],
                params: RefineParams = RefineParams()) -> tuple[np.ndarray, list[HandOutcome]]:
    """The refined labels of one view and each hand's outcome (hands without MANO pixels: no_hand).

    image (H, W, 3) uint8, mano (H, W) uint8 labels, hands: the hands that have MANO in the frame.
    """
    out = np.zeros_like(mano)
    fg = mano > 0
    counts = {h.label: int(np.count_nonzero(mano == h.label)) for h in hands}
    if not fg.any():
        return out, [HandOutcome(h.label, 0, None, None, NO_HAND) for h in hands]
    scale = max((h.px_per_mm for h in hands if counts[h.label] and np.isfinite(h.px_per_mm)), default=1.0)
    band = max(2, int(round(params.band_mm * scale)))
    sure = max(1, int(round(params.sure_mm * scale)))
    rows, cols = _crop_box(fg, band + 2)
    crop_mano = mano[rows, cols]
    crop_fg = crop_mano > 0
    crop_image = np.ascontiguousarray(image[rows, cols, :3])
    refined, reason = None, None
    if int(crop_image.max(initial=0)) < params.black_level:
        reason = "black_image"
    elif all(counts[h.label] < params.min_pixels for h in hands if counts[h.label]):
        reason = "too_small"
    else:
        refined, reason = _grabcut(crop_image, crop_mano, crop_fg, hands, (rows.start, cols.start), band, sure, params)
    outcomes = []
    result = refined if refined is not None else crop_mano.copy()
    for h in hands:
        m = crop_mano == h.label
        n_mano = counts[h.label]
        if not n_mano:
            outcomes.append(HandOutcome(h.label, 0, None, None, NO_HAND))
            continue
        if refined is None:
            outcomes.append(HandOutcome(h.label, n_mano, None, None, KEPT + reason))
            continue
        r = refined == h.label
        n_ref = int(np.count_nonzero(r))
        iou = float(np.count_nonzero(r & m) / max(np.count_nonzero(r | m), 1))
        status = REFINED
        if n_mano < params.min_pixels:
            status = KEPT + "too_small"
        elif n_ref < params.min_ratio * n_mano:
            status = KEPT + "collapsed"
        elif n_ref > params.max_ratio * n_mano:
            status = KEPT + "exploded"
        elif iou < params.min_iou:
            status = KEPT + "disagrees"
        if status != REFINED:  # this hand as MANO drew it
            result[result == h.label] = 0
            result[m] = h.label
        outcomes.append(HandOutcome(h.label, n_mano, n_ref, iou, status))
    out[rows, cols] = result
    return out, outcomes


def _grabcut(crop_image: np.ndarray, crop_mano: np.ndarray, crop_fg: np.ndarray, hands: list[HandInView],
             origin: tuple[int, int], band: int, sure: int, params: RefineParams) -> tuple[np.ndarray | None, str | None]:
    """GrabCut inside the band -> (refined crop labels, None) or (None, why it could not run)."""
    import cv2

    outer = cv2.dilate(crop_fg.view(np.uint8), _disk(band)).astype(bool)
    inner = cv2.erode(crop_fg.view(np.uint8), _disk(sure), borderType=cv2.BORDER_REPLICATE).astype(bool)
    trimap = np.full(crop_fg.shape, cv2.GC_BGD, np.uint8)
    trimap[outer] = cv2.GC_PR_BGD
    trimap[crop_fg] = cv2.GC_PR_FGD
    trimap[inner] = cv2.GC_FGD
    nearest = nearest_labels(crop_mano)
    for h in hands:
        behind = forearm_side(crop_fg.shape, origin, h, params.min_axis_px)
        if behind is not None:
            trimap[behind & ~crop_fg & (nearest == h.label)] = cv2.GC_BGD
    fg_like = (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)
    if not fg_like.any() or fg_like.all() or not (trimap == cv2.GC_BGD).any() and not (trimap == cv2.GC_PR_BGD).any():
        return None, "no_contrast"
    image = crop_image
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut seeds its colour models with k-means from OpenCV's global random state: seeded per
    # view, a view's result does not depend on which views this process refined before it
    cv2.setRNGSeed(RNG_SEED)
    try:
        cv2.grabCut(image, trimap, None, bgd, fgd, params.iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a degenerate colour model (e.g. a flat image): nothing to separate
        return None, "no_contrast"
    hand = (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)
    # keep the parts that touch the MANO hand: a skin-coloured patch in the band alone is not hand
    count, components = cv2.connectedComponents(hand.view(np.uint8), connectivity=8)
    if count > 2:
        touching = np.unique(components[hand & crop_fg])
        hand = np.isin(components, touching[touching > 0])
    labels = np.where(hand, nearest, 0).astype(np.uint8)
    labels[crop_fg & hand] = crop_mano[crop_fg & hand]
    return labels, None
