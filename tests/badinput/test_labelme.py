"""Broken labelme JSONs and PNG masks given to the mask import: a ValueError naming the file, never
a TypeError / KeyError / PIL traceback (issue 15; the import is a library call of the napari widget)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cochseg3d.annotation import read_slice_masks

GOOD = {"imageHeight": 8, "imageWidth": 8,
        "shapes": [{"label": "electrode", "shape_type": "polygon", "points": [[1, 1], [5, 1], [5, 5]]}]}
BROKEN = {
    "not_json": "{",
    "a_list": [],
    "no_shapes": {"imageHeight": 8},
    "shapes_not_list": {"shapes": {"a": 1}},
    "shape_not_object": {"shapes": ["electrode"]},
    "points_text": {"shapes": [{"label": "electrode", "points": "1,2,3"}]},
    "points_short": {"shapes": [{"label": "electrode", "points": [[1], [2], [3]]}]},
    "points_nan": {"shapes": [{"label": "electrode", "points": [[1, "nan"], [2, 2], [3, 3]]}]},
    "height_text": {**GOOD, "imageHeight": "tall"},
    "wrong_size": {**GOOD, "imageHeight": 9},
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_labelme_named(tmp_path, kind):
    p = tmp_path / "case_1.json"
    doc = BROKEN[kind]
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(ValueError, match=r"case_1\.json: "):
        read_slice_masks([p], shape=(3, 8, 8))


@pytest.mark.parametrize("kind", ["truncated", "text", "empty", "fifo"])
def test_broken_png_mask_named(tmp_path, kind):
    from PIL import Image

    p = tmp_path / "case_1.png"
    if kind == "fifo":
        os.mkfifo(p)
    else:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(p)
        data = p.read_bytes()
        p.write_bytes({"truncated": data[: len(data) // 2], "text": b"not a picture", "empty": b""}[kind])
    with pytest.raises(ValueError, match=r"case_1\.png: "):
        read_slice_masks([tmp_path], shape=(3, 8, 8))


def test_good_labelme_still_reads(tmp_path):
    p = tmp_path / "case_1.json"
    p.write_text(json.dumps(GOOD))
    masks = read_slice_masks([p], shape=(3, 8, 8))
    assert masks[1].sum() > 5
