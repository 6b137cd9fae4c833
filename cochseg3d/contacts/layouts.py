"""Electrode layouts: from the catalogue by name, or chosen from the image when none is named.

A layout is a dict: ``n_contacts``, ``pitch_mm``, ``tip_to_first_mm`` (apical tip to the first
contact's centre), ``model`` and ``vendor``; the figures come from :mod:`cochseg3d.electrodes`,
which cites its sources. Without a named electrode the layout is assumed, in this order: a few
widely spaced peaks name MED-EL (:mod:`cochseg3d.contacts.peaks`); regular gaps between
contacts name the layout whose pitch and length they fit; about 12 alike blobs a MED-EL pitch
apart name MED-EL; else the band's length picks a Cochlear (first) or AB layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from cochseg3d import electrodes as catalogue
from cochseg3d.contacts.band import band_ends, band_offsets
from cochseg3d.contacts.blobs import contact_blobs
from cochseg3d.contacts.calibration import Calibration
from cochseg3d.contacts.profile import bright_extent, dips

if TYPE_CHECKING:
    from cochseg3d.contacts.analysis import LabelAnalysis


def electrode_layouts(electrode: str) -> list[dict[str, Any]]:
    """Contact layouts of a vendor ("MED-EL", "Cochlear", "AB") or of one catalogue model.

    Raises:
        ValueError: unknown vendor / model.
    """
    try:
        models = [catalogue.find_model(electrode)]
    except ValueError:
        models = catalogue.models_of(electrode)
    return [{"n_contacts": m.n_contacts, "pitch_mm": m.pitch_mm, "tip_to_first_mm": m.tip_offset_mm,
             "model": m.model, "vendor": m.vendor} for m in models]


def all_layouts() -> list[dict[str, Any]]:
    """Every catalogue layout, vendor by vendor (MED-EL, Cochlear, AB)."""
    return [layout for vendor in catalogue.VENDORS for layout in electrode_layouts(vendor)]


def electrode_spec(electrode: str) -> dict[str, Any]:
    """Keyword arguments of :func:`~cochseg3d.contacts.find_contacts` for a vendor or model name.

    Raises:
        ValueError: unknown vendor / model.
    """
    electrode_layouts(electrode)
    return {"electrode": electrode}


def requested_layouts(electrode: str | None, n_contacts: int | None, pitch_mm: float | None,
                      tip_to_first_mm: float | None) -> list[dict[str, Any]]:
    """The layouts a search was given: a count and pitch, else a named electrode's, else none."""
    if n_contacts and pitch_mm:
        tip = float(tip_to_first_mm if tip_to_first_mm is not None else pitch_mm / 2)
        return [{"n_contacts": int(n_contacts), "pitch_mm": float(pitch_mm), "model": "given", "tip_to_first_mm": tip}]
    return electrode_layouts(electrode) if electrode else []


def blind_layouts(a: LabelAnalysis, pitch_guess: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str, str | None]:
    """No electrode named and no peaks to take: the layouts to place, a note, a model to rerun with.

    ``pitch_guess``: MED-EL layouts the peaks' spacing named (taken first). The rerun model is a
    perimodiolar layout the band's length picked: its centreline lies inside its spiral, so the
    search starts again with it named, moved out (calibration phantoms: 0.187 -> 0.175 mm).
    """
    cal = a.cal
    if pitch_guess:
        return pitch_guess, f"{pitch_guess[0]['vendor']} (assumed from the peaks' spacing)", None
    fit = layout_from_dips(a.profile_ext, a.step_mm, a.bloom_mm, cal) if cal.blind_dips else None
    if fit is None and cal.blind_blobs:
        fit = layout_from_blobs(a.blobs(), cal)
    if fit is not None:
        return [fit], f"{fit['vendor']} (assumed from the spacing of the gaps between contacts)", None
    band = layout_from_band(a.profile_ext, a.step_mm, cal)
    note = f"{band['vendor']} (assumed from the band's length: contacts not separable)"
    rerun = str(band["model"]) if cal.radial_offset_mm.get(str(band.get("model"))) else None
    return [band], note, rerun


def layout_from_blobs(blobs: tuple[np.ndarray, np.ndarray], cal: Calibration) -> dict[str, Any] | None:
    """A separate-contact (MED-EL) layout where about its count of alike blobs show, else None."""
    from scipy.spatial import cKDTree

    for layout in sorted(all_layouts(), key=lambda l: -float(l["pitch_mm"])):
        n, pitch = int(layout["n_contacts"]), float(layout["pitch_mm"])
        if pitch < cal.separate_pitch_mm or not len(blobs[0]):
            continue
        found = contact_blobs(blobs, pitch, n)
        if len(found) < 0.75 * n:
            continue
        # neighbours a pitch apart (a broken merged band's pieces are not evenly spaced)
        nn = cKDTree(found).query(found, k=2)[0][:, 1]
        if np.mean(np.abs(nn / pitch - 1.0) <= 0.25) >= 0.75:
            return layout
    return None


def layout_from_dips(profile: np.ndarray, step_mm: float, bloom_mm: float, cal: Calibration) -> dict[str, Any] | None:
    """The catalogue layout whose pitch the gaps between its contacts show, if one does.

    Only layouts of 1 mm pitch or more (AB, MED-EL): closer gaps do not show at CBCT resolution.
    The dips' spacing must match the pitch within ``cal.blind_dips``, place at least 3/4 of its
    contacts, and the bright stretch must be about as long as the layout (a gap every other
    contact would otherwise pass for twice the pitch); the closest match wins.
    """
    best, best_fit = None, np.inf
    for layout in all_layouts():
        n, pitch = int(layout["n_contacts"]), float(layout["pitch_mm"])
        if pitch < 1.0:
            continue
        pos = dips(profile, step_mm, pitch, n, bloom_mm)
        if len(pos) < 0.75 * n:
            continue
        fit = float(np.mean(np.abs(np.diff(pos) * step_mm / pitch - 1.0)))  # every spacing, not the median
        if fit > cal.blind_dips or fit >= best_fit:
            continue
        length = bright_extent(profile, step_mm, pitch, cal) - cal.band_ends_mm
        if abs(length / ((n - 1) * pitch) - 1.0) <= cal.blind_length_fit:
            best, best_fit = layout, fit
    return best


def layout_from_band(profile: np.ndarray, step_mm: float, cal: Calibration) -> dict[str, Any]:
    """The merged-contact layout (Cochlear, AB) whose length best matches the contact band.

    Saturation flattens the ripple that could tell the pitch; the band's length (first to last
    contact, from its ends) is left. A Cochlear layout within ``cal.blind_length_fit`` of it is
    taken first (AB's 16 contacts would lie among its 22, the other way round six are lost), then an AB
    one; failing both, or without a measurable band, the closest.
    """
    fits = []
    for l in electrode_layouts("Cochlear") + electrode_layouts("AB"):
        n, pitch = int(l["n_contacts"]), float(l["pitch_mm"])
        start, end = band_ends(profile, step_mm, n, pitch, cal)
        if end is None:
            fits.append((np.inf, l))
            continue
        to_first, to_last = band_offsets(l, cal)
        span = (end - to_last) - (start + to_first)
        fits.append((abs(span / ((n - 1) * pitch) - 1.0), l))
    for vendor in ("Cochlear", "AB"):
        close = [t for t in fits if t[1]["vendor"] == vendor and t[0] <= cal.blind_length_fit]
        if close:
            return min(close, key=lambda t: t[0])[1]
    return min(fits, key=lambda t: t[0])[1] if np.isfinite(min(t[0] for t in fits)) else fits[0][1]
