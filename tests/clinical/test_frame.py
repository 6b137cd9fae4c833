"""The cochlear frame and the per-contact angles and depths against the phantom's truth."""

from __future__ import annotations

import numpy as np
import pytest

from cochseg3d.clinical import estimate_frame, measure_arrays
from cochseg3d.contacts import Contacts, find_contacts
from cochseg3d.phantom import generate_patient
from tests.clinical.conftest import truth_contacts
from tests.clinical.truthcheck import errors

# measured on 20 phantoms (seeds 985000-985019): z axis mean 0.07 / max 0.16 deg, contact angle
# mean 1.2 / max 2.0 deg, depth mean 0.12 / max 0.23 mm; asserted with margin
Z_MAX_DEG, ANGLE_MAX_DEG, DEPTH_MAX_MM = 1.0, 5.0, 0.5


@pytest.mark.parametrize("seed", [41, 42, 43, 44, 45])
def test_frame_from_true_contacts(seed):
    case = generate_patient(seed)
    c = case.contacts
    e = errors(c, np.asarray(c["contacts_lps_mm"]), np.asarray(c["electrode_path_lps_mm"]))
    assert e["ok"] and e["sense_ok"]
    assert e["z_err_deg"] < Z_MAX_DEG
    assert np.abs(e["angle_err_deg"]).max() < ANGLE_MAX_DEG
    assert np.abs(e["depth_err_mm"]).max() < DEPTH_MAX_MM
    assert e["origin_err_mm"] < 1.0


def test_arrays_record_matches_truth(flex_case):
    c = flex_case.contacts
    a = measure_arrays(truth_contacts(flex_case))["arrays"][0]
    assert a["side"] == c["side"] and a["vendor"] == "MED-EL" and a["model"] == "FLEX28"
    assert a["insertion_angle_deg"] == pytest.approx(c["insertion_angle_deg"], abs=ANGLE_MAX_DEG)
    assert a["extracochlear_contacts"] == int(np.sum(~np.asarray(c["inside_cochlea"])))
    assert [k["name"] for k in a["contacts"]] == [f"E{i}" for i in range(1, 13)]  # MED-EL: E1 at the apex
    assert not any(f["value"] for f in a["flags"].values())
    f = a["contacts"][0]["frequency_hz"]
    assert 50 < f["organ_of_corti_greenwood1990"] < 1500  # ~1.5 turns deep: low frequencies
    freqs = [k["frequency_hz"]["organ_of_corti_greenwood1990"] for k in a["contacts"]]
    assert np.all(np.diff(freqs) > 0)  # higher towards the base
    R = np.array([a["cochlear_frame"][k] for k in ("x_lps", "y_lps", "z_lps")])
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-4) and np.linalg.det(R) > 0


def test_partial_insertion_counts_extracochlear_contacts():
    case = generate_patient(46, model="FLEX28", aid_deg=300.0)  # 28 mm array pushed only 300 deg in
    c = case.contacts
    truth_out = int(np.sum(~np.asarray(c["inside_cochlea"])))
    assert truth_out >= 1
    a = measure_arrays(truth_contacts(case))["arrays"][0]
    assert abs(a["extracochlear_contacts"] - truth_out) <= 1
    outside = [k for k in a["contacts"] if not k["inside_cochlea"]]
    assert all(k["frequency_hz"]["organ_of_corti_greenwood1990"] is None for k in outside)


def test_frame_from_found_contacts():
    case = generate_patient(47, model="FLEX24")
    c = case.contacts
    found = find_contacts(case.label, case.image, electrode=c["model"])
    e = errors(c, found.lps_mm, found.centreline_lps_mm)
    assert e["ok"], e.get("reason")
    assert e["z_err_deg"] < 10.0
    if "angle_err_deg" in e:
        assert np.median(np.abs(e["angle_err_deg"])) < 15.0


def test_bad_input_gives_a_reason_not_a_crash():
    f = estimate_frame(np.zeros((3, 3)))
    assert not f.ok and "at least 4" in f.reason
    line = np.column_stack([np.linspace(0, 20, 12), np.zeros(12), np.zeros(12)])
    f = estimate_frame(line, np.column_stack([np.linspace(0, 30, 300), np.zeros(300), np.zeros(300)]))
    assert not f.ok and "straight" in f.reason
    a = measure_arrays(Contacts(line, "peaks"))["arrays"][0]
    assert "straight" in a["reason"] and "angle_deg" not in a["contacts"][0]
    assert set(a["flags"]) == {"fold_over", "kink", "out_of_order"}
    empty = measure_arrays(Contacts(np.zeros((0, 3)), "none", info={"reason": "empty label"}))["arrays"][0]
    assert empty["reason"] == "empty label" and empty["n_contacts"] == 0
