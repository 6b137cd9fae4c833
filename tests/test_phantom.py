"""Phantom generation: determinism, shapes, overrides, anatomy figures, orientation consistency."""

from __future__ import annotations

import numpy as np
import pytest

from cochseg3d.phantom import CATALOGUE, PhantomCase, generate_patient, models_of
from cochseg3d.volume import canonical


@pytest.fixture(scope="module")
def case() -> PhantomCase:
    return generate_patient(11)


def test_same_seed_same_patient_other_seed_differs(case):
    again = generate_patient(11)
    assert np.array_equal(case.image.array, again.image.array)
    assert np.array_equal(case.label.array, again.label.array)
    assert np.array_equal(case.metal.array, again.metal.array)
    assert case.params == again.params and case.contacts == again.contacts
    other = generate_patient(12)
    assert not np.array_equal(case.image.array, other.image.array)


def test_volumes_share_the_grid_and_types(case):
    assert case.image.array.dtype == np.int16 and case.image.array.shape == (96, 96, 96)
    assert case.image.spacing_mm == (0.4, 0.4, 0.4)
    for v in (case.label, case.metal, case.tissue):
        assert v.grid.allclose(case.image.grid, atol_mm=0)
        assert v.array.dtype == np.uint8
    assert set(np.unique(case.label.array)) == {0, 1}
    assert np.all(case.label.array >= case.metal.array), "metal voxels must be labelled"
    sat = case.params["saturation_hu"]
    assert case.image.array.min() >= -1024 and case.image.array.max() <= sat
    assert (case.image.array == sat).any(), "platinum must saturate the detector range"


def test_contacts_json_schema(case):
    c = case.contacts
    for key in ("case_id", "vendor", "model", "side", "n_contacts", "pitch_mm", "insertion_angle_deg",
                "contacts_lps_mm", "inside_cochlea"):
        assert key in c
    assert len(c["contacts_lps_mm"]) == c["n_contacts"] == len(c["inside_cochlea"])
    assert c["case_id"] == case.case_id and c["side"] in ("left", "right")
    # apex -> base: the cumulative angle from the round window falls along the list
    ang = np.asarray(c["contact_angles_deg"])
    assert np.all(np.diff(ang) < 0)
    assert ang[0] == pytest.approx(c["insertion_angle_deg"], abs=1e-3)
    pitch = np.linalg.norm(np.diff(np.asarray(c["contacts_lps_mm"]), axis=0), axis=1)
    assert np.all(pitch <= c["pitch_mm"] + 1e-6) and np.all(pitch > 0.8 * c["pitch_mm"])


def test_overrides_apply_and_leave_other_draws_alone():
    base = generate_patient(5)
    c = generate_patient(5, vendor="Cochlear", side="left", noise_hu=40.0, offset_hu=-200.0, saturation_hu=4095.0)
    assert c.contacts["vendor"] == "Cochlear" and c.contacts["n_contacts"] == 22
    assert c.contacts["side"] == "left" and c.params["cochlea"]["center_lps_mm"][0] > 0  # L is +x in LPS
    assert c.params["noise_hu"] == 40.0 and c.params["offset_hu"] == -200.0
    assert c.params["a_value_mm"] == base.params["a_value_mm"]
    assert c.params["psf_sigma_mm"] == base.params["psf_sigma_mm"]
    fine = generate_patient(5, spacing_mm=0.3)
    assert fine.image.spacing_mm == (0.3, 0.3, 0.3) and fine.image.array.shape == (128, 128, 128)
    aniso = generate_patient(5, spacing_mm=(0.4, 0.4, 0.6))
    assert aniso.image.spacing_mm == (0.4, 0.4, 0.6) and aniso.image.array.shape == (64, 96, 96)
    with pytest.raises(ValueError, match="unknown phantom override"):
        generate_patient(5, colour="red")
    with pytest.raises(ValueError, match="vendor"):
        generate_patient(5, vendor="Acme")


def test_catalogue_vendors_and_figures():
    assert {m.n_contacts for m in models_of("MED-EL")} == {12}
    assert {m.n_contacts for m in models_of("Cochlear")} == {22}
    assert {m.n_contacts for m in models_of("AB")} == {16}
    flex28 = next(m for m in CATALOGUE if m.model == "FLEX28")
    assert flex28.active_length_mm == pytest.approx(23.1) and flex28.aid_mean_deg == 575
    for m in CATALOGUE:
        assert m.pitch_mm > m.contact_len_mm and m.length_mm > m.active_length_mm
        assert "datasheet" in m.sources and "assumption" in m.sources


def test_cochlea_shape_follows_published_ranges():
    for seed in range(6):
        co = generate_patient(seed, shape=16).params["cochlea"]
        assert 8.4 - 1e-6 <= co["A_value_mm"] <= 10.4 + 1e-6
        assert 2.45 <= co["turns"] <= 2.8
        # Escude 2006: two-turn lateral wall = 4.16 A - 3.98
        assert co["lateral_wall_length_2turns_mm"] == pytest.approx(4.16 * co["A_value_mm"] - 3.98, abs=0.1)
        assert 22.0 <= co["mid_canal_length_mm"] <= 36.0
        axis = np.asarray(co["axes_lps"])[2]
        assert 40 <= np.degrees(np.arccos(abs(axis[0]))) <= 64  # modiolar axis vs left-right (~52 deg)


def test_lateral_wall_track_matches_published_insertion_depths():
    """A full FLEX24 / FLEX28 insertion (24 / 28 mm) reaches the published median AIDs (408 / 575 deg)."""
    from cochseg3d.phantom.anatomy import cochlea_spiral
    from cochseg3d.phantom.implant import spiral_track

    coch = cochlea_spiral(np.zeros(3), np.eye(3), 1.0, a_value_mm=9.2, turns=2.62, height_mm=3.4,
                          canal_base_mm=1.0, canal_apex_mm=0.55)
    th = np.linspace(0, coch.theta_max, 5000)
    for name, aid, length in (("FLEX24", 408, 24.0), ("FLEX28", 575, 28.0)):
        model = next(m for m in CATALOGUE if m.model == name)
        track = spiral_track(coch, model, th)
        s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(track, axis=0), axis=1))])
        depth = np.interp(np.radians(aid), th, s) + model.tip_offset_mm
        assert depth == pytest.approx(length, abs=1.5)


def test_orientations_hold_the_same_physical_scan():
    ax = generate_patient(3, orientation="axial")
    cor = generate_patient(3, orientation="coronal")
    sag = generate_patient(3, orientation="sagittal")
    assert np.allclose(cor.image.direction, [[1, 0, 0], [0, 0, 1], [0, -1, 0]])  # IOP 1,0,0,0,0,-1
    assert np.allclose(sag.image.direction[:, :2].T.ravel(), [0, 1, 0, 0, 0, -1])
    ca = canonical(ax.image)
    for other in (cor, sag):
        co = canonical(other.image)
        assert co.grid.allclose(ca.grid) and np.array_equal(co.array, ca.array)
        assert np.array_equal(canonical(other.label).array, canonical(ax.label).array)
    obl = generate_patient(3, orientation="oblique")
    assert not obl.image.grid.is_axis_aligned()
    assert obl.contacts["contacts_lps_mm"] == ax.contacts["contacts_lps_mm"]

    contacts = np.asarray(ax.contacts["contacts_lps_mm"])

    def near_contacts(v):  # label points around the contacts (the lead is cut differently by each field)
        pts = v.index_to_lps(np.argwhere(v.array > 0)[:, ::-1])
        return pts[np.min(np.linalg.norm(pts[:, None] - contacts[None], axis=2), axis=1) < 2.0]

    a, o = near_contacts(ax.label), near_contacts(obl.label)
    assert np.linalg.norm(a.mean(axis=0) - o.mean(axis=0)) < 0.2
    assert abs(len(a) - len(o)) < 0.15 * len(a)


def test_mixed_orientation_is_drawn_per_patient():
    seen = {generate_patient(s, orientation="mixed", shape=24).params["orientation"] for s in range(12)}
    assert len(seen) >= 3 and seen <= {"axial", "coronal", "sagittal", "oblique"}


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="preset"):
        generate_patient(1, preset="huge")
    with pytest.raises(ValueError, match="orientation"):
        generate_patient(1, orientation="diagonal")
    with pytest.raises(ValueError, match="saturation_hu"):
        generate_patient(1, saturation_hu=40000.0)
