"""The figures (interhand_prep/figures.py, the notebooks' and the docs' images) and the GIF labels:
every figure, built from a small processed sequence, keeps the rules (no text box over another, an
opaque background, colour-map ends that stand out from what they are drawn over; 150 dpi PNG with
an SVG beside it), and the rules' checks fail on the figures they exist to catch."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

matplotlib = pytest.importorskip("matplotlib", reason="figures need matplotlib (requirements-dev.txt)")

from interhand_prep import figures  # noqa: E402
from interhand_prep.core.fileio import FILE_MODE  # noqa: E402
from interhand_prep.core.layout import SequenceLayout, decode_depth, decode_mask  # noqa: E402
from interhand_prep.core.manifest import Manifest  # noqa: E402
from interhand_prep.core.options import AnnotsOptions, BlendWeightOptions, RefineOptions, RenderOptions  # noqa: E402
from interhand_prep.core.selection import SequenceSelector  # noqa: E402
from interhand_prep.stages import gif  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEQ = "0266_dh_pray"
CAMERAS = ["400002", "400016"]
RIG_SIZE = 24  # cameras of the dense rig the camera_rig figure is drawn with (the capture has two)
FAR_OFF_MM, THRESHOLD_MM = 30.0, 15.0  # the middle frame's joints are this far off the fit; it is dropped


@pytest.fixture(scope="session")
def annotated(tmp_path_factory) -> SequenceSelector:
    """A two-hand sequence of 2 cameras x 3 frames at 1/4 size through get_annots (with
    --max-joint-error, which drops the middle frame) and prepare_blend_weights, no rendering (for
    the figures that need none: they run without OpenGL)."""
    from interhand_prep.stages import get_annots, prepare_blend_weights
    from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture

    root = tmp_path_factory.mktemp("figures")
    spec = CaptureSpec(capture=0, seed=21, camera_ids=CAMERAS, image_scale=0.25, default_cases=False,
                       sequences=[SequenceSpec(SEQ, "both", 3)], far_off={SEQ: {1: FAR_OFF_MM}})
    generate_capture(root / "IH", root / "mano", spec)
    sel = SequenceSelector(capture=0, seq=SEQ, basedir=root / "IH", mano_dir=root / "mano", hand_type="both")
    get_annots.run(sel, AnnotsOptions(max_joint_error=THRESHOLD_MM), progress=False)
    prepare_blend_weights.run(sel, BlendWeightOptions(lbs_workers=1), progress=False)
    return sel


@pytest.fixture(scope="session")
def rendered(annotated, gl_platform) -> SequenceSelector:
    """`annotated` with masks, depth and part labels rendered and the masks refined, in the same
    folder (the tests only read it)."""
    from interhand_prep.stages import refine_masks, render_mesh

    render_mesh.run(annotated, RenderOptions(backend=gl_platform, render_workers=1, parts=True), progress=False)
    refine_masks.run(annotated, RefineOptions(refine_workers=1), progress=False)
    return annotated


def _view(layout: SequenceLayout):
    cams = layout.read_cameras()
    camera, frame = cams.ids[0], layout.read_frames()[0]
    image = np.asarray(Image.open(layout.image(camera, frame)).convert("RGB"))
    return cams, camera, frame, image


# One builder per figure, as the notebooks call them (new_anno_vis.ipynb, dataset_vis.ipynb)


def dense_rig():
    """RIG_SIZE real camera ids on a dome about the hands, as the synthetic captures place them
    (CameraSet, mm), every fifth filtered: more labels to place than a test capture has."""
    from interhand_prep.core.dataset import PACKAGED_CAMERA_TABLE, read_camera_table
    from interhand_prep.synthetic.capture import choose_cameras, dome_cameras

    rng = np.random.default_rng(4)
    ids = choose_cameras(RIG_SIZE, rng)
    table = read_camera_table(PACKAGED_CAMERA_TABLE)
    rig, _ = dome_cameras(ids, {i: table[i].portrait for i in ids}, rng)
    return rig, np.arange(len(ids)) % 5 != 4


def camera_rig(sel: SequenceSelector):
    """As dataset_vis.ipynb draws it, with the annotated joints of the sequence's first frame and
    the dense rig (the notebook itself runs on the demo's 16 cameras in test_workflow)."""
    from interhand_prep.core.dataset import InterHandDataset, read_skeleton

    ds = InterHandDataset(sel.basedir, "train")
    frame = sel.layout.read_frames()[0]
    skeleton = read_skeleton(sel.basedir)
    hands = {}
    for hand, first in (("right", 0), ("left", 21)):
        world_mm, valid = ds.capture_joints(0).arrays([frame], hand)
        parents = np.array([skeleton[first + j] - first if skeleton[first + j] >= 0 else -1 for j in range(21)])
        hands[hand] = (world_mm[0] / 1000.0, valid[0], parents)
    rig, kept = dense_rig()
    return figures.camera_rig(rig.centers / 1000.0, rig.ids, kept, rig.R[:, 2], hands, title=f"{SEQ}, frame {frame}")


def mesh_projection(sel):
    cams, camera, frame, image = _view(sel.layout)
    vertices = np.load(sel.layout.vertices("right", frame))
    pixels, _ = cams.subset([camera]).project(vertices * 1000.0)
    return figures.mesh_projection(image, pixels[0], np.load(sel.layout.lbs_file("right", "faces")), "right",
                                   title=f"camera {camera}, frame {frame}")


def mesh_coordinates(sel):
    from interhand_prep.core.mano_forward import axis_angle_to_matrix

    layout = sel.layout
    cams, camera, frame, _ = _view(layout)
    vertices = np.load(layout.vertices("left", frame))
    params = layout.read_params(layout.params("left", frame))
    camera_coords = ((cams.R[0] @ (vertices * 1000.0).T).T + cams.T[0]) / 1000.0
    pose_coords = (vertices - params["Th"]) @ axis_angle_to_matrix(params["Rh"])[0]
    panels = [(vertices, "world coordinates", True), (camera_coords, f"camera {camera} coordinates", True),
              (pose_coords, "pose space", False)]
    return figures.mesh_coordinates(panels, np.load(layout.lbs_file("left", "faces")), "left", title="three frames")


def _lbs(sel, hand="right"):
    return {name: np.load(sel.layout.lbs_file(hand, name)) for name in ("tvertices", "joints", "faces", "parents", "tbw")}


def tpose(sel):
    lbs = _lbs(sel)
    return figures.tpose(lbs["tvertices"], lbs["joints"], lbs["faces"], lbs["parents"], "right")


def blend_weights(sel):
    from interhand_prep.core.skinning import grid_axes

    options = (Manifest.read(sel.layout.root).recipe("prepare_blend_weights") or {}).get("options", {})
    voxel, padding = options["voxel_size"], options["padding"]
    lbs = _lbs(sel)
    return figures.blend_weights(lbs["tbw"], grid_axes(lbs["tvertices"], voxel, padding), voxel, "right")


def fit_error(sel):
    threshold = Manifest.read(sel.layout.root).recipe("get_annots")["options"]["max_joint_error"]
    return figures.fit_error(sel.layout.read_fit_quality(), threshold, sel.layout.read_frames())


def fit_worst_frame(sel):
    cams, camera, frame, image = _view(sel.layout)
    vertices = np.load(sel.layout.vertices("right", frame))
    fitted_px = cams.subset([camera]).project(vertices[:21] * 1000.0)[0][0]  # stand-ins for the regressed joints
    return figures.fit_worst_frame(image, fitted_px, fitted_px + 4.0, np.arange(21) % 5 != 3, "right", title="worst")


def mask_depth(sel):
    _, camera, frame, image = _view(sel.layout)
    return figures.mask_depth(image, decode_mask(sel.layout.mask(camera, frame)),
                              decode_depth(sel.layout.depth(camera, frame))[..., 0], title=f"camera {camera}")


def mask_outlines(sel):
    _, camera, frame, image = _view(sel.layout)
    return figures.mask_outlines(image, decode_mask(sel.layout.mask(camera, frame)),
                                 decode_mask(sel.layout.refined_mask(camera, frame)), title=f"camera {camera}")


def part_labels(sel):
    _, camera, frame, image = _view(sel.layout)
    table = {row["label"]: row for row in json.loads(sel.layout.parts_json.read_text())["parts"]}
    return figures.part_labels(image, decode_mask(sel.layout.parts(camera, frame)), table, title=f"camera {camera}")


UNRENDERED = {"camera_rig": camera_rig, "mesh_projection": mesh_projection, "mesh_coordinates": mesh_coordinates,
              "tpose": tpose, "blend_weights": blend_weights, "fit_error": fit_error, "fit_worst_frame": fit_worst_frame}
RENDERED = {"mask_depth": mask_depth, "mask_outlines": mask_outlines, "part_labels": part_labels}


@pytest.fixture(scope="session")
def built():
    """build(name, selector): each figure built once per session (the tests only draw and read it)."""
    cache = {}

    def build(name: str, sel: SequenceSelector):
        if name not in cache:
            cache[name] = {**UNRENDERED, **RENDERED}[name](sel)
        return cache[name]

    return build


@pytest.mark.parametrize("name", list(UNRENDERED))
def test_figures_keep_the_rules(annotated, built, name):
    fig = built(name, annotated)
    assert fig.dpi == figures.DPI
    assert figures.figure_problems(fig) == []


@pytest.mark.parametrize("name", list(RENDERED))
def test_figures_of_rendered_views_keep_the_rules(rendered, built, name):
    fig = built(name, rendered)
    assert fig.dpi == figures.DPI
    assert figures.figure_problems(fig) == []


# ---------------------------------------------------------------------------------------------
# what each figure of the issue must show


def test_camera_rig_draws_y_down_in_both_panels_and_labels_without_overlap(annotated, built):
    fig = built("camera_rig", annotated)
    rig3d, top = fig.axes
    # 3D: world y is the vertical axis, drawn downwards; above: the x-z plane, looking along y
    assert rig3d.zaxis_inverted() and "y" in rig3d.get_zlabel() and "down" in rig3d.get_zlabel()
    assert (rig3d.get_xlabel(), rig3d.get_ylabel()) == ("x (m)", "z (m)")
    assert (top.get_xlabel(), top.get_ylabel()) == ("x (m)", "z (m)") and not top.yaxis_inverted()
    assert "y (down) into the page" in top.get_title()
    ids = set(dense_rig()[0].ids)
    legend = fig.legends[0].get_texts()[0].get_text()
    for ax in (rig3d, top):
        labels = [t.get_text() for t in ax.texts]
        assert len(labels) == len(set(labels)) and set(labels) <= ids
        assert len(labels) >= 0.75 * len(ids)  # most cameras are labelled
        assert len(labels) == len(ids) or "labels left out" in legend


def test_tpose_legend_is_off_the_data(annotated, built):
    from mpl_toolkits.mplot3d import proj3d

    fig = built("tpose", annotated)
    ax = fig.axes[0]
    assert ax.get_legend() is None and len(fig.legends) == 1
    fig.draw_without_rendering()
    lbs = _lbs(annotated)
    points = np.concatenate([lbs["tvertices"], lbs["joints"]])
    x, y, _ = proj3d.proj_transform(*points.T, ax.get_proj())
    shown = ax.transData.transform(np.stack([x, y], axis=1))
    box = fig.legends[0].get_window_extent(fig.canvas.get_renderer())
    assert not any(box.contains(px, py) for px, py in shown)


def test_blend_weights_panels_sit_close(annotated, built):
    fig = built("blend_weights", annotated)
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    first, second = (ax for ax in fig.axes if ax.get_label() != "<colorbar>")
    gap = second.get_tightbbox(renderer).x0 - first.get_tightbbox(renderer).x1
    assert gap < 0.3 * figures.DPI  # under 0.3 inch between the first panel and the second's labels


def test_mask_depth_panels_alike_near_end_bright_and_a_labelled_colour_bar(rendered, built):
    fig = built("mask_depth", rendered)
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    panels = [ax for ax in fig.axes if ax not in bars]
    sizes = [ax.get_window_extent(renderer).size for ax in panels]
    assert len(panels) == 2 and np.allclose(sizes[0], sizes[1], atol=1.0), sizes
    assert len(bars) == 1 and "(m)" in bars[0].get_ylabel()
    depth_image = panels[1].get_images()[-1]
    _, camera, frame, _ = _view(rendered.layout)
    depth = decode_depth(rendered.layout.depth(camera, frame))[..., 0]
    assert depth_image.norm.vmin == pytest.approx(depth[depth > 0].min())  # the near end is the low end
    near = depth_image.get_cmap()(0.0)
    assert figures.relative_luminance(near) > 0.5  # bright; the old magma's was 0.0003


def test_fit_error_draws_and_labels_the_threshold(annotated, built):
    fig = built("fit_error", annotated)
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if np.allclose(line.get_ydata(), THRESHOLD_MM)]
    assert len(lines) == 1 and lines[0].get_linestyle() == "--"
    assert f"--max-joint-error {THRESHOLD_MM:g} mm" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_ylim()[0] <= THRESHOLD_MM <= ax.get_ylim()[1]
    assert "frame dropped" in [t.get_text() for t in ax.get_legend().get_texts()]  # the far-off frame
    plain = figures.fit_error(annotated.layout.read_fit_quality())
    assert not any(np.allclose(line.get_ydata(), THRESHOLD_MM) for line in plain.axes[0].get_lines())


# ---------------------------------------------------------------------------------------------
# saving


@pytest.mark.slow
def test_save_figure_writes_a_150_dpi_opaque_png_and_an_svg_beside_it(annotated, tmp_path):
    fig = fit_error(annotated)
    png, svg = figures.save_figure(fig, tmp_path / "figures" / "fit_error.png")
    assert svg == tmp_path / "figures" / "fit_error.svg"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.mode == "RGB"  # no alpha channel: opaque
        assert np.allclose(image.info["dpi"], figures.DPI, atol=0.05)
        assert min(image.size) > 300
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "<dc:date>" not in text
    for path in (png, svg):
        assert stat.S_IMODE(path.stat().st_mode) == FILE_MODE
    assert sorted(p.name for p in png.parent.iterdir()) == ["fit_error.png", "fit_error.svg"]  # no temporaries
    again = figures.save_figure(fit_error(annotated), tmp_path / "again.png")
    assert [p.read_bytes() for p in again] == [png.read_bytes(), svg.read_bytes()]  # reproducible bytes
    with pytest.raises(ValueError, match="expected a .png"):
        figures.save_figure(fig, tmp_path / "x.svg")


@pytest.mark.slow
def test_docs_figures_are_made_from_a_processed_sequence(rendered, tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        from make_docs_figures import DOCS_FIGURES, make_docs_figures
    finally:
        sys.path.remove(str(REPO / "tools"))
    written = make_docs_figures(rendered.basedir, tmp_path, sequence=SEQ)
    assert sorted(p.name for p in written) == sorted(n for f in DOCS_FIGURES for n in (f, f.replace(".png", ".svg")))
    for name in DOCS_FIGURES:
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and "transparency" not in image.info and image.mode in ("P", "RGB")
            assert np.allclose(image.info["dpi"], figures.DPI, atol=0.05)
    for name in DOCS_FIGURES:  # the committed images are the script's: PNG and SVG, at the docs' size
        with Image.open(REPO / "docs" / name) as image:
            assert np.allclose(image.info["dpi"], figures.DPI, atol=0.05) and max(image.size) < 1600
        assert (REPO / "docs" / name).with_suffix(".svg").is_file()


def test_the_runtime_does_not_import_matplotlib():
    code = ("import sys, importlib; import interhand_prep.cli as cli\n"
            "for c in cli.COMMANDS: importlib.import_module(c.runs.split(':')[0])\n"
            "print('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# the checks fail where they must


def test_the_overlap_check_finds_text_over_text():
    fig = figures.new_figure(4, 3)
    ax = fig.subplots()
    ax.text(0.5, 0.5, "camera 400002")
    ax.text(0.52, 0.5, "camera 400004")  # a few pixels to the right: the boxes overlap
    ax.text(0.1, 0.1, "")                # empty texts are no boxes
    problems = figures.figure_problems(fig)
    assert len(problems) == 1 and "'camera 400002' overlaps 'camera 400004'" in problems[0]
    crowded = figures.new_figure(2, 2)
    axis = crowded.subplots()
    axis.set_xticks(np.linspace(0, 1, 40))  # 40 tick labels across 2 inches
    assert any("overlaps" in p for p in figures.figure_problems(crowded))


def test_the_overlap_check_finds_the_old_tpose_tick_labels(annotated):
    """The T-pose figure as the notebook drew it before: default ticks on a cube of 7 inches."""
    from matplotlib.lines import Line2D

    lbs = _lbs(annotated)
    fig = figures.new_figure(7, 7, layout=None)
    ax = fig.add_subplot(projection="3d")
    ax.plot_trisurf(*lbs["tvertices"].T, triangles=lbs["faces"], color="lightgray", alpha=0.35, linewidth=0)
    middle, half = lbs["tvertices"].mean(0), np.ptp(lbs["tvertices"], axis=0).max() / 2
    ax.set(xlim=(middle[0] - half, middle[0] + half), ylim=(middle[1] - half, middle[1] + half),
           zlim=(middle[2] - half, middle[2] + half), xlabel="x (m)", ylabel="y (m)", zlabel="z (m)")
    ax.set_box_aspect((1, 1, 1))
    ax.legend(handles=[Line2D([], [], marker="o", label="joints of the first kept frame's shape")])
    assert any("overlaps" in p for p in figures.figure_problems(fig))


def test_the_contrast_check_finds_the_old_magma_near_end(rendered):
    """Depth in magma at alpha 0.8 over the dark image, as the notebook drew it before: its near
    end is black on black."""
    _, camera, frame, image = _view(rendered.layout)
    depth = decode_depth(rendered.layout.depth(camera, frame))[..., 0]
    fig = figures.new_figure(4, 4)
    ax = fig.subplots()
    ax.imshow(image)
    ax.imshow(np.where(depth > 0, depth, np.nan), alpha=0.8, cmap="magma")
    problems = figures.figure_problems(fig)
    assert any("'magma'" in p and "low (near) end" in p for p in problems), problems
    assert figures.contrast_ratio(matplotlib.colormaps["magma"](0.0), np.median(image.reshape(-1, 3), 0) / 255) < 1.5
    ax.images[-1].set_cmap(figures.depth_colormap())
    ax.images[-1].set_alpha(None)
    assert figures.figure_problems(fig) == []


def test_the_background_check_finds_a_transparent_figure():
    fig = figures.new_figure(2, 2)
    fig.patch.set_alpha(0.0)
    assert any("not opaque" in p for p in figures.figure_problems(fig))


# ---------------------------------------------------------------------------------------------
# GIF previews


def test_gif_frames_carry_camera_and_frame_and_a_readable_key(rendered, monkeypatch):
    layout = rendered.layout
    camera, frames = layout.read_cams()[0], layout.read_frames()
    calls = []
    original = gif.draw_label
    monkeypatch.setattr(gif, "draw_label", lambda image, text: calls.append(text) or original(image, text))
    for overlay in (None, "mano"):
        calls.clear()
        shown = gif.sequence_frames_rgb(layout, camera, overlay=overlay)
        assert calls == [f"cam{camera}  frame {f}" for f in frames]
        for frame, picture in zip(frames, shown):
            # the same frame without the label: equal outside the label's box, text inside it
            unlabelled = np.asarray(Image.open(layout.image(camera, frame)).convert("RGB"))
            if overlay:
                unlabelled = gif.draw_legend(gif.overlay_mask(unlabelled, decode_mask(layout.mask(camera, frame))))
            x0, y0, x1, y1 = gif.label_box(picture.shape, gif.frame_label(camera, frame))
            outside = np.ones(picture.shape[:2], bool)
            outside[y0:y1 + 1, x0:x1 + 1] = False
            assert np.array_equal(picture[outside], unlabelled[outside])
            changed = np.abs(picture[~outside].astype(int) - unlabelled[~outside]).max(axis=-1) > 100
            assert changed.sum() > 50 and y1 < picture.shape[0] and x1 < picture.shape[1]
    # readable at 1x: the key's names at least 12 px (capitals 9 px; Pillow's bitmap default: 6 px)
    key = gif.draw_legend(np.zeros((200, 150, 3), np.uint8))
    (_, (x0, y0, x1, y1)), _ = gif.legend_rows(200)
    ink = np.nonzero((key[: y1 + 2, x1 + 3:] > 200).all(axis=-1))[0]  # the first row's name, white
    assert gif.label_size(200) >= gif.LABEL_MIN_PX == 12 and ink.max() - ink.min() + 1 >= 9
    assert [hand for hand, _ in gif.legend_rows(200)] == ["left", "right"]
    assert not key[gif.legend_box(200)[3] + 1:].any() and not key[:, gif.legend_box(200)[2] + 1:].any()
    assert gif.label_size(512) > gif.label_size(200)  # larger frames, larger text
    # a label wider than a narrow frame goes on two lines, at the same size
    assert gif.fitted_label("cam400002  frame 1234", 128, 84) == ("cam400002\nframe 1234", 12)
