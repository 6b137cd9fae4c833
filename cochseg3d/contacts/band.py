"""Merged contacts (Cochlear, AB at CBCT resolution) placed between their band's two ends.

Merged contacts form one saturated band with no ripple left to phase a comb on. The array's
contact count places them evenly between the band's two ends, each end a calibrated distance
from the end contact (scripts/calibrate_contacts.py), so the spacing also absorbs the
centreline's few per cent of length error. Positions along the profile in mm from its start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cochseg3d.contacts.calibration import Calibration
from cochseg3d.contacts.profile import bright_runs

if TYPE_CHECKING:
    from cochseg3d.contacts.analysis import LabelAnalysis


@dataclass(frozen=True)
class BandAnchor:
    """Where a layout's comb goes on the extended profile (mm from its start).

    Attributes:
        first_mm: the first contact's place.
        pitch_mm: the spacing that puts the last contact at the band's end (within
            ``pitch_scale_range`` of the layout's; the layout's where the end is not seen).
        start_mm / end_mm: the band's ends (``end_mm`` None where not seen).
    """

    first_mm: float
    pitch_mm: float
    start_mm: float
    end_mm: float | None


def band_anchor(a: LabelAnalysis, layout: dict[str, Any]) -> BandAnchor | None:
    """A merged layout's comb placed from its band's two ends (None: no band seen)."""
    n, pitch = int(layout["n_contacts"]), float(layout["pitch_mm"])
    cal = a.cal
    start, end = band_ends(a.profile_ext, a.step_mm, n, pitch, cal)
    if start is None:
        return None
    # the band's two ends place the first and last contacts; the spacing between them absorbs
    # the few per cent by which the centreline's length differs from the array's. A blurrier
    # scan's band reaches further past its end contacts: the distances grow with the bloom
    to_first, to_last = band_offsets(layout, cal)
    to_first += cal.bloom_slope_first * (a.bloom_mm - cal.bloom_ref_mm)
    to_last += cal.bloom_slope_last * (a.bloom_mm - cal.bloom_ref_mm)
    first = start + to_first
    if end is not None and n > 1:
        last = end - to_last
        pitch = float(np.clip((last - first) / (n - 1), pitch * (1 - cal.pitch_scale_range),
                              pitch * (1 + cal.pitch_scale_range)))
    return BandAnchor(first, pitch, start, end)


def band_ends(profile: np.ndarray, step_mm: float, n: int, pitch_mm: float, cal: Calibration
              ) -> tuple[float | None, float | None]:
    """Arc positions (mm) where the contact band of ``n`` contacts ``pitch_mm`` apart begins and ends.

    Level: ``band_level`` of the way from the profile's lowest value in its first ``band_head_mm``
    (the tissue past the apical tip) to the band's median over its nominal length plus 3 mm (its
    saturated plateau, or the middle of its ripple where it is not saturated). Start: where the
    first run above it at least 2 mm long (or half the band; dips shorter than ``band_gap_mm``
    between contacts do not break a run) rises. End: of its falls below it (held for 0.5 mm)
    within ``pitch_scale_range`` of the band's nominal length after the start, the one nearest
    where a band of nominal length would end. Either is None where the profile has no band, or no
    such fall (a lead as bright as the contacts, a band cut short). Names: ``cal``'s entries.
    """
    profile = np.asarray(profile, dtype=float)
    if len(profile) < 4:
        return None, None
    span = (n - 1) * pitch_mm
    bottom = float(profile[: max(2, int(round(cal.band_head_mm / step_mm)))].min())
    top = float(np.median(profile[: max(4, int((span + 3.0) / step_mm))]))
    if top - bottom < 200.0:
        return None, None
    level = bottom + cal.band_level * (top - bottom)
    above = profile >= level
    if not above.any():
        return None, None
    # the band starts where the first long bright run rises: a run already bright where the
    # sampling starts (the apical extension ran into a neighbouring turn's bloom) shows no rise
    # (a dip shorter than band_gap_mm is a gap between contacts: one band)
    runs = [(a, b) for a, b in bright_runs(above, step_mm, cal.band_gap_mm)
            if (b - a) * step_mm >= min(2.0, 0.5 * span)]
    rising = [a for a, _ in runs if a > 0]
    i = int(rising[0] if rising else (runs[0][0] if runs else np.flatnonzero(above)[0]))
    start = 0.0 if i == 0 else float((i - 1 + (level - profile[i - 1]) / max(float(profile[i] - profile[i - 1]), 1e-6))
                                     * step_mm)
    lo = int((start + span * (1 - cal.pitch_scale_range)) / step_mm)
    hi = int((start + span * (1 + cal.pitch_scale_range) + 1.0) / step_mm)
    hold = max(1, int(round(0.5 / step_mm)))
    below = profile < level
    falls = []
    for i in range(max(lo, 1), min(hi, len(profile) - hold)):
        if below[i] and not below[i - 1] and below[i:i + hold].all():
            frac = (profile[i - 1] - level) / max(float(profile[i - 1] - profile[i]), 1e-6)
            falls.append(float((i - 1 + frac) * step_mm))
    if not falls:
        return start, None
    # a gap inside the band (the centreline off the array for a moment) falls too: the fall
    # nearest the end of a band of nominal length wins
    return start, min(falls, key=lambda f: abs(f - (start + span + cal.band_ends_mm)))


def band_offsets(layout: dict[str, Any], cal: Calibration) -> tuple[float, float]:
    """Calibrated (band start -> first contact, last contact -> band end) in mm for a layout."""
    keys = (str(layout.get("model")), str(layout.get("vendor")), "default")
    first = next(cal.band_to_first_mm[k] for k in keys if k in cal.band_to_first_mm)
    last = next(cal.band_to_last_mm[k] for k in keys if k in cal.band_to_last_mm)
    return first, last
