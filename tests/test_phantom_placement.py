"""Abnormal array placements (fold-over, partial insertion, kink): truth flags, geometry, the flags found."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from cochseg3d.clinical import measure_arrays
from cochseg3d.contacts import Contacts
from cochseg3d.phantom import generate_cohort, generate_patient
from cochseg3d.phantom.placement import ARRAY_KINDS, resolve

TINY = dict(shape=24)
SEED = 1  # one fixed patient (CI632 Slim Modiolar) for every kind


def _digest(c) -> str:
    return hashlib.sha256(c.image.array.tobytes() + c.label.array.tobytes() + c.metal.array.tobytes()
                          + c.tissue.array.tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def cases():
    return {k: generate_patient(SEED, array_kind=k, **TINY) for k in ARRAY_KINDS}


def _found(case) -> dict:
    c = case.contacts
    a = measure_arrays(Contacts(np.asarray(c["contacts_lps_mm"]), "truth", np.asarray(c["electrode_path_lps_mm"]),
                                info={"model": c["model"]}))["arrays"][0]
    return a


def _tangent_towards_apex(c: dict, p: np.ndarray) -> np.ndarray:
    """Unit vector of growing angle about the modiolar axis at ``p`` (truth frame)."""
    f = c["cochlear_frame"]
    z = np.asarray(f["z_lps"])
    r = p - np.asarray(f["origin_lps_mm"])
    r -= (r @ z) * z
    t = f["turn_sense"] * np.cross(z, r)
    return t / np.linalg.norm(t)


def test_normal_is_bit_identical_to_before():
    """The digest of seed 5 made before placements existed (as in test_phantom_hard)."""
    c = generate_patient(5, shape=48, spacing_mm=0.4, array_kind="normal")
    assert _digest(c) == "93c5b28918c5ce9f"
    assert c.contacts["array_kind"] == "normal" and not any(c.contacts["flags"].values())
    assert c.contacts["extracochlear_contacts"] == int(np.sum(~np.asarray(c.contacts["inside_cochlea"])))


@pytest.mark.parametrize("kind", ARRAY_KINDS)
def test_each_kind_generates_with_its_truth(cases, kind):
    case = cases[kind]
    c = case.contacts
    assert case.label.array.any() and case.params["array_placement"]["kind"] == kind == c["array_kind"]
    assert c["flags"] == {"fold_over": kind == "fold_over", "kink": kind == "kink", "out_of_order": False}
    assert len(c["inside_cochlea"]) == len(c["contacts_lps_mm"]) == c["n_contacts"]
    assert c["extracochlear_contacts"] == int(np.sum(~np.asarray(c["inside_cochlea"])))
    assert c["insertion_angle_deg"] == pytest.approx(max(c["contact_angles_deg"]), abs=0.5)
    # the same patient: only the array differs
    assert case.params["cochlea"] == cases["normal"].params["cochlea"]
    if kind != "normal":
        assert not np.array_equal(case.label.array, cases["normal"].label.array)


def test_partial_insertion_leaves_contacts_beyond_the_round_window(cases):
    c = cases["partial"].contacts
    out = ~np.asarray(c["inside_cochlea"])
    assert 2 <= c["extracochlear_contacts"] <= 5 and out[-c["extracochlear_contacts"]:].all()  # the basal ones
    # beyond the round window: a negative angle about the modiolar axis and a negative depth
    assert np.array_equal(np.asarray(c["contact_angles_deg"]) < 0, out)
    assert np.array_equal(np.asarray(c["contact_depths_mm"]) < 0, out)
    for seed in (2, 3):  # other electrodes, other counts
        o = generate_patient(seed, array_kind="partial", **TINY).contacts
        assert o["extracochlear_contacts"] == int(np.sum(np.asarray(o["contact_angles_deg"]) < 0)) >= 2


def test_fold_over_tip_points_back_to_the_base(cases):
    c = cases["fold_over"].contacts
    path = np.asarray(c["electrode_path_lps_mm"])  # tip -> base, every 0.5 mm
    tip_dir = path[0] - path[2]
    tip_dir /= np.linalg.norm(tip_dir)
    assert tip_dir @ _tangent_towards_apex(c, path[0]) < -0.7  # towards the base
    ang = np.asarray(c["contact_angles_deg"])
    assert np.argmax(ang) > 0 and ang.max() - ang[0] > 15.0 and c["extracochlear_contacts"] == 0
    rec = cases["fold_over"].params["array_placement"]
    fold = np.asarray(rec["fold_lps_mm"])
    assert np.linalg.norm(path - fold, axis=1).min() < 0.3  # the path runs through the fold point
    n = cases["normal"].contacts
    npath = np.asarray(n["electrode_path_lps_mm"])
    d = npath[0] - npath[2]
    assert d @ _tangent_towards_apex(n, npath[0]) / np.linalg.norm(d) > 0.7  # a normal tip points to the apex


def test_kink_is_a_sharp_bend_in_the_basal_turn(cases):
    rec = cases["kink"].params["array_placement"]
    assert 45.0 <= rec["kink_angle_deg"] <= 180.0 and rec["kink_bend_deg"] > 45.0
    c = cases["kink"].contacts
    path = np.asarray(c["electrode_path_lps_mm"])
    assert np.linalg.norm(path - np.asarray(rec["kink_lps_mm"]), axis=1).min() < 0.3
    assert c["extracochlear_contacts"] == cases["normal"].contacts["extracochlear_contacts"] == 0


@pytest.mark.parametrize("kind", ARRAY_KINDS)
def test_flags_found_on_true_contacts(cases, kind):
    c = cases[kind].contacts
    a = _found(cases[kind])
    got = {k: v["value"] for k, v in a["flags"].items()}
    if kind in ("fold_over", "kink"):
        assert got[kind], a["flags"][kind]["evidence"]
    else:
        assert not any(got.values()), a["flags"]
    assert a["extracochlear_contacts"] == c["extracochlear_contacts"]


def test_fold_over_arms_side_by_side_are_not_out_of_order():
    """Beside the fold the contacts of both arms lie closer than neighbours: in order all the same."""
    from cochseg3d.clinical.flags import array_flags, out_of_order
    from cochseg3d.clinical.frame import estimate_frame
    from cochseg3d.clinical.measures import contact_measures, contact_names

    c = generate_patient(5, array_kind="fold_over", **TINY).contacts  # HiFocus 1J
    pts = np.asarray(c["contacts_lps_mm"])
    m = contact_measures(estimate_frame(pts, np.asarray(c["electrode_path_lps_mm"])), pts)
    names = contact_names(len(pts), c["vendor"])
    pitch = float(np.median(np.linalg.norm(np.diff(pts, axis=0), axis=1)))
    assert out_of_order(pts, names, m["angle_deg"], pitch)["value"]  # the neighbour test alone trips on the fold
    flags = array_flags(pts, names, m["angle_deg"], m["modiolus_distance_mm"])
    assert flags["fold_over"]["value"] and not flags["out_of_order"]["value"]
    swapped = pts.copy()
    swapped[[8, 9]] = swapped[[9, 8]]  # a real swap basal of the fold is still found
    m2 = contact_measures(estimate_frame(swapped, np.asarray(c["electrode_path_lps_mm"])), swapped)
    assert array_flags(swapped, names, m2["angle_deg"], m2["modiolus_distance_mm"])["out_of_order"]["value"]


def test_random_kind_is_drawn_per_seed_and_bad_kind_refused():
    kinds = {resolve(s, "random").kind for s in range(40)}
    assert kinds == set(ARRAY_KINDS)
    assert resolve(7, "random").kind == resolve(7, "random").kind
    with pytest.raises(ValueError, match="array_kind"):
        generate_patient(1, array_kind="twisted", shape=8)


def test_rtk_model_takes_a_placement():
    pytest.importorskip("itk")
    case = generate_patient(SEED, array_kind="fold_over", ct_model="rtk", shape=32, spacing_mm=0.5)
    fast = generate_patient(SEED, array_kind="fold_over", shape=32, spacing_mm=0.5)
    assert case.contacts["contacts_lps_mm"] == fast.contacts["contacts_lps_mm"]
    assert case.label.array.any() and case.contacts["flags"]["fold_over"]


def test_cohort_and_cli_write_the_truth_flags(tmp_path):
    from cochseg3d.cli import build_parser

    args = build_parser().parse_args(["phantom", str(tmp_path / "x"), "--array-kind", "kink"])
    assert args.array_kind == "kink"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["phantom", str(tmp_path / "x"), "--array-kind", "twisted"])
    folders = generate_cohort(tmp_path / "c", patients=1, seed=3, progress=False, clutter=False,
                              array_kind="partial", shape=24)
    truth = json.loads((folders[0] / "truth" / "contacts.json").read_text())
    assert truth["array_kind"] == "partial" and truth["extracochlear_contacts"] >= 2
    assert truth["flags"] == {"fold_over": False, "kink": False, "out_of_order": False}
