"""find_contacts on a synthetic spiral array whose contact centres are known exactly."""

import json

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from cochseg3d.contacts import electrode_layouts, electrode_spec, find_contacts
from cochseg3d.metrics import match_contacts
from cochseg3d.volume import Volume


def _array_phantom(n, pitch, tip, *, spacing=0.2, contact_len=0.5, noise=30.0, seed=0, dark=(),
                   lead_at_apex=False):
    """A 1.3-turn spiral carrier with a straight lead; contacts 3000 HU, wires 1500 HU, blurred.

    ``dark``: indices of contacts drawn no brighter than the wires (lost in the CT).
    ``lead_at_apex``: the lead's last stretch is missing from the label and the lead instead
    touches the spiral near its apex (a lead passing over the turns, merged by the blooming).

    Returns (image, label, contacts apex -> base in LPS mm).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(0, 1.3 * 2 * np.pi, 0.003)
    r = 4.0 - 2.5 * t / t[-1]
    spiral = np.stack([r * np.cos(t), r * np.sin(t), 0.4 * t], 1)  # base (t=0) -> apex
    lead_dir = np.array([0.3, -1.0, 0.1]) / np.linalg.norm([0.3, -1.0, 0.1])
    lead = spiral[0] + np.outer(np.arange(5.0, 0.0, -0.01), lead_dir)
    curve = np.vstack([lead, spiral])[::-1]  # apex -> base -> lead end
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    if lead_at_apex:
        # the spiral alone carries the contacts; a 9 mm lead comes in from outside and ends where
        # it passes 0.5 mm from the spiral's inner turn, 1 mm from the apical tip
        curve = spiral[::-1]
        arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
        touch = curve[int(np.searchsorted(arc, 1.0))]
        out = touch - curve.mean(axis=0)
        out[2] = 0.0
        out /= np.linalg.norm(out)
        lead = touch + np.outer(np.arange(9.0, 0.5, -0.01), out + np.array([0.0, 0.0, 0.3]))
    s = tip + pitch * np.arange(n)
    contacts = np.stack([np.interp(s, arc, curve[:, c]) for c in range(3)], 1)
    lo = curve.min(0) - 1.5
    size = np.ceil((curve.max(0) + 1.5 - lo) / spacing).astype(int)
    vol = Volume(np.zeros(size[::-1], np.float32), (spacing,) * 3, tuple(lo))
    kk, jj, ii = np.indices(vol.array.shape)
    lps = vol.index_to_lps(np.stack([ii, jj, kk], -1).reshape(-1, 3))
    d, idx = cKDTree(curve).query(lps, distance_upper_bound=1.0)
    a = np.where(np.isfinite(d), arc[np.minimum(idx, len(arc) - 1)], -10)
    if lead_at_apex:
        d_lead, _ = cKDTree(lead).query(lps, distance_upper_bound=1.0)
        a = np.where(d_lead < d, -10, a)
        d = np.minimum(d, d_lead)
    img = np.full(len(lps), 40.0)
    img[d <= 0.3] = 1500.0
    bright = np.setdiff1d(np.arange(n), list(dark))
    on_contact = (np.abs(a[:, None] - s[None, bright]) <= contact_len / 2).any(axis=1) & (d <= 0.4)
    img[on_contact] = 3000.0
    img = ndimage.gaussian_filter(img.reshape(vol.array.shape), 0.15 / spacing)
    img += rng.normal(0, noise, img.shape)
    label = (d <= (0.7 if lead_at_apex else 0.4)).reshape(vol.array.shape)  # blooming merges lead and turn
    return vol.with_array(img.astype(np.float32)), vol.with_array(label.astype(np.uint8)), contacts


@pytest.mark.parametrize("n,pitch,tip,spacing", [(12, 2.1, 0.6, 0.25), (16, 1.1, 0.4, 0.2)],
                         ids=["separate-2.1mm", "separate-1.1mm"])
def test_separate_contacts_from_intensity_peaks(n, pitch, tip, spacing):
    img, lab, truth = _array_phantom(n, pitch, tip, spacing=spacing)
    c = find_contacts(lab, img)
    assert c.method == "peaks"
    m = match_contacts(c.lps_mm, truth)
    assert m["recall"] == 1.0 and m["precision"] == 1.0
    assert m["mean_error_mm"] < 0.1
    # apex -> base: the first contact found is the most apical one
    assert np.linalg.norm(c.lps_mm[0] - truth[0]) < 0.3
    assert c.pitch_mm == pytest.approx(pitch, rel=0.1)


def test_merged_contacts_placed_with_known_pitch():
    # 0.72 mm pitch at 0.4 mm voxels: contacts blur into one band; the layout places them
    img, lab, truth = _array_phantom(22, 0.72, 0.3, spacing=0.4, contact_len=0.3)
    c = find_contacts(lab, img, n_contacts=22, pitch_mm=0.72, tip_to_first_mm=0.3)
    assert c.method == "pitch" and len(c.lps_mm) == 22
    m = match_contacts(c.lps_mm, truth)
    assert m["recall"] >= 0.9
    assert m["mean_error_mm"] < 0.35
    assert np.linalg.norm(c.lps_mm[0] - truth[0]) < 0.6


def test_blind_mode_takes_medel_layout_from_few_widely_spaced_peaks():
    # only the 7 apical contacts show as peaks: too few to take as they are, but their 2.1 mm spacing
    # names a MED-EL array, whose 12-contact comb covers the whole array (Cochlear's would not)
    img, lab, truth = _array_phantom(12, 2.1, 0.6, spacing=0.25, dark=range(7, 12))
    c = find_contacts(lab, img)
    assert c.method == "pitch" and len(c.lps_mm) == 12
    assert c.info["electrode"].startswith("MED-EL")
    m = match_contacts(c.lps_mm, truth)
    assert m["recall"] >= 0.9


@pytest.mark.parametrize("electrode", [None, "given"])
def test_lead_joined_near_the_apex_does_not_flip_the_array(electrode):
    # the label runs lead -> inner turn -> ... -> basal end: the longest path from the lead ends at
    # the base and calls it the apex; the bright run's curled end puts the apex back
    img, lab, truth = _array_phantom(16, 1.1, 0.4, spacing=0.3, contact_len=0.4, lead_at_apex=True)
    kw = {"n_contacts": 16, "pitch_mm": 1.1, "tip_to_first_mm": 0.4} if electrode else {}
    c = find_contacts(lab, img, **kw)
    assert np.linalg.norm(c.lps_mm[0] - truth[0]) < 0.6, "first contact is not the apical one"
    m = match_contacts(c.lps_mm, truth)
    assert m["recall"] >= 0.9


def test_merged_arrays_placed_between_the_bands_ends_on_phantoms():
    # CBCT phantoms (blooming, saturation) with merged contacts and their truth labels: the band's
    # two ends place the contacts; the spacing follows the band, not exactly the datasheet pitch
    from cochseg3d.phantom import generate_patient

    errors, scales = [], []
    for model in ("CI612 Contour Advance", "HiFocus 1J"):
        for seed in (1, 2, 3):
            case = generate_patient(seed, preset="small", model=model, spacing_mm=0.35)
            truth = np.array(case.contacts["contacts_lps_mm"])
            c = find_contacts(case.label, case.image, electrode=model)
            assert c.method == "pitch" and len(c.lps_mm) == len(truth)
            m = match_contacts(c.lps_mm, truth)
            assert m["recall"] >= 0.95, (model, seed, m)
            assert np.linalg.norm(c.lps_mm[0] - truth[0]) < 0.6  # apex first
            errors.append(m["mean_error_mm"])
            scales.append(c.pitch_mm / case.contacts["pitch_mm"])
    assert np.mean(errors) < 0.2 and max(errors) < 0.3
    assert 0.92 <= min(scales) and max(scales) <= 1.08 and np.ptp(scales) > 0.01


def test_blind_merged_band_keeps_cochleas_22_and_names_ab_when_only_ab_fits():
    # no electrode named: a Cochlear array must never be called AB (6 of its 22 contacts lost);
    # an AB array whose band no Cochlear layout can span gets AB's 16
    from cochseg3d.phantom import generate_patient

    for seed in (1, 2, 3):
        case = generate_patient(seed, preset="small", model="CI622 Slim Straight", spacing_mm=0.35)
        c = find_contacts(case.label, case.image)
        assert len(c.lps_mm) == 22 and c.info["electrode"].startswith("Cochlear")
        assert match_contacts(c.lps_mm, case.contacts["contacts_lps_mm"])["recall"] >= 0.95
    named_ab = 0
    for seed in (2, 3):
        case = generate_patient(seed, preset="small", model="HiFocus 1J", spacing_mm=0.35)
        c = find_contacts(case.label, case.image)
        assert match_contacts(c.lps_mm, case.contacts["contacts_lps_mm"])["recall"] >= 0.95
        named_ab += c.info["electrode"].startswith("AB") and len(c.lps_mm) == 16
    assert named_ab >= 1


def test_contacts_json_has_lps_and_ras():
    img, lab, truth = _array_phantom(12, 2.1, 0.6, spacing=0.3)
    c = find_contacts(lab, img, electrode="MED-EL")
    rec = json.loads(json.dumps(c.to_json(case_id="x")))
    lps, ras = np.array(rec["contacts_lps_mm"]), np.array(rec["contacts_ras_mm"])
    np.testing.assert_allclose(ras[:, :2], -lps[:, :2])
    np.testing.assert_allclose(ras[:, 2], lps[:, 2])
    assert rec["n_contacts"] == 12 and rec["order"] == "apex_to_base"


def test_empty_label_and_bad_input():
    img, lab, _ = _array_phantom(12, 2.1, 0.6, spacing=0.4)
    c = find_contacts(lab.with_array(np.zeros_like(lab.array)), img)
    assert len(c.lps_mm) == 0
    with pytest.raises(ValueError, match="unknown electrode"):
        find_contacts(lab, img, electrode="Acme")
    with pytest.raises(ValueError, match="grid"):
        find_contacts(Volume(lab.array, (0.5, 0.5, 0.5)), img)
    assert {l["n_contacts"] for l in electrode_layouts("Cochlear")} == {22}


def test_layouts_come_from_the_catalogue():
    from cochseg3d.electrodes import CATALOGUE

    for vendor in ("MED-EL", "Cochlear", "AB"):
        got = {(l["model"], l["n_contacts"], l["pitch_mm"], l["tip_to_first_mm"]) for l in electrode_layouts(vendor)}
        assert got == {(m.model, m.n_contacts, m.pitch_mm, m.tip_offset_mm) for m in CATALOGUE if m.vendor == vendor}
    assert [l["model"] for l in electrode_layouts("ci632 slim modiolar")] == ["CI632 Slim Modiolar"]
    assert electrode_spec("AB") == {"electrode": "AB"}
    with pytest.raises(ValueError, match="unknown electrode"):
        electrode_spec("Acme 9")
