"""Shared test data: the real fixtures (read-only) and one small synthetic capture per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from interhand_prep.synthetic_capture import CaptureSpec, SequenceSpec, generate_capture

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"

# One capture holding every filtering case; the tests derive what must be kept from this spec.
SMALL_SPEC = dict(
    capture=0, split="train", seed=3,
    camera_ids=["400002", "400004", "400016", "400029", "410210", "410214", "410219", "400412"],
    sequences=[SequenceSpec("0051_dinosaur", "right", 8), SequenceSpec("0266_dh_pray", "both", 8)],
    black={"0051_dinosaur": {2: ["400004"]}, "0266_dh_pray": {5: ["400002", "400016"]}},
    null_mano={"0266_dh_pray": {3: ["left"], 6: ["right"]}},
    missing_images={"0051_dinosaur": {4: ["410214"]}, "0266_dh_pray": {1: ["400029"]}},
    cameras_without_images=["410210"],
    default_cases=False,
)
# cameras.csv: 400002/400004/400016/400029 portrait RGB, 410214/410219 portrait mono,
# 400412 landscape RGB, 410210 landscape mono (it gets no images here)


def small_spec() -> CaptureSpec:
    return CaptureSpec(**{k: (v.copy() if isinstance(v, (dict, list)) else v) for k, v in SMALL_SPEC.items()})


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        if os.environ.get("CI"):  # CI always has shared/ beside the clone: never skip silently there
            pytest.fail(f"shared fixtures not found at {FIXTURES}")
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic capture and model, generated once: root/IH (basedir) and root/mano."""
    root = tmp_path_factory.mktemp("synthetic")
    manifest = generate_capture(root / "IH", root / "mano", small_spec())
    (root / "manifest.txt").write_text(repr(manifest.frames))
    return root


@pytest.fixture
def capture(synthetic_root, tmp_path) -> Path:
    """A private copy of the synthetic tree (tests may write into it): tmp/IH and tmp/mano."""
    shutil.copytree(synthetic_root / "IH", tmp_path / "IH", symlinks=True)
    shutil.copytree(synthetic_root / "mano", tmp_path / "mano")
    return tmp_path


def frames_of(seq: str) -> list[int]:
    """Frame ids the generator gives a sequence of SMALL_SPEC (consecutive blocks, 37 apart)."""
    start = 1
    for s in SMALL_SPEC["sequences"]:
        if s.name == seq:
            return list(range(start, start + s.num_frames))
        start += s.num_frames + 37
    raise KeyError(seq)


def gl_platform_or_skip() -> str:
    """A working offscreen OpenGL platform, or skip (fail under CI, which installs Mesa)."""
    from interhand_prep import rendering

    reasons = {p: rendering.probe_platform(p) for p in ("egl", "osmesa")}
    working = [p for p, r in reasons.items() if r is None]
    if not working:
        message = f"no OpenGL platform: {reasons}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return working[0]


def assert_processed_sequence(root: Path, hands: tuple[str, ...], mano_dir: Path) -> None:
    """Load a processed (or merged) sequence folder the way a trainer does, and check it."""
    import numpy as np
    from PIL import Image

    from interhand_prep import mano
    from interhand_prep.layout import SequenceLayout

    layout = SequenceLayout(root)
    annots = np.load(root / "annots.npy", allow_pickle=True).item()
    cams = [line for line in (root / "cams.txt").read_text().split()]
    frames = [int(f) for f in (root / "frames.txt").read_text().split()]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)
    assert list(annots["cams"]["K"]) == cams and len(annots["ims"]) == len(frames)
    for frame, entry in zip(frames, annots["ims"]):
        assert entry["ims"] == [f"cam{c}/image{frame:04d}.jpg" for c in cams]
        for rel in entry["ims"]:
            image = Image.open(root / rel)
            mask = np.asarray(Image.open((root / "mask" / rel).with_suffix(".png")))
            depth = np.load((root / "depth" / rel).with_suffix(".npy"))
            assert mask.shape == image.size[::-1] and depth.shape == mask.shape + (1,)
            assert ((mask > 0) == (depth[..., 0] > 0)).all()
    for hand in hands:
        model = mano.load_mano_model(mano_dir, hand)
        lbs = layout.lbs_dir(hand)
        for name in ("faces", "parents", "weights", "joints", "tvertices", "tbw"):
            assert (lbs / f"{name}.npy").is_file()
        tpose = np.load(layout.tpose_params(hand), allow_pickle=True).item()
        assert tpose["Rh"].shape == (1, 3)
        for frame in frames:
            params = np.load(layout.params(hand, frame), allow_pickle=True).item()
            vertices = np.load(layout.vertices(hand, frame))
            assert vertices.shape == (model.num_vertices, 3)
            unposed = (vertices - params["Th"]) @ mano.axis_angle_to_matrix(params["Rh"])[0]
            assert np.abs(unposed).max() < 0.5  # pose space: the hand about the origin
            assert np.load(layout.bweights(hand, frame)).shape[-1] == 17
            assert np.load(layout.bs(hand, frame)).shape[-1] == 3
