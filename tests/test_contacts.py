"""find_contacts on a synthetic spiral array whose contact centres are known exactly."""

import json

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from cochseg3d.contacts import (_blobs, _dips, _extend_to_tip, _layout_from_blobs, _layout_from_dips, _missing_blobs,
                                _shift_outward, electrode_layouts, find_contacts)
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


def test_missing_contacts_taken_from_the_labels_blobs():
    # 12 separate saturated contacts 2 mm apart along a bent line, one much bigger bright blob (not
    # a contact); 9 contacts found: the three missing ones come back, the big blob does not
    vol = Volume(np.zeros((40, 60, 90), np.float32), (0.25, 0.25, 0.25))
    t = np.linspace(0, 1, 12)
    centres = np.stack([2.0 + 18.0 * t, 5.0 + 6.0 * t ** 2, np.full(12, 5.0)], 1)
    kk, jj, ii = np.indices(vol.array.shape)
    lps = vol.index_to_lps(np.stack([ii, jj, kk], -1).reshape(-1, 3)).reshape(*vol.array.shape, 3)
    img = np.full(vol.array.shape, 100.0, np.float32)
    for c in centres:
        img[np.linalg.norm(lps - c, axis=-1) <= 0.45] = 8000.0
    img[np.linalg.norm(lps - np.array([12.0, 12.0, 5.0]), axis=-1) <= 1.4] = 8000.0
    smoothed = np.minimum(ndimage.gaussian_filter(img, 1.0), 3071.0)  # blurred platinum, saturated
    mask = smoothed > 600.0
    blobs = _blobs(vol, smoothed, mask)
    found = centres[[0, 1, 2, 4, 5, 6, 8, 10, 11]]
    extra = _missing_blobs(blobs, found, 2.0, room=3)
    assert len(extra) == 3
    d = np.linalg.norm(extra[:, None] - centres[[3, 7, 9]][None], axis=2)
    assert d.min(axis=1).max() < 0.2 and sorted(d.argmin(axis=1)) == [0, 1, 2]
    # nothing to add where nothing is missing
    assert len(_missing_blobs(blobs, centres, 2.0, room=0)) == 0


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


def test_dips_place_saturated_contacts_midway_between_the_gaps():
    # 12 contacts 2 mm apart whose tops saturate flat (no peaks): the gaps between them dip, one gap
    # barely (two blooms touch); the lead beyond is dimmer and its ripple dips too
    step, pitch = 0.05, 2.0
    s = np.arange(0, 40, step)
    truth = 1.0 + pitch * np.arange(12)
    prof = np.full(len(s), 1500.0)
    for c in truth:
        prof = np.maximum(prof, 4000.0 * np.exp(-0.5 * ((s - c) / 0.5) ** 2))
    prof[(s > 11.0) & (s < 13.0)] = np.maximum(prof[(s > 11.0) & (s < 13.0)], 2800.0)  # the shallow gap
    prof = np.minimum(prof, 3071.0)
    prof[s > 24.5] = 1500.0 + 200.0 * np.sin(2 * np.pi * s[s > 24.5] / 1.9)  # the lead's ripple
    pos = _dips(ndimage.gaussian_filter1d(prof, 2), step, pitch, 12, 0.5) * step
    assert len(pos) == 12
    assert np.abs(pos - truth).max() < 0.1
    # no dips between bright contacts: nothing
    assert len(_dips(np.full(len(s), 3071.0), step, pitch, 12, 0.5)) == 0



def _saturated_profile(n, pitch, step=0.05, length=40.0, width=0.5):
    """Blurred contacts ``pitch`` apart from 1 mm in, clipped flat; wires at 1500 HU; tissue before."""
    s = np.arange(0, length, step)
    truth = 1.0 + pitch * np.arange(n)
    prof = np.where((s > 0.3) & (s < truth[-1] + 3.0), 1500.0, 200.0)
    for c in truth:
        prof = np.maximum(prof, 4000.0 * np.exp(-0.5 * ((s - c) / width) ** 2))
    return ndimage.gaussian_filter1d(np.minimum(prof, 3071.0), 2), truth


def test_blind_layout_from_the_gaps_between_contacts_or_their_blobs():
    # no electrode named: regular gaps name the layout whose pitch and length they fit
    prof, _ = _saturated_profile(12, 1.9)
    assert _layout_from_dips(prof, 0.05, 0.5)["model"] == "FLEX24"
    prof, _ = _saturated_profile(16, 1.3, width=0.45)
    assert _layout_from_dips(prof, 0.05, 0.5)["model"] == "HiFocus SlimJ"
    # a merged band (no gaps) names nothing: its length decides elsewhere
    prof, _ = _saturated_profile(22, 0.72, width=0.6)
    assert _layout_from_dips(prof, 0.05, 0.5) is None

    # alike blobs evenly a MED-EL pitch apart name MED-EL; a broken band's uneven pieces do not
    t = np.arange(12, dtype=float)
    even = np.stack([2.1 * t, 0.1 * t ** 2, np.zeros(12)], 1)
    assert _layout_from_blobs((even, np.full(12, 0.3)))["vendor"] == "MED-EL"
    uneven = np.stack([np.cumsum([0, 0.9, 3.6, 1.0, 4.2, 0.8, 3.9, 1.1, 0.9, 4.4, 1.0, 3.8]), np.zeros(12),
                       np.zeros(12)], 1)
    assert _layout_from_blobs((uneven, np.full(12, 0.3))) is None


def test_centreline_shifted_outward_from_its_centre_of_curvature():
    step = 0.05
    arc = np.arange(0, 1.5 * np.pi * 2.0, step) / 2.0
    circle = np.stack([2.0 * np.cos(arc), 2.0 * np.sin(arc), np.zeros_like(arc)], 1)
    moved = _shift_outward(circle, 0.08, step)
    r = np.linalg.norm(moved[:, :2], axis=1)
    assert np.abs(r[30:-30] - 2.08).max() < 0.005
    assert np.allclose(np.linalg.norm(np.diff(moved, axis=0), axis=1)[:-1], step, atol=1e-3)
    line = np.stack([np.arange(0, 10, step), np.zeros(200), np.zeros(200)], 1)
    assert np.abs(_shift_outward(line, 0.08, step)[:, 1:]).max() < 1e-9  # straight: unmoved


def test_apical_extension_follows_the_curl():
    # the centreline stops 1.5 mm short of a tight apical curl (radius 0.8 mm) whose bloom fills
    # the label: extended straight it cuts across the curl, turning it stays on the array
    step = 0.05
    t = np.arange(0, 1.5 * np.pi, step / 0.8)
    arc = np.stack([0.8 * np.cos(t), 0.8 * np.sin(t), np.zeros_like(t)], 1)
    cut = arc[: -int(1.5 / step)]

    def inside(p):
        return np.min(np.linalg.norm(arc - p, axis=1)) <= 0.6

    def off(ext):
        return np.abs(np.linalg.norm(ext[len(cut):, :2], axis=1) - 0.8).max()

    turned = _extend_to_tip(cut, inside, step, 1.5, turn=True)
    straight = _extend_to_tip(cut, inside, step, 1.5, turn=False)
    assert len(turned) > len(cut) + 20
    assert np.linalg.norm(turned[-1] - arc[-1]) < 0.45 < np.linalg.norm(straight[-1] - arc[-1])
    assert off(turned) < 0.5 * off(straight)


def test_calibration_tables_recover_a_bloom_slope_and_model_offsets():
    # the calibration script fits one slope per band end across models, and medians per model at
    # the reference bloom; an outlier case (an end contact off the centreline) does not move them
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "calibrate_contacts.py"
    spec = importlib.util.spec_from_file_location("calibrate_contacts", path)
    cal = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cal)
    rng = np.random.default_rng(0)
    rows = []
    for model, vendor, first, last in (("CI632 Slim Modiolar", "Cochlear", 0.33, 0.55),
                                       ("HiFocus 1J", "AB", 0.50, 0.68)):
        for _ in range(40):
            bloom = rng.uniform(0.45, 0.85)
            rows.append({"case_id": "x", "vendor": vendor, "model": model, "bloom_mm": bloom,
                         "band_to_first_mm": first + 0.6 * (bloom - 0.65) + rng.normal(0, 0.02),
                         "last_to_band_end_mm": last + 0.2 * (bloom - 0.65) + rng.normal(0, 0.02)})
    rows[0]["band_to_first_mm"] += 5.0
    slopes, adjusted = cal.bloom_slopes(rows)
    assert slopes["BLOOM_SLOPE_FIRST"] == pytest.approx(0.6, abs=0.05)
    assert slopes["BLOOM_SLOPE_LAST"] == pytest.approx(0.2, abs=0.05)
    bands = cal.summarise(adjusted, ("band_to_first_mm", "last_to_band_end_mm"))
    radial = cal.summarise([{"vendor": "Cochlear", "model": "CI632 Slim Modiolar", "inward_mm": 0.07}] * 5
                           + [{"vendor": "AB", "model": "HiFocus 1J", "inward_mm": 0.005}] * 5, ("inward_mm",))
    tables = cal.constants(radial, bands)
    ref = slopes["BLOOM_REF_MM"]
    assert tables["BAND_TO_FIRST_MM"]["CI632 Slim Modiolar"] == pytest.approx(0.33 + 0.6 * (ref - 0.65), abs=0.02)
    assert tables["BAND_TO_LAST_MM"]["HiFocus 1J"] == pytest.approx(0.68 + 0.2 * (ref - 0.65), abs=0.02)
    assert tables["RADIAL_OFFSET_MM"] == {"CI632 Slim Modiolar": 0.07}  # below 0.02 mm: left out
