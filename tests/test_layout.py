"""The output codecs: what a trainer decodes is what was written."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from interhand_prep.core.layout import PNG16_UNITS_PER_METRE, encode_depth, encode_mask, encode_png


@pytest.mark.parametrize("dtype,shape", [(np.uint8, (512, 334)), (np.uint16, (334, 512)), (np.uint8, (1, 1)),
                                         (np.uint16, (37, 51))])
def test_png_round_trips_through_pillow(dtype, shape):
    image = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(image))))
    assert decoded.dtype == dtype and np.array_equal(decoded, image)


def test_mask_and_depth_encodings():
    mask = np.zeros((128, 84), np.uint8)
    mask[40:60, 20:50], mask[50:70, 30:60] = 100, 200
    decoded = Image.open(io.BytesIO(encode_mask(mask)))
    assert decoded.mode == "L" and np.array_equal(np.asarray(decoded), mask)
    depth = np.where(mask > 0, np.float32(0.95) + np.linspace(0, 0.1, mask.size, dtype=np.float32).reshape(mask.shape), 0)
    npy = np.load(io.BytesIO(encode_depth(depth, "npy")))
    assert npy.dtype == np.float32 and npy.shape == (128, 84, 1) and np.array_equal(npy[..., 0], depth)
    png = np.asarray(Image.open(io.BytesIO(encode_depth(depth, "png16")))).astype(np.float64) / PNG16_UNITS_PER_METRE
    assert np.abs(png - depth).max() <= 0.5 / PNG16_UNITS_PER_METRE + 1e-7 and (png[mask == 0] == 0).all()
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 3), np.uint8))
