"""Refining a MANO-rendered hand mask against its camera image: pure functions over arrays.

The rendered mask is exact for the fitted MANO mesh, and that mesh is a few millimetres off the
real hand, so its outline misses fingertips, fills gaps between fingers and spills onto what lies
behind the hand. `refine_view` moves the outline onto the image's edges, but only where the fit
error can put it, and never onto the forearm:

- only a band around the MANO outline can change: `band_mm` millimetres at the hand's distance
  (pixels = band_mm * focal / depth), wider than the fit error, so the true outline lies inside it;
  everything farther out stays background and everything deeper inside stays hand;
- beyond each wrist (the half-plane behind the wrist joint, away from the knuckles, in the image)
  the mask stays MANO's: the forearm continues the hand with the same skin and no edge in the
  image says where the hand ends, so nothing outside the MANO mask becomes hand there and nothing
  inside it stops being hand;
- inside the band, each pixel's colour is weighed under two colour models, of the hands and of
  their surroundings, learnt once per camera and sequence (`camera_model`: GrabCut's Gaussian
  mixtures, in CIELAB, learnt by GrabCut on a mosaic of the crops of up to `model_frames` frames
  spread over the sequence; many frames give steadier models than one view, and the per-view work
  stays small); the evidence, with a small prior towards MANO's answer, is smoothed along the
  image's edges (a guided filter on lightness), and its sign decides where it is sure (beyond
  +-`confident`). A view without a camera model learns its own;
- where the colours are unsure, the image's edges decide: the unsure pixels within `edge_mm` of
  a pixel the colours decide are settled by a minimum graph cut between the decided pixels
  (`min_cut`: GrabCut's energy with the camera's colour models held fixed: each pixel's colour
  evidence, and a cost for every cut between neighbours that falls with their colour contrast),
  so the outline runs along the image's edges and is smooth where there are none; the
  unsure pixels farther out keep MANO's answer. Colour models of a grey camera see lightness only
  and are unsure over much of the band; there, the outline follows the edges near the parts the
  colours settle and stays MANO's where nothing settles it;
- components not touching the MANO hand are dropped; every hand pixel takes the label of the
  nearest MANO pixel (the render's depth order decides where the hands overlap);
- a refinement that collapses or explodes (refined area outside [min_ratio, max_ratio] of the
  MANO area) or disagrees with MANO (IoU below min_iou, or an outline moved by more than
  max_shift_mm on average: the pixels of one mask and not the other per pixel of MANO's outline,
  in millimetres at the hand; more than MANO fits are off, where the synthetic benchmark shows
  refinements getting worse than MANO), a black image or a hand too small to refine keeps the MANO
  mask of that hand, and says why.

Shapes: image (H, W, 3) uint8 (grey cameras: three equal channels), masks (H, W) uint8 labels
(0 background, 100 left hand, 200 right hand; layout.MASK_LABELS). Pixel coordinates follow the
OpenCV convention (integer coordinates at pixel centres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import MASK_LABELS

REFINED = "refined"
KEPT = "kept_mano_"  # + reason: black_image, too_small, no_contrast, collapsed, exploded, disagrees
NO_HAND = "no_hand"
RNG_SEED = 20817
EVIDENCE_LIMIT = 10.0  # |log-likelihood ratio| cap: one odd colour cannot outweigh its neighbours
TABLE_BITS = 6         # colour quantisation of the evidence table (64^3 entries)


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
    model_frames: int = 6        # frames a camera's colour models are learnt from
    model_iterations: int = 2    # GrabCut iterations that learn them
    model_scale: float = 0.5     # they are learnt on the crops scaled by this (colours need no detail)
    prior: float = 1.0           # evidence (log-likelihood ratio) towards MANO's answer in the band
    snap_radius: int = 3         # guided filter window radius (px) and regularisation
    snap_eps: float = 1e-3
    confident: float = 2.0       # smoothed evidence beyond +-this (twice the prior): the colours decide
    edge_mm: float = 6.0         # unsure pixels this close (mm at the hand) to a decided one: the edges decide
    min_ratio: float = 0.6       # refined / MANO area outside [min_ratio, max_ratio]: kept MANO
    max_ratio: float = 1.6
    min_iou: float = 0.5         # refined vs MANO IoU below this: kept MANO
    max_shift_mm: float = 3.5    # the outline moved more than this on average (mm at the hand): kept MANO
    black_level: int = 12        # an image whose brightest pixel in the crop is below: black
    min_pixels: int = 80         # a hand with fewer MANO pixels in a view is kept as MANO
    min_axis_px: float = 6.0     # wrist-knuckle distance in the image below which the wrist cut is off
    # the method's revision (3: the minimum cut, MANO's mask beyond the wrist): other revisions' masks are stale
    revision: int = 3

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


def outline_shift_mm(refined: np.ndarray, mano: np.ndarray, px_per_mm: float) -> float:
    """How far one hand's outline moved, on average (mm at the hand): the pixels in one of the
    (h, w) bool masks and not the other, per pixel of the MANO mask's outline length."""
    import cv2

    contours, _ = cv2.findContours(mano.view(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    if perimeter <= 0 or not np.isfinite(px_per_mm) or px_per_mm <= 0:
        return 0.0
    return float(np.count_nonzero(refined ^ mano) / perimeter / px_per_mm)


def _crop_box(fg: np.ndarray, margin: int) -> tuple[slice, slice]:
    ys, xs = np.nonzero(fg)
    h, w = fg.shape
    return (slice(max(ys.min() - margin, 0), min(ys.max() + margin + 1, h)),
            slice(max(xs.min() - margin, 0), min(xs.max() + margin + 1, w)))


def nearest_labels(labels: np.ndarray) -> np.ndarray:
    """(h, w) uint8 labels -> (h, w) the label of the nearest labelled pixel, everywhere."""
    import cv2

    present = [label for label in sorted(MASK_LABELS.values()) if (labels == label).any()]
    if len(present) <= 1:
        return np.full(labels.shape, present[0] if present else 0, np.uint8)
    distances = [cv2.distanceTransform((labels != label).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
                 for label in present]
    return np.where(distances[0] <= distances[1], present[0], present[1]).astype(np.uint8)


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
                params: RefineParams = RefineParams(), model: "ColourModel | None" = None
                ) -> tuple[np.ndarray, list[HandOutcome]]:
    """The refined labels of one view and each hand's outcome (hands without MANO pixels: no_hand).

    image (H, W, 3) uint8, mano (H, W) uint8 labels, hands: the hands that have MANO in the frame,
    model: the camera's colour models (`camera_model`), else the view learns its own.
    """
    out = np.zeros_like(mano)
    fg = mano > 0
    counts = {h.label: int(np.count_nonzero(mano == h.label)) for h in hands}
    if not fg.any():
        return out, [HandOutcome(h.label, 0, None, None, NO_HAND) for h in hands]
    view = _ViewCrop.of(image, mano, hands, params)
    crop_mano, rows, cols = view.mano, view.rows, view.cols
    refined, reason = None, None
    if int(view.image.max(initial=0)) < params.black_level:
        reason = "black_image"
    elif all(counts[h.label] < params.min_pixels for h in hands if counts[h.label]):
        reason = "too_small"
    else:
        refined, reason = _snap(view, params, model)
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
        elif iou < params.min_iou or outline_shift_mm(r, m, h.px_per_mm) > params.max_shift_mm:
            status = KEPT + "disagrees"
        if status != REFINED:  # this hand as MANO drew it
            result[result == h.label] = 0
            result[m] = h.label
        outcomes.append(HandOutcome(h.label, n_mano, n_ref, iou, status))
    out[rows, cols] = result
    return out, outcomes


@dataclass
class ColourModel:
    """A camera's colour models: GrabCut's Gaussian mixtures (5 components, CIELAB) of the
    surroundings and of the hands, as OpenCV stores them ((1, 65) float64 each)."""

    background: np.ndarray
    hand: np.ndarray

    def __post_init__(self):
        self._table: np.ndarray | None = None

    def __getstate__(self):  # the table is rebuilt where it is used, not pickled to workers
        return {"background": self.background, "hand": self.hand}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._table = None

    def evidence(self, lab: np.ndarray) -> np.ndarray:
        """Log-likelihood ratio hand : surroundings of CIELAB pixels (N, 3) uint8, capped at
        +-EVIDENCE_LIMIT, at their colours quantised to TABLE_BITS per channel (the mixtures are
        smooth at that step). Each quantised colour is evaluated once, when first seen, and kept
        in a table: a camera's views share most colours, so a view costs a lookup."""
        if self._table is None:
            self._table = np.full(1 << (3 * TABLE_BITS), np.nan, np.float32)
        q = (np.asarray(lab, np.uint8) >> (8 - TABLE_BITS)).astype(np.intp)
        codes = (q[:, 0] << (2 * TABLE_BITS)) | (q[:, 1] << TABLE_BITS) | q[:, 2]
        new = np.unique(codes[np.isnan(self._table[codes])])
        if len(new):
            step = 256 >> TABLE_BITS
            mask = (1 << TABLE_BITS) - 1
            levels = np.stack([new >> (2 * TABLE_BITS), (new >> TABLE_BITS) & mask, new & mask], axis=1)
            centres = levels * step + (step - 1) / 2
            ratio = log_likelihood(self.hand, centres) - log_likelihood(self.background, centres)
            self._table[new] = np.clip(np.nan_to_num(ratio, nan=0.0), -EVIDENCE_LIMIT, EVIDENCE_LIMIT)
        return self._table[codes]


@dataclass
class _ViewCrop:
    """A view cut down to its hands: the crop's rows and columns in the image, its CIELAB pixels
    and MANO labels, the GrabCut trimap of the band (forearm sides excluded), each crop pixel's
    nearest MANO label, the image scale of its largest hand (px per mm), and the pixels beyond a
    wrist (each hand's forearm side, where that hand is the nearest)."""

    rows: slice
    cols: slice
    image: np.ndarray
    lab: np.ndarray
    mano: np.ndarray
    trimap: np.ndarray
    nearest: np.ndarray
    px_per_mm: float
    forearm: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray, mano: np.ndarray, hands: list[HandInView], params: RefineParams) -> "_ViewCrop":
        import cv2

        present = [h for h in hands if np.isfinite(h.px_per_mm) and (mano == h.label).any()]
        scale = max((h.px_per_mm for h in present), default=1.0)
        band = max(2, int(round(params.band_mm * scale)))
        sure = max(1, int(round(params.sure_mm * scale)))
        rows, cols = _crop_box(mano > 0, band + 2)
        crop_mano = mano[rows, cols]
        crop_fg = crop_mano > 0
        crop_image = np.ascontiguousarray(image[rows, cols, :3])
        outer = cv2.dilate(crop_fg.view(np.uint8), _disk(band)).astype(bool)
        inner = cv2.erode(crop_fg.view(np.uint8), _disk(sure), borderType=cv2.BORDER_REPLICATE).astype(bool)
        trimap = np.full(crop_fg.shape, cv2.GC_BGD, np.uint8)
        trimap[outer] = cv2.GC_PR_BGD
        trimap[crop_fg] = cv2.GC_PR_FGD
        trimap[inner] = cv2.GC_FGD
        nearest = nearest_labels(crop_mano)
        forearm = np.zeros(crop_fg.shape, bool)
        for h in hands:
            behind = forearm_side(crop_fg.shape, (rows.start, cols.start), h, params.min_axis_px)
            if behind is not None:
                forearm |= behind & (nearest == h.label)
        trimap[forearm & ~crop_fg] = cv2.GC_BGD
        lab = cv2.cvtColor(crop_image, cv2.COLOR_RGB2LAB)
        return cls(rows, cols, crop_image, lab, crop_mano, trimap, nearest, scale, forearm)


def camera_model(views: list[tuple[np.ndarray, np.ndarray, list[HandInView]]],
                 params: RefineParams = RefineParams()) -> ColourModel | None:
    """A camera's colour models from some of its views [(image, mano labels, hands)] (views
    without a hand or with a black image left out); None when no view is usable."""
    crops = []
    for image, mano, hands in views:
        if not (mano > 0).any():
            continue
        view = _ViewCrop.of(image, mano, hands, params)
        if int(view.image.max(initial=0)) >= params.black_level:
            crops.append(view)
    return camera_model_of(crops, params) if crops else None


def camera_model_of(crops: list[_ViewCrop], params: RefineParams) -> ColourModel | None:
    """GrabCut's mixtures learnt on a mosaic of the crops side by side (their CIELAB pixels and
    trimaps scaled by model_scale); None when the colours are degenerate."""
    import cv2

    def scaled(array, interpolation):
        h, w = array.shape[:2]
        size = (max(1, round(w * params.model_scale)), max(1, round(h * params.model_scale)))
        return cv2.resize(array, size, interpolation=interpolation)

    labs = [scaled(v.lab, cv2.INTER_AREA) for v in crops]
    trimaps = [scaled(v.trimap, cv2.INTER_NEAREST) for v in crops]
    height = max(lab.shape[0] for lab in labs)
    lab = np.concatenate([np.pad(x, ((0, height - x.shape[0]), (0, 0), (0, 0))) for x in labs], axis=1)
    trimap = np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 0)), constant_values=cv2.GC_BGD)
                             for t in trimaps], axis=1)
    fg_like = (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)
    if not fg_like.any() or fg_like.all():
        return None
    background, hand = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut seeds its mixtures with k-means from OpenCV's global random state: seeded here, the
    # models do not depend on what this process computed before
    cv2.setRNGSeed(RNG_SEED)
    try:
        cv2.grabCut(np.ascontiguousarray(lab), trimap, None, background, hand, params.model_iterations,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a degenerate colour model (e.g. flat images)
        return None
    return ColourModel(background, hand)


def model_frames(frames: list[int], count: int) -> list[int]:
    """The frames a camera's colour models are learnt from: up to `count`, spread evenly."""
    if len(frames) <= count:
        return list(frames)
    return [frames[i] for i in np.linspace(0, len(frames) - 1, count).round().astype(int)]


def log_likelihood(model: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Log-density of pixels (N, 3) under one of OpenCV's GrabCut mixtures ((1, 65): 5 weights,
    5 means, 5 covariances), as GrabCut evaluates it (covariances regularised as it does)."""
    m = np.asarray(model, np.float64).ravel()
    weights, means, covs = m[:5], m[5:20].reshape(5, 3), m[20:].reshape(5, 3, 3)
    total = np.full(len(pixels), -np.inf)
    for k in np.nonzero(weights > 0)[0]:
        cov = covs[k] + np.eye(3) * 0.01  # GrabCut's guard for flat colours (grey cameras)
        d = pixels - means[k]
        mahalanobis = ((d @ np.linalg.inv(cov)) * d).sum(axis=1)
        total = np.logaddexp(total, np.log(weights[k]) - 0.5 * np.log(np.linalg.det(cov)) - 0.5 * mahalanobis)
    return total


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter: `source` (h, w) float32 smoothed along the edges of `guide`
    (h, w) float32 in [0, 1], over (2 radius + 1)^2 windows (box filters)."""
    import cv2

    def mean(x):
        return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1))

    mean_guide, mean_source = mean(guide), mean(source)
    a = (mean(guide * source) - mean_guide * mean_source) / (mean(guide * guide) - mean_guide * mean_guide + eps)
    b = mean_source - a * mean_guide
    return mean(a) * guide + mean(b)


CUT_GAMMA = 50.0       # GrabCut's weight of a cut between two neighbours of equal colour
CUT_SCALE = 256.0      # integer capacities of the flow network: costs in 1/256ths
# (dy, dx) of the 8 neighbours of a pixel; the first four hold each pair of neighbours once
NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1), (0, -1), (-1, 0), (-1, -1), (-1, 1))


def contrast_beta(image: np.ndarray) -> float:
    """GrabCut's contrast scale of an (h, w, C) uint8 image: 1 / (2 mean |colour difference|^2)
    over its pairs of 8-neighbours (0 for a flat image)."""
    import cv2

    h, w = image.shape[:2]
    total, count = 0.0, 0
    for dy, dx in NEIGHBOURS[:4]:
        a = np.ascontiguousarray(image[0:h - dy, max(0, -dx):w - max(0, dx)])
        b = np.ascontiguousarray(image[dy:h, max(0, dx):w - max(0, -dx)])
        total += cv2.norm(a, b, cv2.NORM_L2SQR) if a.size else 0.0
        count += a.shape[0] * a.shape[1]
    return 0.5 * count / total if total > 1e-9 else 0.0


def min_cut(image: np.ndarray, evidence: np.ndarray, hand: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Hand or not (h, w) bool: GrabCut's segmentation energy minimised over the free pixels.

    image (h, w, C) uint8: the colours whose contrast makes a cut between neighbours cheap;
    evidence (h, w) float: each pixel's log-likelihood ratio hand : surroundings (read at the free
    pixels only); hand, background (h, w) bool: the pixels fixed on either side (disjoint); every
    other pixel is free. The energy, as in GrabCut (Rother et al. 2004, OpenCV's constants): each
    free pixel costs its evidence when it is left out of the hand (its minus evidence when taken
    in), and each pair of 8-neighbours on different sides costs
    50 / distance * exp(-beta |colour difference|^2) (`contrast_beta`). Only the free pixels and
    their fixed neighbours make up the flow network (scipy's maximum flow), so the cost follows
    the free pixels, not the image's size as in OpenCV's grabCut (its graph has every pixel)."""
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    free = ~(hand | background)
    out = hand.copy()
    n = int(np.count_nonzero(free))
    if n == 0:
        return out
    h, w = free.shape
    beta = contrast_beta(image)
    colours = np.asarray(image).reshape(h, w, -1)
    node = np.full((h, w), -1, np.int64)
    node[free] = np.arange(n)
    ys, xs = np.nonzero(free)
    own = colours[ys, xs].astype(np.float32)
    value = np.asarray(evidence, np.float64)[ys, xs]
    to_hand, to_surroundings = np.maximum(value, 0.0), np.maximum(-value, 0.0)
    heads, tails, capacities = [], [], []
    for k, (dy, dx) in enumerate(NEIGHBOURS):
        qy, qx = ys + dy, xs + dx
        inside = np.nonzero((qy >= 0) & (qy < h) & (qx >= 0) & (qx < w))[0]
        qy, qx = qy[inside], qx[inside]
        square = ((own[inside] - colours[qy, qx]) ** 2).sum(axis=1)
        weight = CUT_GAMMA / np.hypot(dy, dx) * np.exp(-beta * square)
        # a free pixel next to a fixed one: cutting them apart costs the free pixel's side
        to_hand += np.bincount(inside, weights=weight * hand[qy, qx], minlength=n)
        to_surroundings += np.bincount(inside, weights=weight * background[qy, qx], minlength=n)
        if k < 4:  # two free neighbours: one edge each way, each pair once
            both = free[qy, qx]
            heads += [inside[both], node[qy, qx][both]]
            tails += [node[qy, qx][both], inside[both]]
            capacities += [weight[both]] * 2
    ids = np.arange(2, n + 2)  # 0: the hand terminal (source), 1: the surroundings (sink)
    rows = np.concatenate([np.zeros(n, np.int64), ids, *(x + 2 for x in heads)])
    cols = np.concatenate([ids, np.ones(n, np.int64), *(x + 2 for x in tails)])
    caps = np.rint(np.concatenate([to_hand, to_surroundings, *capacities]) * CUT_SCALE).astype(np.int32)
    network = csr_array((caps, (rows, cols)), shape=(n + 2, n + 2))
    flow = maximum_flow(network, 0, 1, method="dinic").flow
    residual = csr_array(network - flow)
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, 0, directed=True, return_predecessors=False)
    taken = np.zeros(n + 2, bool)
    taken[reached] = True
    out[free] = taken[2:]
    return out


def _snap(view: _ViewCrop, params: RefineParams, model: ColourModel | None) -> tuple[np.ndarray | None, str | None]:
    """Hand or not for every pixel of the band -> (refined crop labels, None) or (None, why not).

    A pixel's evidence is the log-likelihood ratio of its colour under the hand and surroundings
    mixtures, plus `prior` towards what MANO says there; the evidence is smoothed along the
    image's edges (guided filter on CIELAB lightness) and its sign decides where it is sure
    (`_cut_along_edges` decides the rest). Pixels outside the band stay what the trimap fixes."""
    import cv2

    trimap = view.trimap
    unknown = (trimap == cv2.GC_PR_FGD) | (trimap == cv2.GC_PR_BGD)
    if not unknown.any() or not (trimap == cv2.GC_FGD).any() and not (trimap == cv2.GC_PR_FGD).any():
        return None, "no_contrast"
    if model is None:
        model = camera_model_of([view], params)
        if model is None:
            return None, "no_contrast"
    colour = np.zeros(trimap.shape, np.float32)
    colour[unknown] = model.evidence(view.lab[unknown])
    evidence = np.where(trimap == cv2.GC_FGD, EVIDENCE_LIMIT, -EVIDENCE_LIMIT).astype(np.float32)
    evidence[unknown] = colour[unknown] + np.where(trimap[unknown] == cv2.GC_PR_FGD, params.prior, -params.prior)
    lightness = view.lab[..., 0].astype(np.float32) / 255.0
    smoothed = guided_filter(lightness, evidence, params.snap_radius, params.snap_eps)
    crop_fg = view.mano > 0
    hand = _cut_along_edges(view, unknown, smoothed, colour, params)
    # keep the parts that touch the MANO hand: a skin-coloured patch in the band alone is not hand
    count, components = cv2.connectedComponents(hand.view(np.uint8), connectivity=8)
    if count > 2:
        touching = np.unique(components[hand & crop_fg])
        hand = np.isin(components, touching[touching > 0])
    labels = np.where(hand, view.nearest, 0).astype(np.uint8)
    labels[crop_fg & hand] = view.mano[crop_fg & hand]
    return labels, None


def _cut_along_edges(view: _ViewCrop, unknown: np.ndarray, smoothed: np.ndarray, colour: np.ndarray,
                     params: RefineParams) -> np.ndarray:
    """Hand or not (h, w) bool, the band's unsure pixels decided by the image's edges.

    unknown: the band (h, w) bool, smoothed: its smoothed evidence and colour: its colours'
    evidence alone ((h, w) float32 each). Band pixels whose smoothed evidence lies within
    +-`confident` are unsure. Those within `edge_mm` of a sure one are decided by a minimum cut
    (`min_cut`: their colours' evidence and contrast-weighted smoothness over the CIELAB crop)
    between fixed pixels: the sure ones, the trimap's fixed ones, the unsure ones farther out and
    everything on a forearm side, the last two with MANO's answer."""
    import cv2

    trimap = view.trimap
    crop_fg = view.mano > 0
    sure = unknown & (np.abs(smoothed) > params.confident)
    radius = max(1, int(round(params.edge_mm * view.px_per_mm)))
    far = (unknown & ~cv2.dilate(sure.view(np.uint8), _disk(radius)).astype(bool)) | view.forearm
    background = (trimap == cv2.GC_BGD) | (sure & (smoothed < 0)) | (far & ~crop_fg)
    hand = (trimap == cv2.GC_FGD) | (sure & (smoothed > 0)) | (far & crop_fg)
    return min_cut(view.lab, colour, hand, background & ~hand)
