"""render_mesh against an independent ray cast through every pixel centre (GL tests).

Skipped when no OpenGL platform works here (CI installs Mesa, so there they run).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from interhand_prep.core import gl_platform as gl_platform_module
from interhand_prep.core import gl_renderer as rendering
from interhand_prep.core import pyrender_adapter
from interhand_prep.core.options import RenderOptions
from interhand_prep.core.selection import SequenceSelector
from interhand_prep.stages import get_annots as annots
from interhand_prep.stages import render_mesh
from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture


SEQ = "0266_dh_pray"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, gl_platform):
    """A small two-hand capture (1/4-size images, hands occluding each other), annotated and rendered."""
    platform = gl_platform
    root = tmp_path_factory.mktemp("render")
    spec = CaptureSpec(capture=0, seed=11, camera_ids=["400002", "400016", "400029", "410214", "410219", "400412"],
                       sequences=[SequenceSpec(SEQ, "both", 3)], default_cases=False, image_scale=0.25)
    generate_capture(root / "IH", root / "mano", spec)
    sel = SequenceSelector(capture=0, seq=SEQ, basedir=root / "IH", mano_dir=root / "mano", hand_type="both")
    annots.run(sel, progress=False)
    result = render_mesh.run(sel, RenderOptions(backend=platform, render_workers=1), progress=False)
    return sel, result, platform


def test_masks_and_depth_match_the_ray_cast(rendered, helpers):
    sel, result, _ = rendered
    layout = sel.layout
    assert result.rendered == len(layout.read_cams()) * len(layout.read_frames())
    overlap_pixels = 0
    for cam in layout.read_cams():
        for frame in layout.read_frames():
            mask = np.asarray(Image.open(layout.mask(cam, frame)))
            depth = np.load(layout.depth(cam, frame, "npy"))
            height, width = mask.shape
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 100, 200}
            assert depth.shape == (height, width, 1) and depth.dtype == np.float32
            depth = depth[..., 0]
            label, ref_depth, hits = helpers.ray_cast(layout, sel.mano_dir, cam, frame, width, height)
            for value in (100, 200):
                ours, ref = mask == value, label == value
                if ref.sum() < 20:
                    continue
                iou = (ours & ref).sum() / (ours | ref).sum()
                assert iou >= 0.99, f"cam{cam} frame {frame} label {value}: IoU {iou:.4f}"
            # where both hands are hit, the nearer one is the label
            both = hits[100] & hits[200] & (mask > 0) & (label > 0)
            overlap_pixels += both.sum()
            if both.sum():
                assert (mask[both] == label[both]).mean() >= 0.99
            covered = (mask > 0) & (label > 0)
            assert (np.abs(depth[covered] - ref_depth[covered]) <= 1e-3).mean() >= 0.99
            assert (depth[mask == 0] == 0).all()
    assert overlap_pixels > 50, "the test capture should contain mutual occlusion"


def test_every_visible_vertex_is_on_the_mask(rendered):
    sel, _, _ = rendered
    layout = sel.layout
    cams = layout.read_cameras()
    for frame in layout.read_frames():
        vertices = np.concatenate([np.load(layout.vertices(h, frame)) for h in ("left", "right")]) * 1000.0
        pixels, _ = cams.project(vertices)
        for c, cam in enumerate(cams.ids):
            mask = np.asarray(Image.open(layout.mask(cam, frame))) > 0
            h, w = mask.shape
            uv = np.rint(pixels[c]).astype(int)
            inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
            padded = np.pad(mask, 2)
            near = np.zeros_like(mask)
            for dy in range(5):
                for dx in range(5):
                    near |= padded[dy:dy + h, dx:dx + w]
            assert near[uv[inside, 1], uv[inside, 0]].all()


def test_no_hand_in_view_gives_an_empty_mask(rendered):
    sel, _, platform = rendered
    layout = sel.layout
    cams = layout.read_cameras()
    frame = layout.read_frames()[0]
    # the first camera turned around: it looks away from the hands
    turn = np.diag([-1.0, 1.0, -1.0])
    R = turn @ cams.R[0]
    T = turn @ cams.T[0]
    away = rendering.ViewCamera("away", cams.K[0], R, T, 84, 128)
    front = rendering.ViewCamera("front", cams.K[0], cams.R[0], cams.T[0], 84, 128)
    from interhand_prep.core.mano import load_mano_model

    meshes = {h: (np.load(layout.vertices(h, frame)), load_mano_model(sel.mano_dir, h).faces) for h in ("left", "right")}
    with rendering.HandViewRenderer([away, front]) as renderer:
        renderer.set_hands((84, 128), meshes)
        mask, depth = renderer.render("away")
        assert not mask.any() and not depth.any()
        assert renderer.render("front")[0].any()


def test_the_occluding_hand_is_drawn_when_one_hand_is_requested(rendered, tmp_path):
    sel, _, platform = rendered
    one = SequenceSelector(capture=0, seq=SEQ, basedir=sel.basedir, mano_dir=sel.mano_dir, hand_type="right",
                           out_root=tmp_path / "out")
    annots.run(one, progress=False)
    assert not one.layout.vertices("left", one.layout.read_frames()[0]).exists()
    result = render_mesh.run(one, RenderOptions(backend=platform, render_workers=1, depth_format="png16"), progress=False)
    assert result.hands_drawn == {"right": 3, "left": 3}
    for cam in one.layout.read_cams():
        for frame in one.layout.read_frames():
            ours = np.asarray(Image.open(one.layout.mask(cam, frame)))
            both = np.asarray(Image.open(sel.layout.mask(cam, frame)))
            np.testing.assert_array_equal(ours, both)
            png = np.asarray(Image.open(one.layout.depth(cam, frame, "png16"))).astype(np.float64) / 10000.0
            npy = np.load(sel.layout.depth(cam, frame, "npy"))[..., 0]
            assert np.abs(png - npy).max() <= 0.5e-4 + 1e-7


def test_all_cameras_workers_and_resume(rendered, tmp_path):
    sel, first, platform = rendered
    layout = sel.layout
    opts = RenderOptions(backend=platform, render_workers=2, all_cameras=True)
    result = render_mesh.run(sel, opts, progress=False)
    # the landscape camera filtered out by get_annots is rendered at its own size; the rest is skipped
    frames = layout.read_frames()
    assert result.rendered == len(frames) and result.skipped == first.rendered
    landscape = np.asarray(Image.open(layout.mask("400412", frames[0])))
    assert landscape.shape == (84, 128)
    # two workers, overwriting, give the same bytes as one
    before = {p: p.read_bytes() for p in (layout.root / "mask").rglob("*.png")}
    stamps = {p: p.stat().st_mtime_ns for p in before}
    again = render_mesh.run(sel.replace(overwrite=True), opts, progress=False)
    assert again.workers == 2 and again.rendered == len(before)
    for path, data in before.items():
        assert path.read_bytes() == data and path.stat().st_mtime_ns == stamps[path]  # same bytes: not rewritten
    assert not list(layout.root.rglob("*.tmp"))


def test_the_pyrender_internals_we_use_are_still_there():
    """The renderer drives pyrender below its public API (pyrender_adapter): an upgrade that
    changes any of it must fail here, loudly, not render wrong masks."""
    assert pyrender_adapter.problems() == []


def test_camera_pose_is_the_inverse_extrinsics_with_the_axis_flip():
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    R = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
    T = rng.normal(size=3) * 500
    pose = rendering.camera_pose_opengl(R, T)
    point_world = rng.normal(size=3) * 0.1 + [0, 0, 1]
    cv = R @ (point_world * 1000) + T                        # OpenCV camera coordinates, mm
    gl = np.linalg.inv(pose) @ np.append(point_world, 1.0)   # OpenGL camera coordinates, m
    np.testing.assert_allclose(gl[:3] * 1000, cv * [1, -1, -1], atol=1e-9)


def test_egl_and_osmesa_agree(rendered, tmp_path):
    sel, _, _ = rendered
    reasons = {p: gl_platform_module.verdict(p)[0] for p in ("egl", "osmesa")}
    if any(reasons.values()):
        pytest.skip(f"needs both platforms: {reasons}")
    outputs = {}
    for platform in ("egl", "osmesa"):
        one = SequenceSelector(capture=0, seq=SEQ, basedir=sel.basedir, mano_dir=sel.mano_dir, hand_type="both",
                               out_root=tmp_path / platform)
        annots.run(one, progress=False)
        # a worker process per backend: PYOPENGL_PLATFORM is fixed once pyrender is imported
        result = render_mesh.run(one, RenderOptions(backend=platform, render_workers=2), progress=False)
        assert result.backend == platform and result.workers == 2
        outputs[platform] = one.layout
    for cam in outputs["egl"].read_cams():
        for frame in outputs["egl"].read_frames():
            masks = [np.asarray(Image.open(layout.mask(cam, frame))) for layout in outputs.values()]
            np.testing.assert_array_equal(*masks)
            depths = [np.load(layout.depth(cam, frame, "npy")) for layout in outputs.values()]
            np.testing.assert_allclose(*depths, atol=1e-4)  # depth-buffer quantisation differs (~20 um)


def test_the_platform_is_decided_without_probing_twice(tmp_path, monkeypatch, gl_platform):
    """auto: OSMesa without an NVIDIA GPU, EGL with one; a probe runs once per machine and
    library version, later runs (other processes) read the cached verdict."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PYOPENGL_PLATFORM", os.environ.get("PYOPENGL_PLATFORM", gl_platform))
    monkeypatch.setenv("LP_NUM_THREADS", os.environ.get("LP_NUM_THREADS", "0"))
    monkeypatch.setattr(gl_platform_module, "nvidia_gpu_present", lambda: False)
    gl_platform_module.probe_platform.cache_clear()
    before = gl_platform_module.probes
    first = gl_platform_module.select_platform("auto")
    assert first.platform == "osmesa" and "no NVIDIA GPU" in first.reason and "cached" not in first.reason
    assert gl_platform_module.probes == before + 1
    gl_platform_module.probe_platform.cache_clear()  # as in a new process
    again = gl_platform_module.select_platform("auto")
    assert again.platform == "osmesa" and "verdict cached" in again.reason
    assert gl_platform_module.probes == before + 1
    assert (tmp_path / "interhand_prep" / "gl-platforms.json").is_file()
    monkeypatch.setattr(gl_platform_module, "nvidia_gpu_present", lambda: True)
    with_gpu = gl_platform_module.select_platform("auto")
    assert with_gpu.platform == "egl" and "NVIDIA GPU is present" in with_gpu.reason


def test_a_gl_error_cannot_give_a_hand_the_other_hands_colour(rendered, caplog, monkeypatch):
    """pyrender swallows a failed 'color' uniform update, which draws the right hand with the left
    hand's label (the evidence mask). An error left pending before a draw is cleared; an error at
    the colour update itself raises instead of giving a wrong mask."""
    import ctypes

    sel, _, platform = rendered
    if not rendering.can_render_here(platform):
        pytest.skip(f"this process renders with {rendering._imported_platform}")
    monkeypatch.setenv("PYOPENGL_PLATFORM", platform)  # as select_platform left it for this process
    layout = sel.layout
    cams = layout.read_cameras()
    frame = layout.read_frames()[0]
    from interhand_prep.core.mano import load_mano_model

    meshes = {h: (np.load(layout.vertices(h, frame)), load_mano_model(sel.mano_dir, h).faces) for h in ("left", "right")}
    views = [rendering.ViewCamera(c, cams.K[k], cams.R[k], cams.T[k].reshape(3),
                                  *Image.open(layout.image(c, frame)).size) for k, c in enumerate(cams.ids)]
    with rendering.HandViewRenderer(views) as renderer:
        size = (views[0].width, views[0].height)
        renderer.set_hands(size, meshes)
        cam = next(v.cam_id for v in views if (v.width, v.height) == size
                   and {100, 200} <= set(np.unique(renderer.render(v.cam_id)[0])))
        good = renderer.render(cam)[0]
        from OpenGL import platform as opengl_platform
        from pyrender.shader_program import ShaderProgram

        raw_enable = opengl_platform.PLATFORM.GL["glEnable"]  # bare ctypes: leaves its error pending
        raw_enable.argtypes, raw_enable.restype = [ctypes.c_uint], None
        raw_enable(0x7FFF)  # GL_INVALID_ENUM, pending before the draw
        with caplog.at_level("WARNING"):
            assert (renderer.render(cam)[0] == good).all()
        assert "GL error was pending before drawing" in caplog.text
        loud = ShaderProgram.set_uniform

        def failing_right_colour(self, name, value, unsigned=False):
            if name == "color" and round(float(np.asarray(value)[0]) * 255) == 200:
                raw_enable(0x7FFF)  # pending right at the right hand's colour
            return loud(self, name, value, unsigned)

        ShaderProgram.set_uniform = failing_right_colour
        try:
            with pytest.raises(Exception, match="invalid enum|GLError|1280"):
                renderer.render(cam)
        finally:
            ShaderProgram.set_uniform = loud
        assert (renderer.render(cam)[0] == good).all()
