"""Hard scanner conditions of the phantom generator (issue 12) in the fast CT model; rtk ones are in
test_phantom_rtk.py. Each changes the image where it should and never the electrode's truth."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from scipy import ndimage

from cochseg3d.phantom import anatomy as an
from cochseg3d.phantom import generate_patient, hard

#: 0.5 mm voxels, 32 mm field: room for the screw and the fillings at a test's cost
SMALL = dict(shape=64, spacing_mm=0.5, offset_hu=0.0, gain=1.0)


def _digest(c) -> str:
    return hashlib.sha256(c.image.array.tobytes() + c.label.array.tobytes() + c.metal.array.tobytes()
                          + c.tissue.array.tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def clean():
    return generate_patient(31, **SMALL)


def _kji(case, lps) -> tuple[int, int, int]:
    ijk = np.round((np.asarray(lps) - np.asarray(case.image.origin_mm)) / np.asarray(case.image.spacing_mm)).astype(int)
    return int(ijk[2]), int(ijk[1]), int(ijk[0])


def test_off_by_default_is_bit_identical():
    """Digests of phantoms made before the hard conditions existed (image, label, metal, tissue)."""
    for seed, kw, digest in ((5, dict(shape=48, spacing_mm=0.4), "93c5b28918c5ce9f"),
                             (11, dict(preset="small"), "8fb85bbdc41f86fb"),
                             (3, dict(orientation="oblique"), "5c0c05884414feb7")):
        c = generate_patient(seed, **kw)
        assert _digest(c) == digest, (seed, kw)
        assert c.params["hard_conditions"] == hard.OFF
    off = generate_patient(5, shape=48, spacing_mm=0.4, motion_mm=0.0, screw=False, dental_fillings=0,
                           fov_truncation=0.0)
    assert _digest(off) == "93c5b28918c5ce9f"


def test_motion_blurs_the_array_not_the_label(clean):
    c = generate_patient(31, **SMALL, motion_mm=1.5)
    assert np.array_equal(c.label.array, clean.label.array) and c.contacts == clean.contacts
    rec = c.params["hard_conditions"]["motion"]
    assert rec["peak_to_peak_mm"] == pytest.approx(1.5, rel=0.02)
    assert np.abs(np.mean(rec["cochlea_displacement_lps_mm"], axis=0)).max() < 0.1  # centred on the truth
    near = ndimage.binary_dilation(clean.label.array > 0, iterations=4)
    a, b = clean.image.array.astype(float), c.image.array.astype(float)
    assert np.mean(np.abs(a - b)[near]) > 100  # the array is smeared
    assert (b[near] > 2000).sum() > 1.15 * (a[near] > 2000).sum()  # ... over a longer stretch
    far = ~ndimage.binary_dilation(clean.label.array > 0, iterations=8)

    def fine_detail(x):
        return float(np.std((x - ndimage.uniform_filter(x, 5))[far]))

    assert fine_detail(b) < 0.8 * fine_detail(a)  # the anatomy is blurred too


def test_screw_is_bright_titanium_outside_the_label(clean):
    c = generate_patient(31, **SMALL, screw=True)
    assert np.array_equal(c.label.array, clean.label.array) and c.contacts == clean.contacts
    geo = c.params["hard_conditions"]["screw_geometry"]
    assert geo["material"] == "titanium"
    k, j, i = _kji(c, geo["centre_lps_mm"])
    assert c.image.array[k, j, i] > 3000  # titanium: ~16000 HU, saturated
    assert clean.image.array[k, j, i] < 2500
    dist = ndimage.distance_transform_edt(c.label.array == 0, sampling=c.image.spacing_mm[::-1])
    assert dist[k, j, i] > 4.0  # not electrode
    screw = (c.image.array.astype(float) - clean.image.array) > 1000
    assert screw.sum() > 20 and not np.any(screw & (c.label.array > 0))
    # the recorded geometry is the screw the image shows: its bright voxels lie within the cylinder's
    # reach (+ 1 mm of blur at 0.5 mm voxels) and fill one to three times its volume
    bright_lps = c.image.index_to_lps(np.argwhere(screw)[:, ::-1])
    reach = np.hypot(geo["radius_mm"], geo["length_mm"] / 2) + 1.0
    assert np.linalg.norm(bright_lps - np.asarray(geo["centre_lps_mm"]), axis=1).max() < reach
    cylinder_mm3 = np.pi * geo["radius_mm"] ** 2 * geo["length_mm"]
    assert cylinder_mm3 <= screw.sum() * np.prod(c.image.spacing_mm) <= 3 * cylinder_mm3
    changed = np.abs(c.image.array.astype(float) - clean.image.array) > 20
    far = ndimage.distance_transform_edt(~screw, sampling=c.image.spacing_mm[::-1]) > 6
    assert changed[k][far[k]].mean() > 0.05  # its own streaks across the slice


def test_dental_fillings_low_in_the_field(clean):
    c = generate_patient(31, **SMALL, dental_fillings=3)
    assert np.array_equal(c.label.array, clean.label.array)
    fills = c.params["hard_conditions"]["fillings"]
    assert len(fills) == 3
    nz = c.image.array.shape[0]
    for fl in fills:
        k, j, i = _kji(c, fl["centre_lps_mm"])
        assert k < 0.25 * nz  # at the bottom (axial: k runs inferior -> superior)
        assert c.image.array[k, j, i] > 3000 and c.label.array[k, j, i] == 0
    assert json.dumps(c.params)


def test_truncation_cuts_the_head_keeps_the_contacts(clean):
    c = generate_patient(31, **SMALL, fov_truncation=0.3)
    tr = c.params["hard_conditions"]["truncation"]
    assert 0.1 <= tr["effective"] <= 0.3 and tr["radius_mm"] < tr["grid_radius_mm"]
    out = c.tissue.array[0] == an.OUTSIDE
    assert 0.2 < out.mean() < 0.8
    img = c.image.array
    assert np.all(img[:, out] == c.params["outside_fov_hu"])
    assert not np.any(c.label.array[:, out])
    assert np.array_equal(c.label.array[:, ~out], clean.label.array[:, ~out])  # unchanged where it is seen
    for pt in c.contacts["contacts_lps_mm"]:
        k, j, i = _kji(c, pt)
        assert not out[j, i]
    # edge brightening: the last 2 mm inside the field are brighter than in the untruncated scan
    sp = c.image.spacing_mm[0]
    rim = (ndimage.distance_transform_edt(~out) * sp < 2.0) & ~out
    diff = img.astype(float) - clean.image.array
    assert np.median(diff[:, rim]) > 100
    assert np.median(diff[:, rim]) > np.median(diff[:, ~out & ~rim]) + 50


def test_random_draws_are_recorded_and_deterministic():
    kw = dict(motion_mm="random", screw="random", dental_fillings="random", fov_truncation="random")
    vals = [generate_patient(s, shape=32, spacing_mm=0.5, **kw).params["hard_conditions"] for s in range(6)]
    for v in vals:
        assert 0.3 <= v["motion_mm"] <= 2.0 and 0 <= v["dental_fillings"] <= 4 and 0.1 <= v["fov_truncation"] <= 0.35
        assert isinstance(v["screw"], bool)
    assert len({round(v["motion_mm"], 6) for v in vals}) == 6
    assert len({v["screw"] for v in vals}) == 2
    again = generate_patient(2, shape=32, spacing_mm=0.5, **kw)
    assert again.params == generate_patient(2, shape=32, spacing_mm=0.5, **kw).params
    # a condition's draws are its own: the anatomy and implant do not change
    a = generate_patient(2, shape=32, spacing_mm=0.5)
    assert a.contacts == again.contacts and a.params["hu"] == again.params["hu"]


def test_bad_values():
    for kw in (dict(fov_truncation=0.9), dict(motion_mm=-1.0), dict(dental_fillings=40), dict(motion_mm="lots")):
        with pytest.raises(ValueError, match="fov_truncation"):
            generate_patient(1, shape=16, **kw)


def test_cli_flags():
    from cochseg3d.cli import build_parser

    a = build_parser().parse_args(["phantom", "out", "--motion-mm", "1.2", "--screw", "--dental-fillings", "2",
                                   "--fov-truncation", "random"])
    assert (a.motion_mm, a.screw, a.dental_fillings, a.fov_truncation) == (1.2, True, 2, "random")
    b = build_parser().parse_args(["phantom", "out", "--screw-random", "--motion-mm", "random"])
    assert (b.screw, b.motion_mm, b.dental_fillings, b.fov_truncation) == ("random", "random", 0, 0.0)
    for bad in (["--dental-fillings", "two"], ["--motion-mm", "lots"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["phantom", "out", *bad])


def test_cli_records_the_conditions(tmp_path):
    from cochseg3d.cli import main

    assert main(["phantom", str(tmp_path), "--patients", "1", "--screw", "--dental-fillings", "1", "--no-progress",
                 "--no-clutter"]) == 0
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rec = json.loads((folder / "truth" / "params.json").read_text())["hard_conditions"]
    assert rec["screw"] is True and rec["dental_fillings"] == 1 and rec["motion_mm"] == 0.0
    assert "screw_geometry" in rec and len(rec["fillings"]) == 1
