"""The round window measured on the image: where the bone around the array ends."""

from __future__ import annotations

import numpy as np
import pytest

from cochseg3d.clinical.round_window import bone_entry
from cochseg3d.phantom import generate_patient
from cochseg3d.volume import Volume
from tests.clinical.truthcheck import _cut_inside, errors

SPACING = 0.2
END_MM = 12.0  # where the synthetic bone stops along the track


def _tube_scan(offset: float = 0.0, gain: float = 1.0) -> tuple[Volume, np.ndarray]:
    """Soft tissue, a track along x; bone around it up to ``END_MM``, air around it beyond."""
    n = (120, 40, 40)  # i (x), j, k
    x, y, z = np.meshgrid(*[np.arange(m) * SPACING for m in n], indexing="ij")
    r = np.hypot(y - 4.0, z - 4.0)
    hu = np.full(n, 30.0, np.float32)
    hu[(r > 0.9) & (r < 3.0) & (x < END_MM)] = 1600.0
    hu[(r < 3.0) & (x >= END_MM)] = -1000.0
    hu[r < 0.4] = 3000.0  # the array's metal
    hu += np.random.default_rng(0).normal(0.0, 30.0, n).astype(np.float32)  # noise: no exact-value spikes
    grey = (gain * hu + offset).transpose(2, 1, 0)  # (k, j, i)
    track = np.column_stack([np.arange(2.0, 22.0, 0.1), np.full(200, 4.0), np.full(200, 4.0)])
    return Volume(grey, (SPACING,) * 3, (0.0, 0.0, 0.0), np.eye(3)), track


def test_bone_entry_where_the_bone_ends():
    vol, track = _tube_scan()
    e = bone_entry(vol, track)
    assert e.index is not None
    assert track[e.index, 0] == pytest.approx(END_MM, abs=0.5)
    assert e.fall > 0.8 and "falls from" in e.evidence


def test_bone_entry_reads_uncalibrated_grey_values_alike():
    hu = bone_entry(*_tube_scan())
    raw = bone_entry(*_tube_scan(offset=1000.0, gain=0.8))  # HU + 1000 stored, gain off by 20 %
    assert raw.index == pytest.approx(hu.index, abs=2)


def test_bone_entry_takes_the_last_fall_before_the_shape_entry():
    vol, track = _tube_scan()
    assert bone_entry(vol, track, before=int(np.searchsorted(track[:, 0], END_MM - 3.0))).index is None


def test_flat_image_has_no_entry():
    _, track = _tube_scan()
    flat = Volume(np.zeros((40, 40, 120), np.float32), (SPACING,) * 3, (0.0, 0.0, 0.0), np.eye(3))
    e = bone_entry(flat, track)
    assert e.index is None and "no clear end" in e.evidence


def test_image_corrects_a_round_window_the_shape_puts_too_far_out():
    # a development phantom on which the curvature rule put the round window 15 mm out on the lead
    case = generate_patient(989013)
    c = case.contacts
    args = (c, np.asarray(c["contacts_lps_mm"]), np.asarray(c["electrode_path_lps_mm"]))
    shape_only, with_image = errors(*args), errors(*args, case.image)
    assert np.abs(shape_only["angle_err_deg"]).mean() > 20.0
    assert np.abs(with_image["angle_err_deg"]).mean() < 10.0


@pytest.fixture(scope="module")
def dev_case():
    return generate_patient(989005)  # a development phantom


def test_round_window_found_past_a_track_that_ends_inside_the_bone(dev_case):
    from cochseg3d.clinical.frame import estimate_frame

    truth, pts, path = _cut_inside(dev_case)
    shape_only, with_image = errors(truth, pts, path), errors(truth, pts, path, dev_case.image)
    assert np.abs(shape_only["angle_err_deg"]).mean() > 20.0
    assert np.abs(with_image["angle_err_deg"]).mean() < 8.0
    f = estimate_frame(pts, path, image=dev_case.image)
    assert any("mm from its end, on its spiral continued" in n for n in f.notes)
    assert len(f.track) > len(path)  # the frame's track runs on to the round window and out


def test_a_track_ending_in_bone_with_no_exit_keeps_the_shape_entry_and_says_so(dev_case):
    from cochseg3d.clinical.frame import estimate_frame

    truth, pts, path = _cut_inside(dev_case)
    arr = np.asarray(dev_case.image.array, np.float32)
    no_air = dev_case.image.with_array(np.where(arr < 500.0, 1500.0 + 0.1 * arr, arr).astype(np.float32))
    f = estimate_frame(pts, path, image=no_air)
    assert any("no exit from it follows" in n for n in f.notes)
    np.testing.assert_allclose(errors(truth, pts, path, no_air)["angle_err_deg"],
                               errors(truth, pts, path)["angle_err_deg"], atol=1e-6)


def _shape_entry_inside(dev_case, before_end_mm: float, image):
    """_past_the_end on the cut track with the shape's entry ``before_end_mm`` before its end."""
    from cochseg3d.clinical.frame import _past_the_end, fit_spiral
    from cochseg3d.clinical.round_window import bone_entry
    from cochseg3d.contacts.centreline import cumulative_arc
    from cochseg3d.greylevels import measure

    _, _, path = _cut_inside(dev_case)
    s = cumulative_arc(path)
    rw = int(np.searchsorted(s, s[-1] - before_end_mm))
    levels = measure(image)
    entry = bone_entry(image, path, levels, before=rw)
    return path, _past_the_end(image, levels, path, s, rw, fit_spiral(path[: rw + 1], dip=True), entry)


def test_a_shape_entry_inside_a_track_that_ends_in_bone_gives_way_to_the_exit_past_the_end(dev_case):
    path, longer = _shape_entry_inside(dev_case, 4.0, dev_case.image)
    assert longer is not None  # the old 1.5 mm gate left the shape's entry there
    track, k, _, note = longer
    assert k >= len(path) and "mm from its end" in note


def test_a_shape_entry_inside_the_track_stands_when_no_exit_follows(dev_case):
    arr = np.asarray(dev_case.image.array, np.float32)
    no_air = dev_case.image.with_array(np.where(arr < 500.0, 1500.0 + 0.1 * arr, arr).astype(np.float32))
    assert _shape_entry_inside(dev_case, 4.0, no_air)[1] is None
