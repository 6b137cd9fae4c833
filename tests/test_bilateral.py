"""Two arrays in one scan (issue 13): the bilateral phantom, post-processing keeping both, each side measured."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cochseg3d
from cochseg3d.phantom.bilateral import generate_bilateral, shift_truth
from cochseg3d.postprocess import postprocess
from cochseg3d.preprocessing import Preprocessing
from cochseg3d.sides import side_cut_mm, side_masks
from cochseg3d.volume import Volume, read_image

from helpers import bright_model


def _tube(m: np.ndarray, i0: int) -> None:
    """A thin straight array, 0.9 mm wide and 18 mm long (0.3 mm voxels), starting at column ``i0``."""
    m[19:22, 19:22, i0:i0 + 60] = True


def test_postprocess_keeps_a_second_array_only_far_from_the_first():
    m = np.zeros((40, 40, 400), bool)
    _tube(m, 10)
    _tube(m, 300)  # 87 mm further: the other ear
    report = {}
    out = postprocess(m, (0.3, 0.3, 0.3), report=report)
    assert np.array_equal(out, m) and report["n_arrays"] == 2
    assert report["n_other_metal"] == 0 and report["array_rule"] == "catalogue"
    near = np.zeros_like(m)
    _tube(near, 10)
    _tube(near, 120)  # 15 mm beyond the first's end: one ear's other metal, dropped as before
    report = {}
    out = postprocess(near, (0.3, 0.3, 0.3), report=report)
    assert report["n_arrays"] == 1 and out.sum() == near.sum() // 2 and report["n_other_metal"] == 1
    blob = m.copy()
    blob[:, :, 300:] = False
    blob[5:35, 5:35, 320:350] = True  # far but thick (a filling): not an array
    report = {}
    out = postprocess(blob, (0.3, 0.3, 0.3), report=report)
    assert report["n_arrays"] == 1 and not out[:, :, 320:].any()


def test_side_split_puts_the_larger_lps_x_on_the_left():
    lab = Volume(np.zeros((4, 4, 50), np.uint8), (1.0, 1.0, 1.0), (-25.0, 0.0, 0.0))
    lab.array[2, 2, 3:6] = 1  # x -22..-20
    lab.array[2, 2, 40:44] = 1  # x 15..18
    cut = side_cut_mm(lab)
    assert -20.0 < cut < 15.0
    masks = side_masks(lab, cut)
    assert masks["right"][2, 2, 4] and not masks["left"][2, 2, 4] and masks["left"][2, 2, 41]
    flipped = Volume(lab.array[:, :, ::-1].copy(), (1.0, 1.0, 1.0), (24.0, 0.0, 0.0), np.diag([-1.0, 1.0, 1.0]))
    masks = side_masks(flipped, side_cut_mm(flipped))  # the same voxels, i running right to left
    assert masks["right"][2, 2, 49 - 4] and masks["left"][2, 2, 49 - 41]


def test_shift_truth_moves_positions_not_directions():
    t = {"contacts_lps_mm": [[1.0, 2.0, 3.0]], "cochlear_frame": {"origin_lps_mm": [0.0, 0.0, 0.0], "x_lps": [1, 0, 0]}}
    s = shift_truth(t, np.array([0.1, -0.2, 0.0]))
    assert s["contacts_lps_mm"] == [[1.1, 1.8, 3.0]] and s["cochlear_frame"]["origin_lps_mm"] == [0.1, -0.2, 0.0]
    assert s["cochlear_frame"]["x_lps"] == [1, 0, 0] and t["contacts_lps_mm"] == [[1.0, 2.0, 3.0]]


@pytest.fixture(scope="module")
def bilateral():
    return generate_bilateral(5, offset_hu=0.0, gain=1.0, noise_hu=30.0)


def test_bilateral_phantom_holds_both_ears_on_one_grid(bilateral):
    c = bilateral
    with pytest.raises(ValueError, match="both sides"):
        generate_bilateral(5, side="left")
    assert c.contacts["bilateral"] and set(c.contacts["arrays"]) == {"right", "left"}
    for side, sign in (("right", -1), ("left", 1)):
        pts = np.asarray(c.contacts["arrays"][side]["contacts_lps_mm"])
        assert np.sign(pts[:, 0].mean()) == sign
        # the truth lands on the label: each true contact on a labelled voxel (the left ear's snap included)
        ijk = np.rint(c.label.lps_to_index(pts)).astype(int)
        assert c.label.array[ijk[:, 2], ijk[:, 1], ijk[:, 0]].mean() > 0.9
    assert c.image.array.shape[2] > 2 * 96  # wider than either ear's field


def test_segment_finds_both_arrays_each_on_its_side(bilateral, tmp_path):
    c = bilateral
    pre = Preprocessing(spacing_mm=0.4, window_hu=(-1000.0, 4000.0), context=0, roi_size=(64, 64))
    res = cochseg3d.segment(c.image, tmp_path, model=bright_model(pre), preprocessing=pre, case_id="both")
    assert set(res.arrays) == {"right", "left"}
    for side, found in res.arrays.items():
        truth = np.asarray(c.contacts["arrays"][side]["contacts_lps_mm"])
        d = np.linalg.norm(found.lps_mm[:, None] - truth[None], axis=2).min(axis=1)
        assert len(found.lps_mm) == len(truth) and np.median(d) < 0.5
    assert len(res.contacts.lps_mm) == sum(len(a.lps_mm) for a in res.arrays.values())
    assert res.qc["verdict"] in ("ok", "review", "fail") and set(res.qc["sides"]) == {"right", "left"}
    rec = json.loads((tmp_path / "both.contacts.json").read_text())
    assert rec["bilateral"] and [a["side"] for a in rec["arrays"]] == ["right", "left"]
    assert [a["n_contacts"] for a in rec["arrays"]] == [len(res.arrays["right"].lps_mm), len(res.arrays["left"].lps_mm)]
    # the fitted physical array: both arrays in one label, each value named by side, each side's carrier
    arr = rec["array_label"]
    assert arr["written"], arr
    names = list(arr["values"].values())
    assert names[0] == "R E1" and names.count("R carrier") == 1 and names[-1] == "L carrier"
    label = read_image(tmp_path / "both.array.nii.gz")
    cut = side_cut_mm(res.label)
    for side, prefix in (("right", "R "), ("left", "L ")):
        values = [int(v) for v, n in arr["values"].items() if n.startswith(prefix)]
        ijk = np.argwhere(np.isin(label.array, values))[:, ::-1]
        x = label.index_to_lps(ijk.astype(float))[:, 0]
        assert len(x) and ((x < cut) if side == "right" else (x >= cut)).all()
    # Slicer markups and the contact table: one list per array, named by side
    mrk = json.loads((tmp_path / "both.contacts.mrk.json").read_text())["markups"]
    lists = [m for m in mrk if m["name"].endswith("contacts")]
    assert [m["name"] for m in lists] == ["both array 1 (right) contacts", "both array 2 (left) contacts"]
    assert [len(m["controlPoints"]) for m in lists] == [len(res.arrays[s].lps_mm) for s in ("right", "left")]
    rows = (tmp_path / "both.contacts.csv").read_text().splitlines()[1:]
    assert sorted({r.split(",")[1] for r in rows}) == ["left", "right"] and len(rows) == len(res.contacts.lps_mm)


def test_phantom_command_writes_a_bilateral_cohort(tmp_path, capsys):
    from cochseg3d.cli import main

    assert main(["phantom", str(tmp_path / "c"), "--patients", "1", "--bilateral", "--preview", "--no-progress"]) == 0
    entry = json.loads((tmp_path / "c" / "cohort.json").read_text())[0]
    truth = json.loads((tmp_path / "c" / entry["contacts"]).read_text())
    assert entry["bilateral"] and set(truth["arrays"]) == {"right", "left"}
    assert (tmp_path / "c" / entry["case_id"] / "preview.png").stat().st_size > 0
    assert main(["phantom", str(tmp_path / "d"), "--bilateral", "--orientation", "coronal"]) != 0
    assert "axial" in capsys.readouterr().err and not (tmp_path / "d").exists()
