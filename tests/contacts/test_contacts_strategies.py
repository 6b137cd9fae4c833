"""The contact strategies one by one: blobs, dips, blind layouts, the centreline's shift and apex."""

import numpy as np
from scipy import ndimage

from cochseg3d.contacts import Calibration
from cochseg3d.contacts.blobs import find_blobs, missing_blobs
from cochseg3d.contacts.centreline import extend_to_tip, shift_outward
from cochseg3d.contacts.layouts import layout_from_blobs, layout_from_dips
from cochseg3d.contacts.profile import dips
from cochseg3d.volume import Volume

CAL = Calibration.load()


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
    blobs = find_blobs(vol, smoothed, mask, CAL.blob_level)
    found = centres[[0, 1, 2, 4, 5, 6, 8, 10, 11]]
    extra = missing_blobs(blobs, found, 2.0, room=3)
    assert len(extra) == 3
    d = np.linalg.norm(extra[:, None] - centres[[3, 7, 9]][None], axis=2)
    assert d.min(axis=1).max() < 0.2 and sorted(d.argmin(axis=1)) == [0, 1, 2]
    # nothing to add where nothing is missing
    assert len(missing_blobs(blobs, centres, 2.0, room=0)) == 0


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
    pos = dips(ndimage.gaussian_filter1d(prof, 2), step, pitch, 12, 0.5) * step
    assert len(pos) == 12
    assert np.abs(pos - truth).max() < 0.1
    # no dips between bright contacts: nothing
    assert len(dips(np.full(len(s), 3071.0), step, pitch, 12, 0.5)) == 0


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
    assert layout_from_dips(prof, 0.05, 0.5, CAL)["model"] == "FLEX24"
    prof, _ = _saturated_profile(16, 1.3, width=0.45)
    assert layout_from_dips(prof, 0.05, 0.5, CAL)["model"] == "HiFocus SlimJ"
    # a merged band (no gaps) names nothing: its length decides elsewhere
    prof, _ = _saturated_profile(22, 0.72, width=0.6)
    assert layout_from_dips(prof, 0.05, 0.5, CAL) is None

    # alike blobs evenly a MED-EL pitch apart name MED-EL; a broken band's uneven pieces do not
    t = np.arange(12, dtype=float)
    even = np.stack([2.1 * t, 0.1 * t ** 2, np.zeros(12)], 1)
    assert layout_from_blobs((even, np.full(12, 0.3)), CAL)["vendor"] == "MED-EL"
    uneven = np.stack([np.cumsum([0, 0.9, 3.6, 1.0, 4.2, 0.8, 3.9, 1.1, 0.9, 4.4, 1.0, 3.8]), np.zeros(12),
                       np.zeros(12)], 1)
    assert layout_from_blobs((uneven, np.full(12, 0.3)), CAL) is None


def test_centreline_shifted_outward_from_its_centre_of_curvature():
    step = 0.05
    arc = np.arange(0, 1.5 * np.pi * 2.0, step) / 2.0
    circle = np.stack([2.0 * np.cos(arc), 2.0 * np.sin(arc), np.zeros_like(arc)], 1)
    moved = shift_outward(circle, 0.08, step)
    r = np.linalg.norm(moved[:, :2], axis=1)
    assert np.abs(r[30:-30] - 2.08).max() < 0.005
    assert np.allclose(np.linalg.norm(np.diff(moved, axis=0), axis=1)[:-1], step, atol=1e-3)
    line = np.stack([np.arange(0, 10, step), np.zeros(200), np.zeros(200)], 1)
    assert np.abs(shift_outward(line, 0.08, step)[:, 1:]).max() < 1e-9  # straight: unmoved


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

    turned = extend_to_tip(cut, inside, step, 1.5, turn_mm=CAL.turn_mm)
    straight = extend_to_tip(cut, inside, step, 1.5)
    assert len(turned) > len(cut) + 20
    assert np.linalg.norm(turned[-1] - arc[-1]) < 0.45 < np.linalg.norm(straight[-1] - arc[-1])
    assert off(turned) < 0.5 * off(straight)
