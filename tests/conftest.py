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
