"""Realism checks: grey values per tissue, contacts measured back, blooming, label confined to the array."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from cochseg3d.phantom import generate_patient
from cochseg3d.phantom import anatomy as an
from cochseg3d.phantom import measure as M
from cochseg3d.phantom.generate import LABEL_BAND_MM

#: 0.2 mm voxels on a 20 mm field centred on the cochlea: clinical resolution at a test's cost
FINE = dict(spacing_mm=0.2, shape=100, fov_center_ear_mm=(0.0, -1.0, 1.5))


def _path(case) -> np.ndarray:
    return np.asarray(case.contacts["electrode_path_lps_mm"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hu_percentiles_per_tissue_class(seed):
    case = generate_patient(seed)
    # back to HU: grey value = gain * HU + offset (CBCT is not calibrated)
    img = (case.image.array.astype(float) - case.params["offset_hu"]) / case.params["gain"]
    far = ndimage.distance_transform_edt(case.label.array == 0, sampling=case.image.spacing_mm[::-1]) > 4.0
    ranges = {  # (median lo, median hi) in HU
        an.SOFT: (-40, 120), an.BONE: (1000, 1700), an.CAPSULE: (1450, 2150), an.FLUID: (-150, 200),
    }
    med = {}
    for cls, (lo, hi) in ranges.items():
        sel = ndimage.binary_erosion(case.tissue.array == cls, iterations=2) & far
        assert sel.sum() > 200, an.TISSUE_NAMES[cls]
        med[cls] = float(np.median(img[sel]))
        assert lo <= med[cls] <= hi, (an.TISSUE_NAMES[cls], med[cls])
    air = ndimage.binary_erosion(case.tissue.array == an.AIR, iterations=2) & far
    assert np.median(img[air]) <= -750
    # dense temporal bone stays in the 1100-2000 HU band: 95th percentile of capsule and bone
    bone = ndimage.binary_erosion(np.isin(case.tissue.array, (an.BONE, an.CAPSULE)), iterations=2) & far
    assert np.percentile(img[bone], 95) <= 2300
    assert med[an.CAPSULE] > med[an.BONE] > med[an.SOFT] > np.median(img[air])


def test_noise_level_and_grey_offset_follow_the_draws():
    quiet = generate_patient(4, noise_hu=30.0, offset_hu=0.0, streak_strength=0.0)
    loud = generate_patient(4, noise_hu=110.0, offset_hu=300.0, streak_strength=0.0)
    sel = ndimage.distance_transform_edt(quiet.tissue.array == an.SOFT, sampling=quiet.image.spacing_mm[::-1]) > 3.0

    def std(case):
        a = case.image.array.astype(np.float32)
        return float(np.std((a - ndimage.uniform_filter(a, 7))[sel]))  # high-pass: noise, not anatomy

    assert 15.0 <= std(quiet) <= 45.0  # about the drawn 30 HU
    assert std(loud) > 2.5 * std(quiet)
    shift = np.median(loud.image.array[sel].astype(float)) - np.median(quiet.image.array[sel].astype(float))
    assert shift == pytest.approx(300.0, abs=40.0)


def test_metal_streaks_come_from_the_projection_model():
    none = generate_patient(6, streak_strength=0.0, noise_hu=30.0)
    strong = generate_patient(6, streak_strength=1.5, noise_hu=30.0)
    d = ndimage.distance_transform_edt(none.label.array == 0, sampling=none.image.spacing_mm[::-1])
    ring = (d > 2.0) & (d < 8.0)
    diff = strong.image.array.astype(float) - none.image.array.astype(float)
    assert np.std(diff[ring]) > 30.0  # streaks near the array
    assert np.std(diff[d > 15.0]) < np.std(diff[ring]) / 2  # and fading with distance


@pytest.mark.parametrize("vendor", ["MED-EL", "Cochlear", "AB"])
def test_contacts_measured_back_from_metal_and_label(vendor):
    case = generate_patient(21, vendor=vendor, **FINE)
    c = case.contacts
    truth = np.asarray(c["contacts_lps_mm"])
    found = M.component_centroids(case.metal)
    assert len(found) == c["n_contacts"]
    # order the measured contacts along the drawn array path, apex first
    order = np.argsort(cKDTree(_path(case)).query(found)[1])
    found = found[order]
    assert np.max(np.linalg.norm(found - truth, axis=1)) < 0.15
    spacing_found = np.linalg.norm(np.diff(found, axis=0), axis=1)
    spacing_truth = np.linalg.norm(np.diff(truth, axis=0), axis=1)
    assert np.max(np.abs(spacing_found - spacing_truth)) <= 0.15
    assert np.median(spacing_found) == pytest.approx(c["pitch_mm"], abs=0.15)
    co = case.params["cochlea"]
    ang = M.cumulative_angles_deg(found, np.asarray(co["center_lps_mm"]), np.asarray(co["axes_lps"]), co["sense"])
    assert ang[0] == pytest.approx(c["insertion_angle_deg"], abs=5.0)
    # the label reaches just beyond the apical contact (tip + blooming), not further
    lab = case.label.index_to_lps(np.argwhere(case.label.array > 0)[:, ::-1])
    near = cKDTree(_path(case)).query(lab)[1]
    apical = lab[near == near.min()]
    a_lab = M.cumulative_angles_deg(np.vstack([apical, found]), np.asarray(co["center_lps_mm"]),
                                    np.asarray(co["axes_lps"]), co["sense"])[: len(apical)]
    assert 0.0 <= np.max(a_lab) - c["insertion_angle_deg"] <= 70.0


def test_blooming_diameter_and_contact_separation_by_vendor():
    medel = generate_patient(8, model="FLEX28", psf_sigma_mm=0.25, saturation_hu=3071.0, **FINE)
    pts = np.asarray(medel.contacts["contacts_lps_mm"])
    bloom = M.bloom_diameters(medel.label, pts, M.tangents(pts))
    assert np.median(bloom) >= 1.3 and np.median(bloom) <= 2.6  # contacts bloom to ~2 mm
    cochlear = generate_patient(8, model="CI612 Contour Advance", psf_sigma_mm=0.25, saturation_hu=3071.0, **FINE)

    def saturated_runs(case) -> int:
        p = np.asarray(case.contacts["contacts_lps_mm"])
        seg = np.concatenate([np.linspace(a, b, 40, endpoint=False) for a, b in zip(p[:-1], p[1:])])
        on = M.sample(case.image, seg, order=1) >= case.params["saturation_hu"] - 100
        return int(on[0] + np.sum(on[1:] & ~on[:-1]))

    assert saturated_runs(medel) == 12  # MED-EL's ~2 mm pitch: contacts stay apart
    assert saturated_runs(cochlear) <= 2  # Cochlear's <1 mm pitch: one bright band


@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_label_stays_on_the_electrode_path(orientation):
    case = generate_patient(9, orientation=orientation)
    lab = case.label.index_to_lps(np.argwhere(case.label.array > 0)[:, ::-1])
    assert len(lab) > 100
    radius = case.params["electrode"]["lead_diameter_mm"] / 2
    dist = cKDTree(_path(case)).query(lab)[0]
    tol = 0.5 * np.linalg.norm(case.image.spacing_mm) + 0.3  # voxel centre + path sampled every 0.5 mm
    assert dist.max() <= radius + LABEL_BAND_MM + tol
    # "at least half platinum": at 0.4 mm a 0.04-0.08 mm^3 contact may fill no voxel half-way
    metal = case.metal.index_to_lps(np.argwhere(case.metal.array > 0)[:, ::-1])
    if len(metal):
        d_contact = cKDTree(np.asarray(case.contacts["contacts_lps_mm"])).query(metal)[0]
        assert d_contact.max() <= 0.5 * case.params["electrode"]["contact_len_mm"] + tol


@pytest.mark.slow
@pytest.mark.parametrize("model, separate", [("FLEX28", True), ("CI622 Slim Straight", False)])
def test_clinical_preset_contacts_and_blooming(model, separate):
    case = generate_patient(31, preset="clinical", model=model, psf_sigma_mm=0.25)
    assert case.image.array.shape == (200, 200, 200) and case.image.spacing_mm == (0.2, 0.2, 0.2)
    c = case.contacts
    assert len(M.component_centroids(case.metal)) == c["n_contacts"]
    pts = np.asarray(c["contacts_lps_mm"])
    bloom = M.bloom_diameters(case.label, pts, M.tangents(pts))
    assert np.median(bloom) >= 1.3 and np.median(bloom) <= 2.8
    seg = np.concatenate([np.linspace(a, b, 40, endpoint=False) for a, b in zip(pts[:-1], pts[1:])])
    on = M.sample(case.image, seg, order=1) >= case.params["saturation_hu"] - 100
    runs = int(on[0] + np.sum(on[1:] & ~on[:-1]))
    assert (runs == c["n_contacts"]) if separate else (runs <= 2)
