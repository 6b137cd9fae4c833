"""The CT's intensity profile along the centreline: sampling, peaks, dips, bright runs.

Positions along a profile are in samples (``step_mm`` apart), from its apical end.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from cochseg3d.contacts.calibration import Calibration
from cochseg3d.volume import Volume


def extended(curve: np.ndarray, step_mm: float, apical_mm: float, basal_mm: float
             ) -> tuple[np.ndarray, int, int]:
    """The curve (LPS mm) run on straight past both ends, by ``apical_mm`` and ``basal_mm``.

    The band's apical end lies near the label's tip, and a label can end just past the last
    contact (a faint lead left out): the profile is sampled on past them along the ends'
    directions. Returns the extended curve and how many samples were put before and after it.
    """
    n_ext = int(round(apical_mm / step_mm)) if len(curve) > 10 else 0
    t_apex = curve[0] - curve[min(10, len(curve) - 1)]
    t_apex = t_apex / (np.linalg.norm(t_apex) + 1e-12)
    n_base = int(round(basal_mm / step_mm)) if len(curve) > 10 else 0
    t_base = curve[-1] - curve[max(len(curve) - 11, 0)]
    t_base = t_base / (np.linalg.norm(t_base) + 1e-12)
    return np.vstack([curve[0] + t_apex * step_mm * np.arange(n_ext, 0, -1)[:, None], curve,
                      curve[-1] + t_base * step_mm * np.arange(1, n_base + 1)[:, None]]), n_ext, n_base


def sample(volume: Volume, points_lps: np.ndarray, array: np.ndarray | None = None, order: int = 1) -> np.ndarray:
    """Values of ``array`` (default: the volume's; same grid) at LPS points (mm), interpolated."""
    ijk = volume.lps_to_index(points_lps)
    arr = volume.array if array is None else array
    return ndimage.map_coordinates(arr, ijk[:, ::-1].T, order=order, mode="nearest")


def profile_peaks(profile: np.ndarray, step_mm: float, min_sep_mm: float) -> np.ndarray:
    """Sub-sample positions of the profile's contact peaks, at least ``min_sep_mm`` apart.

    Peaks on the leads' lower plateau and stray peaks beyond a big gap are left out: the contacts
    are the brightest thing on the array and form one evenly spaced run.
    """
    from scipy.signal import find_peaks

    base = float(np.percentile(profile, 5))
    span = float(np.percentile(profile, 95)) - base
    idx, _ = find_peaks(profile, distance=max(1, int(min_sep_mm / step_mm)), prominence=0.08 * span)
    if len(idx) >= 2:
        # contacts are the brightest thing on the array: drop ripples on the leads' lower plateau
        heights = profile[idx]
        ref = float(np.median(np.sort(heights)[len(heights) // 2:]))
        idx = idx[heights >= ref - 0.5 * (ref - base)]
    if len(idx) >= 3:
        # the contacts form one evenly spaced run; stray peaks beyond a big gap are not contacts
        gaps = np.diff(idx)
        breaks = np.nonzero(gaps > 1.6 * np.median(gaps))[0]
        runs = np.split(idx, breaks + 1)
        idx = max(runs, key=len)
    # sub-sample peak position from a parabola through the three samples around each peak
    out = []
    for i in idx:
        if 0 < i < len(profile) - 1:
            a, b, c = profile[i - 1], profile[i], profile[i + 1]
            den = a - 2 * b + c
            out.append(i + (0.5 * (a - c) / den if den < 0 else 0.0))
        else:
            out.append(float(i))
    return np.asarray(out)


def dips(profile: np.ndarray, step_mm: float, pitch_mm: float, n: int, bloom_mm: float) -> np.ndarray:
    """Sample positions of separate contacts midway between the profile's dips (the gaps).

    Dips at least 0.6 pitch apart, within the array's nominal length of the apex and between two
    bright stretches (within 0.75 pitch either side, 3/4 of the way up to the array's top); a gap twice the
    dips' spacing holds two contacts (a dip lost between them); the end contacts lie half a spacing
    outside the end dips. Empty where the dips' spacing is not the pitch (within 30 %).
    """
    from scipy.signal import find_peaks

    base = float(np.percentile(profile, 5))
    span = float(np.percentile(profile, 95)) - base
    idx, _ = find_peaks(-profile, distance=max(1, int(0.6 * pitch_mm / step_mm)), prominence=0.04 * span)
    idx = idx[idx * step_mm < (n + 0.5) * pitch_mm + bloom_mm]
    # a gap between contacts has a bright contact on either side (a dip on the lead's wires has not)
    top = float(np.percentile(profile[: int(((n + 0.5) * pitch_mm + bloom_mm) / step_mm)], 95))
    w = max(1, int(0.75 * pitch_mm / step_mm))
    bright = base + 0.75 * (top - base)
    idx = np.array([i for i in idx if profile[max(0, i - w):i].max(initial=-np.inf) >= bright
                    and profile[i + 1:i + 1 + w].max(initial=-np.inf) >= bright], dtype=int)
    if len(idx) < 2:
        return np.zeros(0)
    gaps = np.diff(idx) * step_mm
    spacing = float(np.median(gaps[gaps < 1.5 * pitch_mm])) if np.any(gaps < 1.5 * pitch_mm) else math.nan
    if not abs(spacing - pitch_mm) < 0.3 * pitch_mm:
        return np.zeros(0)
    pos = [idx[0] * step_mm - spacing / 2]
    for a, b in zip(idx[:-1] * step_mm, idx[1:] * step_mm):
        k = max(1, int(round((b - a) / spacing)))
        pos += list(a + (np.arange(k) + 0.5) * (b - a) / k)
    pos.append(idx[-1] * step_mm + spacing / 2)
    pos = np.asarray(pos) / step_mm
    return pos[(pos >= 0) & (pos <= len(profile) - 1)][:n]


def bright_runs(above: np.ndarray, step_mm: float, gap_mm: float) -> list[tuple[int, int]]:
    """(start, stop) sample ranges where ``above`` holds, gaps shorter than ``gap_mm`` bridged."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], above.astype(np.int8), [0]])))
    runs: list[list[int]] = []
    for a, b in zip(edges[::2], edges[1::2]):
        if runs and (a - runs[-1][1]) * step_mm < gap_mm:
            runs[-1][1] = b
        else:
            runs.append([a, b])
    return [(int(a), int(b)) for a, b in runs]


def bright_extent(profile: np.ndarray, step_mm: float, gap_mm: float, cal: Calibration) -> float:
    """Length (mm) of the profile's first long bright stretch, dips shorter than ``gap_mm`` bridged."""
    bottom = float(profile[: max(2, int(round(cal.band_head_mm / step_mm)))].min())
    top = float(np.percentile(profile, 95))
    runs = bright_runs(profile >= bottom + cal.band_level * (top - bottom), step_mm, gap_mm)
    long = [(b - a) * step_mm for a, b in runs if (b - a) * step_mm >= 2.0]
    return long[0] if long else 0.0

