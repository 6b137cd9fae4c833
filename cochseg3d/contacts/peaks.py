"""Separate contacts read off the profile: its peaks as they are, or between its dips.

Separate contacts (MED-EL; others at fine voxels) are the profile's peaks. Without a named
electrode, separate peaks far behind the apical tip (lead wires) are not taken as contacts, and a
few widely spaced peaks name MED-EL's layouts. Separate contacts whose tops saturate flat leave
no peaks, but the gaps between them still dip: the contacts lie midway between the dips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cochseg3d.contacts.analysis import Placement
from cochseg3d.contacts.layouts import all_layouts
from cochseg3d.contacts.profile import dips, profile_peaks

if TYPE_CHECKING:
    from cochseg3d.contacts.analysis import LabelAnalysis


@dataclass
class PeakReading:
    """What the profile's peaks say.

    Attributes:
        placement: the peaks taken as the contacts (method "peaks"), or None.
        pitch_guess: no electrode named and too few peaks to take: the MED-EL layouts their
            spacing names (the Cochlear comb would leave a 12-contact array mostly uncovered).
    """

    placement: Placement | None
    pitch_guess: list[dict[str, Any]] = field(default_factory=list)


def read_peaks(a: LabelAnalysis, layouts: list[dict[str, Any]], info: dict[str, Any]) -> PeakReading:
    """The profile's peaks, taken as the contacts where they are regular, resolvable (at least
    two voxels apart), enough for a catalogue array, start near the apical tip, and (a layout
    named) match its pitch; then the brightest run of its count is kept."""
    step, bloom = a.step_mm, a.bloom_mm
    min_sep = 0.6 * min(l["pitch_mm"] for l in layouts) if layouts else 0.5
    peaks = profile_peaks(a.profile, step, min_sep)
    info["n_peaks"] = int(len(peaks))
    if len(peaks) < 3:
        return PeakReading(None)
    gaps = np.diff(peaks) * step
    measured_pitch = float(np.median(gaps))
    regular = float(np.std(gaps) / measured_pitch) < 0.3
    # peaks closer than what CBCT resolves are noise on a merged array
    resolvable = measured_pitch >= 2 * float(a.spacing_mm.max())
    fits = [l for l in layouts if abs(measured_pitch - l["pitch_mm"]) < 0.3 * l["pitch_mm"]
            and len(peaks) >= 0.75 * l["n_contacts"]]
    # without a known layout, accept only a count any catalogue array could have
    cands = layouts or all_layouts()
    enough = len(peaks) >= 0.75 * min(l["n_contacts"] for l in cands)
    # the contacts start at the apical tip: a run of peaks far behind it lies on the lead's wires
    near_tip = peaks[0] * step <= bloom + max(float(l.get("tip_to_first_mm", 0.5 * l["pitch_mm"]))
                                              for l in cands) + 1.5 * measured_pitch
    use_peaks = regular and resolvable and enough and near_tip and (not layouts or bool(fits))
    on_array = peaks[0] * step <= bloom + 0.6 + 6 * measured_pitch
    pitch_guess = []
    if not layouts and regular and resolvable and on_array and len(peaks) >= 4:
        # too few to take as they are, but widely spaced ones starting within the first half of a
        # 12-contact array name MED-EL's layouts (AB's fall inside the Cochlear comb)
        pitch_guess = [l for l in all_layouts() if l["vendor"] == "MED-EL"
                       and abs(measured_pitch - l["pitch_mm"]) < 0.2 * l["pitch_mm"]]
    info["peaks_near_tip"] = bool(near_tip)
    info["first_peak_mm"] = round(float(peaks[0] * step - bloom), 3)
    if not use_peaks:
        return PeakReading(None, pitch_guess)
    chosen = min(fits, key=lambda l: abs(measured_pitch - l["pitch_mm"])) if fits else None
    if chosen is not None and len(peaks) > chosen["n_contacts"]:
        peaks = _brightest_run(peaks, a.profile, int(chosen["n_contacts"]))
    return PeakReading(Placement(peaks, "peaks", measured_pitch, chosen), pitch_guess)


def _brightest_run(pos: np.ndarray, profile: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` consecutive positions whose profile values sum highest."""
    vals = np.interp(pos, np.arange(len(profile)), profile)
    start = max(range(len(pos) - n + 1), key=lambda s: vals[s:s + n].sum())
    return pos[start:start + n]


def saturated_dips(a: LabelAnalysis, placed: Placement, info: dict[str, Any]) -> Placement:
    """A comb of separate contacts replaced by the points midway between the profile's dips,
    where they place at least 3/4 of the layout's contacts (method "dips")."""
    if not (a.cal.saturated_dips and placed.layout is not None and placed.pitch_mm >= a.cal.separate_pitch_mm):
        return placed
    n = int(placed.layout["n_contacts"])
    mid = dips(a.profile, a.step_mm, placed.pitch_mm, n, a.bloom_mm)
    if len(mid) < 0.75 * n:
        return placed
    info["n_dips"] = int(len(mid))
    return Placement(mid, "dips", placed.pitch_mm, placed.layout)


