"""refine_masks: the refinement on drawn images with a known true hand, and the stage on a tiny
capture (outputs for every rendered view, the quality table, reruns, stops, camera flags)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from interhand_prep.core import mask_refine
from interhand_prep.core.errors import InputError
from interhand_prep.core.layout import MASK_LABELS, SequenceLayout, decode_mask
from interhand_prep.core.manifest import Manifest
from interhand_prep.core.options import RefineOptions, RenderOptions
from interhand_prep.stages import get_annots as annots
from interhand_prep.stages import refine_masks, render_mesh
from interhand_prep.stages.base import Previous

ONE, TWO = "0051_dinosaur", "0266_dh_pray"
RIGHT, LEFT = MASK_LABELS["right"], MASK_LABELS["left"]
SKIN = np.array([215.0, 160.0, 130.0])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / max(np.count_nonzero(a | b), 1)


def hand_shape(h: int, w: int, cx: float, wrist_y: float, scale: float = 1.0) -> np.ndarray:
    """A palm (ellipse) with four fingers pointing up (-y) and the wrist at the bottom, bool (h, w)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    palm_cy = wrist_y - 30 * scale
    shape = ((xs - cx) / (26 * scale)) ** 2 + ((ys - palm_cy) / (30 * scale)) ** 2 <= 1
    for k, dx in enumerate((-18, -6, 6, 18)):
        top = palm_cy - (48 + 6 * (k in (1, 2))) * scale
        shape |= (np.abs(xs - cx - dx * scale) <= 4.5 * scale) & (ys >= top) & (ys <= palm_cy)
    return shape


def scene(rng, h=300, w=240, shift=(3, -2), forearm=True, mono=False, size=1.5):
    """A textured, striped background, a skin-coloured hand (and forearm below the wrist; the hand
    about 170 px tall, as InterHand2.6M's), and a MANO mask of the same hand drawn a few pixels
    off, with thicker fingers: (image, mano labels, truth)."""
    ys, xs = np.mgrid[0:h, 0:w]
    background = np.where(((xs + ys) // 9) % 2 == 0, 60.0, 95.0)[..., None] * np.array([0.6, 0.7, 1.0])
    image = background + rng.normal(0, 6, (h, w, 3))
    truth = hand_shape(h, w, 120, 240, scale=size)
    arm = forearm & (np.abs(xs - 120) <= 22 * size) & (ys > 225) if forearm else np.zeros((h, w), bool)
    shade = 1.0 - 0.25 * (ys / h)[..., None]
    for region in (arm, truth):
        image[region] = (SKIN * shade[region]) + rng.normal(0, 5, (int(region.sum()), 3))
    if mono:
        image = image.mean(axis=2, keepdims=True).repeat(3, axis=2)
    mano_shape = hand_shape(h, w, 120 + shift[0], 240 + shift[1], scale=1.06 * size)
    mano = np.where(mano_shape, RIGHT, 0).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), mano, truth


def right_hand(px_per_mm=1.0, wrist=(120.0, 240.0), knuckle=(120.0, 150.0)):
    return mask_refine.HandInView(RIGHT, np.array(wrist), np.array(knuckle), px_per_mm)


@pytest.mark.parametrize("mono", [False, True], ids=["colour", "grey"])
def test_the_refined_mask_is_closer_to_the_true_hand_than_the_mano_mask(mono):
    rng = np.random.default_rng(3)
    image, mano, truth = scene(rng, mono=mono)
    refined, outcomes = mask_refine.refine_view(image, mano, [right_hand()])
    assert outcomes[0].status == mask_refine.REFINED
    assert set(np.unique(refined)) == {0, RIGHT}
    before, after = iou(mano > 0, truth), iou(refined > 0, truth)
    assert before < 0.85 and after > before + 0.05, (before, after)
    # the forearm below the wrist continues the hand in the same skin: none of it is hand
    below_wrist = np.zeros_like(truth)
    below_wrist[245:] = True
    assert not (refined.astype(bool) & below_wrist & ~(mano > 0)).any()
    # nothing farther than the band from the MANO outline
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(mano == 0)
    band = mask_refine.RefineParams().band_mm * 1.0
    assert distance[refined > 0].max() <= band + 1


def test_a_black_image_keeps_the_mano_mask_and_says_so():
    rng = np.random.default_rng(5)
    image, mano, _ = scene(rng)
    refined, outcomes = mask_refine.refine_view(np.zeros_like(image), mano, [right_hand()])
    assert np.array_equal(refined, mano)
    assert outcomes[0].status == "kept_mano_black_image" and outcomes[0].refined_pixels is None


def test_a_collapsing_refinement_keeps_the_mano_mask():
    """The MANO mask is far larger than the hand the image shows (a small hand on a blue shirt) and
    nothing inside it is taken for sure: the refinement shrinks to the hand, below min_ratio."""
    rng = np.random.default_rng(6)
    h, w = 220, 180
    ys, xs = np.mgrid[0:h, 0:w]
    image = np.array([40.0, 50.0, 150.0]) + rng.normal(0, 6, (h, w, 3))
    truth = hand_shape(h, w, 90, 160, scale=0.6)
    image[truth] = SKIN + rng.normal(0, 5, (int(truth.sum()), 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    mano = np.where(((xs - 90) / 60) ** 2 + ((ys - 120) / 80) ** 2 <= 1, RIGHT, 0).astype(np.uint8)
    params = mask_refine.RefineParams(band_mm=10.0, sure_mm=200.0)
    refined, outcomes = mask_refine.refine_view(image, mano, [right_hand(wrist=(90.0, 160.0), knuckle=(90.0, 100.0))],
                                                params)
    assert outcomes[0].status == "kept_mano_collapsed"
    assert outcomes[0].refined_pixels < params.min_ratio * outcomes[0].mano_pixels
    assert np.array_equal(refined, mano)


def test_two_hands_keep_their_labels_and_a_hand_cut_by_the_border_is_refined():
    rng = np.random.default_rng(7)
    image, mano, truth = scene(rng, forearm=False)
    # the right half of the mask is the left hand's; the hand runs off the top of the image
    image, mano, truth = image[40:], mano[40:].copy(), truth[40:]
    mano[:, 123:][mano[:, 123:] > 0] = LEFT
    hands = [right_hand(wrist=(120.0, 200.0), knuckle=(120.0, 110.0)),
             mask_refine.HandInView(LEFT, np.array([120.0, 200.0]), np.array([120.0, 110.0]), 1.0)]
    refined, outcomes = mask_refine.refine_view(image, mano, hands)
    assert [o.status for o in outcomes] == ["refined", "refined"]
    assert set(np.unique(refined)) == {0, LEFT, RIGHT}
    # every hand pixel carries the label of the nearest MANO pixel; inside MANO, MANO's label
    inside = (refined > 0) & (mano > 0)
    assert np.array_equal(refined[inside], mano[inside])
    assert (refined[:, :110][refined[:, :110] > 0] == RIGHT).all()
    assert (refined[:, 135:][refined[:, 135:] > 0] == LEFT).all()
    assert iou(refined > 0, truth) > iou(mano > 0, truth)


def test_a_view_without_a_hand_stays_empty():
    image = np.full((40, 30, 3), 90, np.uint8)
    refined, outcomes = mask_refine.refine_view(image, np.zeros((40, 30), np.uint8), [right_hand()])
    assert not refined.any() and outcomes[0].status == mask_refine.NO_HAND


def test_camera_flags_pick_the_dark_camera_only():
    rows = []
    rng = np.random.default_rng(8)
    for cam in ("400002", "400004", "400016", "400026", "410001"):
        for frame in range(10):
            if cam == "410001":
                status, value = ("kept_mano_black_image", "") if frame < 6 else ("refined", "0.9")
            else:
                status, value = "refined", f"{rng.uniform(0.88, 0.95):.4f}"
            rows.append([str(frame), cam, "right", "900", "" if not value else "880", value, status])
    flags = refine_masks.camera_flags(rows)
    assert list(flags) == ["410001"], flags
    # cameras that agree within a few hundredths are never flagged, however small their spread
    steady = [[r[0], r[1], r[2], r[3], r[4], "0.9000" if r[1] != "400004" else "0.8800", "refined"] for r in rows]
    assert refine_masks.camera_flags(steady) == {}


# ---------------------------------------------------------------------------------------------
# The stage


def rendered(helpers, gl_platform, tiny, seq=TWO, hand_type="both"):
    sel = helpers.selector(tiny, seq, hand_type=hand_type)
    annots.run(sel, progress=False)
    render_mesh.run(sel, RenderOptions(backend=gl_platform, render_workers=1), progress=False)
    return sel


def quality_table(layout: SequenceLayout) -> list[dict]:
    with open(layout.mask_quality, newline="") as f:
        return list(csv.DictReader(f))


def test_the_stage_refines_every_rendered_view_and_tables_every_hand(helpers, gl_platform, tiny):
    sel = rendered(helpers, gl_platform, tiny)
    layout = sel.layout
    result = refine_masks.run(sel, RefineOptions(refine_workers=1), progress=False)
    frames, cams = layout.read_frames(), layout.read_cams()
    assert result.refined_views == len(frames) * len(cams)
    rows = quality_table(layout)
    assert list(rows[0]) == list(refine_masks.QUALITY_COLUMNS)
    assert len(rows) == len(frames) * len(cams) * 2  # both hands in every view
    for row in rows:
        cam, frame, hand = row["camera"], int(row["frame"]), row["hand"]
        mano, refined = decode_mask(layout.mask(cam, frame)), decode_mask(layout.refined_mask(cam, frame))
        label = MASK_LABELS[hand]
        assert int(row["mano_pixels"]) == np.count_nonzero(mano == label)
        if row["status"].startswith("kept_mano_"):
            assert np.array_equal(refined == label, mano == label), row
        elif row["status"] == "refined":
            assert int(row["refined_pixels"]) == np.count_nonzero(refined == label)
            assert float(row["iou_with_mano"]) == pytest.approx(iou(refined == label, mano == label), abs=1e-4)
        else:
            assert row["status"] == "no_hand" and not (mano == label).any()
    record = Manifest.read(layout.root).stage("refine_masks")
    assert record["result"]["views_refined"] == result.refined_views
    assert refine_masks.run(sel, RefineOptions(refine_workers=1), progress=False).up_to_date


def test_reruns_redo_what_changed(helpers, gl_platform, tiny, monkeypatch):
    sel = rendered(helpers, gl_platform, tiny)
    layout = sel.layout
    opts = RefineOptions(refine_workers=1)
    refine_masks.run(sel, opts, progress=False)
    table = layout.mask_quality.read_text()
    cam = layout.read_cams()[1]
    frame = layout.read_frames()[3]
    untouched = layout.refined_mask(layout.read_cams()[0], frame)
    mtime = untouched.stat().st_mtime_ns
    image = layout.image(cam, frame)
    image.write_bytes(image.read_bytes())  # a new copy of one image: that camera is redone
    again = refine_masks.run(sel, opts, progress=False)
    assert again.refined_views == len(layout.read_frames()) and "1 camera(s) new or changed" in again.reason
    assert untouched.stat().st_mtime_ns == mtime
    assert layout.mask_quality.read_text() == table  # same image bytes: same rows
    wider = refine_masks.run(sel, RefineOptions(band_mm=12.0, refine_workers=1), progress=False)
    assert wider.refined_views == len(layout.read_frames()) * len(layout.read_cams()) and "band_mm" in wider.reason
    # a new revision of the method makes every refined mask stale
    monkeypatch.setattr(mask_refine.RefineParams, "__init__", revised(mask_refine.RefineParams.__init__))
    newer = refine_masks.run(sel, RefineOptions(band_mm=12.0, refine_workers=1), progress=False)
    assert newer.refined_views == len(layout.read_frames()) * len(layout.read_cams()) and "revision" in newer.reason


def revised(init):
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        object.__setattr__(self, "revision", self.revision + 1)
    return __init__


def test_a_stopped_run_resumes_and_keeps_the_rows_of_finished_views(helpers, gl_platform, tiny, tmp_path, monkeypatch):
    sel = rendered(helpers, gl_platform, tiny)
    layout = sel.layout
    opts = RefineOptions(refine_workers=1)
    real = SequenceLayout.write_view
    calls = {"n": 0}

    per_camera = len(layout.read_frames())  # a task: one camera's views

    def stop_in_second_task(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == per_camera + 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SequenceLayout, "write_view", stop_in_second_task)
    with pytest.raises(KeyboardInterrupt):
        refine_masks.run(sel, opts, progress=False)
    monkeypatch.undo()
    views = len(layout.read_frames()) * len(layout.read_cams())
    assert layout.progress("refine_masks").is_file() and layout.unfinished_rows("refine_masks").is_file()
    assert not layout.mask_quality.exists() and Manifest.read(layout.root).stage("refine_masks") is None
    plan = refine_masks.STAGE.plan(sel, opts, Previous.read(layout, "refine_masks"))
    finished = views - len(plan.todo)
    assert "interrupted" in plan.reason and per_camera < finished < views
    again = refine_masks.run(sel, opts, progress=False)
    assert again.refined_views == views - finished and again.resumed == finished
    assert not layout.unfinished_rows("refine_masks").exists() and not layout.progress("refine_masks").exists()
    reference = helpers.selector(tiny, TWO, hand_type="both", out_root=tmp_path / "ref")
    annots.run(reference, progress=False)
    render_mesh.run(reference, RenderOptions(backend=gl_platform, render_workers=1), progress=False)
    refine_masks.run(reference, opts, progress=False)
    assert layout.mask_quality.read_text() == reference.layout.mask_quality.read_text()
    for path in sorted((layout.root / "mask_cihp").rglob("*.png")):
        assert path.read_bytes() == (reference.layout.root / path.relative_to(layout.root)).read_bytes()


def test_refine_masks_needs_rendered_masks(helpers, tiny):
    sel = helpers.selector(tiny, ONE)
    annots.run(sel, progress=False)
    with pytest.raises(InputError, match="run render_mesh.py first"):
        refine_masks.run(sel, RefineOptions(), progress=False)
    assert not sel.layout.progress("refine_masks").exists()


def test_process_runs_the_stage_only_when_asked(helpers, gl_platform, tiny):
    from interhand_prep.stages import pipeline

    sel = helpers.selector(tiny, ONE)
    report = helpers.run_stages(sel)
    assert report.stages["refine"].status == "off" and not (sel.layout.root / "mask_cihp").exists()
    report = helpers.run_stages(sel, pipeline.StageOptions(run_refine_masks=True))
    assert report.stages["refine"].status == "done" and report.ok
    assert pipeline.StageOptions(run_refine_masks=True).to_argv()[0] == "--refine-masks"


def test_outline_shift_is_the_mean_distance_the_outline_moved_in_millimetres():
    import cv2

    truth = hand_shape(300, 240, 120, 240, scale=1.5)
    grown = cv2.dilate(truth.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))).astype(bool)
    assert mask_refine.outline_shift_mm(truth, truth, 1.0) == 0.0
    # grown by 4 px all round (less where the gaps between fingers fill up)
    assert 3.0 < mask_refine.outline_shift_mm(grown, truth, 1.0) < 4.5
    assert mask_refine.outline_shift_mm(grown, truth, 2.0) == pytest.approx(mask_refine.outline_shift_mm(grown, truth, 1.0) / 2)
    # a refinement that moves the outline that far is not kept
    rng = np.random.default_rng(9)
    image, mano, _ = scene(rng)
    _, kept = mask_refine.refine_view(image, mano, [right_hand()], mask_refine.RefineParams(max_shift_mm=0.5))
    assert kept[0].status == "kept_mano_disagrees"


def edge_view(params: mask_refine.RefineParams, wrist=(45.0, 75.0), knuckle=(45.0, 40.0)):
    """A grey image, bright left of x = 60 and dark from it on, and a MANO square reaching x = 65:
    (view crop, its band, the crop column of image column 60, the view's own colour models)."""
    image = np.full((80, 100, 3), 60, np.uint8)
    image[:, :60] = 150
    mano = np.zeros((80, 100), np.uint8)
    mano[20:60, 25:66] = RIGHT
    view = mask_refine._ViewCrop.of(image, mano, [right_hand(wrist=wrist, knuckle=knuckle)], params)
    import cv2

    band = (view.trimap == cv2.GC_PR_FGD) | (view.trimap == cv2.GC_PR_BGD)
    return view, band, 60 - view.cols.start, mask_refine.camera_model_of([view], params)


def colour_of(view, model):
    """(h, w) float32: the colours' evidence of the view's band pixels under `model`, 0 elsewhere."""
    band = (view.trimap == 2) | (view.trimap == 3)  # cv2.GC_PR_BGD, cv2.GC_PR_FGD
    colour = np.zeros(band.shape, np.float32)
    colour[band] = model.evidence(view.lab[band])
    return colour


def test_unsure_pixels_near_sure_ones_follow_the_edge_and_far_ones_keep_mano():
    params = mask_refine.RefineParams(band_mm=8.0, sure_mm=12.0, edge_mm=20.0)
    view, band, edge, model = edge_view(params)
    crop_fg = view.mano > 0
    xs = np.broadcast_to(np.arange(band.shape[1]), band.shape)
    # the colours are sure of the hand left of column edge - 4 and of the surroundings right of
    # edge + 9, unsure between, where only the prior speaks (MANO's outline lies 5 px right of the
    # image's edge)
    prior = np.where(crop_fg, 0.5, -0.5)
    smoothed = np.where(xs < edge - 4, 5.0, np.where(xs > edge + 9, -5.0, prior)).astype(np.float32)
    hand = mask_refine._cut_along_edges(view, band, smoothed, colour_of(view, model), params)
    rows = slice(25 - view.rows.start, 55 - view.rows.start)  # away from the square's corners
    assert (smoothed > 0)[rows, edge + 1:edge + 5].all()  # the sign alone: MANO's outline
    assert hand[rows, edge - 4:edge].all() and not hand[rows, edge:edge + 9].any()
    # nothing the colours decide near: MANO's answer stands, whatever the edges
    unsure = np.zeros_like(smoothed)
    hand = mask_refine._cut_along_edges(view, band, unsure, colour_of(view, model), params)
    assert np.array_equal(hand[band], crop_fg[band])
    # sure pixels too far (edge_mm) from the unsure ones leave them MANO's answer
    near_only = mask_refine.RefineParams(band_mm=8.0, sure_mm=12.0, edge_mm=1.0)
    far_sure = np.where(xs < edge - 12, 5.0, 0.0).astype(np.float32)
    hand = mask_refine._cut_along_edges(view, band, far_sure, colour_of(view, model), near_only)
    assert np.array_equal(hand[band & (xs > edge - 10)], crop_fg[band & (xs > edge - 10)])


def test_beyond_the_wrist_the_mask_stays_mano_whatever_the_colours_say():
    # the wrist crosses the MANO square at y = 45, the knuckles above it: below lies the forearm
    params = mask_refine.RefineParams(band_mm=8.0, sure_mm=12.0, edge_mm=20.0)
    view, band, edge, model = edge_view(params, wrist=(45.0, 45.0), knuckle=(45.0, 25.0))
    crop_fg = view.mano > 0
    ys = np.broadcast_to(np.arange(band.shape[0])[:, None] + view.rows.start, band.shape)
    assert view.forearm[ys > 46].any() and not view.forearm[ys < 44].any()
    # the colours are sure that the dark part is surroundings and the bright part hand, everywhere
    xs = np.broadcast_to(np.arange(band.shape[1]), band.shape)
    smoothed = np.where(xs < edge, 5.0, -5.0).astype(np.float32)
    hand = mask_refine._cut_along_edges(view, band, smoothed, colour_of(view, model), params)
    in_front, behind = band & (ys < 44), band & (ys > 46)
    assert np.array_equal(hand[in_front], (xs < edge)[in_front])  # the colours decide
    assert np.array_equal(hand[behind], crop_fg[behind])  # MANO's answer: the dark strip stays hand
    assert (crop_fg & ~(xs < edge))[behind].any()


@pytest.mark.parametrize("seed", [0, 1])
def test_min_cut_finds_the_segmentation_opencv_grabcut_finds_with_the_same_models(seed):
    # OpenCV's grabCut, one iteration with its mixtures held fixed, minimises the same energy over
    # every pixel of the image: on the free pixels both must agree (up to the network's integer
    # capacities and ties)
    import cv2

    rng = np.random.default_rng(seed)
    image, mano, _ = scene(rng, shift=(4, -3))
    image = np.ascontiguousarray(image)
    trimap = np.full(mano.shape, cv2.GC_BGD, np.uint8)
    fg = (mano > 0).view(np.uint8)
    trimap[cv2.dilate(fg, np.ones((13, 13), np.uint8)) > 0] = cv2.GC_PR_BGD
    trimap[fg > 0] = cv2.GC_PR_FGD
    trimap[cv2.erode(fg, np.ones((13, 13), np.uint8)) > 0] = cv2.GC_FGD
    background, hand = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.setRNGSeed(1)
    cv2.grabCut(image, trimap.copy(), None, background, hand, 1, cv2.GC_INIT_WITH_MASK)  # learns the models
    expected = trimap.copy()
    cv2.grabCut(image, expected, None, background.copy(), hand.copy(), 1, cv2.GC_EVAL_FREEZE_MODEL)
    free = (trimap == cv2.GC_PR_BGD) | (trimap == cv2.GC_PR_FGD)
    evidence = np.zeros(mano.shape)
    colours = image[free].astype(np.float64)
    evidence[free] = mask_refine.log_likelihood(hand, colours) - mask_refine.log_likelihood(background, colours)
    ours = mask_refine.min_cut(image, evidence, trimap == cv2.GC_FGD, trimap == cv2.GC_BGD)
    theirs = (expected == cv2.GC_FGD) | (expected == cv2.GC_PR_FGD)
    assert np.array_equal(ours[~free], (trimap == cv2.GC_FGD)[~free])
    assert 0.05 < theirs[free].mean() < 0.95  # the cut splits the free pixels
    assert (ours == theirs)[free].mean() > 0.998
