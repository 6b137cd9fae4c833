"""A comb of a layout's contacts along the profile: its count at its pitch, phased to the profile."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from cochseg3d.contacts.analysis import Placement
from cochseg3d.contacts.band import band_anchor

if TYPE_CHECKING:
    from cochseg3d.contacts.analysis import LabelAnalysis


def place_comb(a: LabelAnalysis, layouts: list[dict[str, Any]], info: dict[str, Any]) -> Placement:
    """The best-scoring comb over ``layouts`` (method "pitch").

    A merged layout (pitch under ``separate_pitch_mm``) is anchored to its band's ends
    (:func:`~cochseg3d.contacts.band.band_anchor`) and not phased (``anchored_comb_window``);
    a separate one, or a merged one with no band seen, starts its tip offset behind the label's
    tip less the bloom and follows the ripple within ``comb_window`` of a pitch. Records the
    winner's band ends in ``info["band_mm"]``.
    """
    cal, step = a.cal, a.step_mm
    best = None
    for layout in layouts:
        n, pitch = int(layout["n_contacts"]), float(layout["pitch_mm"])
        merged = cal.anchor_to_band and pitch < cal.separate_pitch_mm
        anchor = band_anchor(a, layout) if merged else None
        if anchor is not None:
            first, pitch, window = anchor.first_mm, anchor.pitch_mm, cal.anchored_comb_window
        else:
            first = a.n_ext * step + a.bloom_mm + float(layout.get("tip_to_first_mm", 0.5 * pitch))
            window = cal.comb_window
        cand, score = comb(a.profile_ext, step, n, pitch, first, window=window)
        cand = cand - a.n_ext
        if best is None or score > best[1]:
            best = (Placement(cand, "pitch", float(pitch), layout), score)
            if anchor is not None:
                end = anchor.end_mm
                info["band_mm"] = [round(anchor.start_mm - a.n_ext * step, 3),
                                   None if end is None else round(end - a.n_ext * step, 3)]
    return best[0]


def comb(profile: np.ndarray, step_mm: float, n: int, pitch_mm: float, tip_to_first_mm: float, *,
         window: float = 0.5) -> tuple[np.ndarray, float]:
    """Sample positions (in steps) of ``n`` contacts ``pitch_mm`` apart, phased to the profile.

    The first contact is searched within one pitch of its nominal place behind the apical tip; the
    phase maximising the summed (detrended) profile at the comb positions wins, with a mild pull
    toward the nominal place so a featureless profile falls back to it.
    """
    detrended = profile - ndimage.uniform_filter1d(profile, max(3, int(2 * pitch_mm / step_mm)), mode="nearest")
    scale = float(np.std(detrended)) + 1e-6
    best, best_score = None, -np.inf
    half = window * pitch_mm
    for s0 in np.arange(max(0.0, tip_to_first_mm - half), tip_to_first_mm + half + step_mm / 4, step_mm / 2):
        pos = (s0 + pitch_mm * np.arange(n)) / step_mm
        if pos[-1] > len(profile) - 1:
            pos = pos[pos <= len(profile) - 1]
        if len(pos) == 0:
            continue
        val = np.interp(pos, np.arange(len(profile)), detrended)
        score = float(val.mean()) / scale - 0.5 * ((s0 - tip_to_first_mm) / pitch_mm) ** 2
        if score > best_score:
            best, best_score = pos, score
    return np.asarray(best if best is not None else [], dtype=float), float(best_score)
