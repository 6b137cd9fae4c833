"""Separate contacts as the CT's bright blobs in the label: detection, alike blobs, completion.

Separate contacts show as blobs near the CT's top grey value; merged ones as one long band.
Where the centreline's peaks miss contacts (it cuts across a deep insertion's touching turns or
stops short of the apex) or give none, the blobs place them. Points are LPS mm, volumes mm^3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from cochseg3d.contacts.chain import chain_along
from cochseg3d.contacts.refine import refine_to_centroids
from cochseg3d.volume import Volume

if TYPE_CHECKING:
    from cochseg3d.contacts.analysis import LabelAnalysis, Placement


def complete_from_blobs(a: LabelAnalysis, pts: np.ndarray, placed: Placement, *, refine: bool,
                        info: dict[str, Any]) -> tuple[np.ndarray, str]:
    """The contacts, with separate ones the centreline missed taken from the label's blobs.

    A comb of separate contacts (the peaks failed) becomes the blobs themselves where about the
    expected count of them look alike; dips stay unless the blobs find about as many (touching
    blobs merge under heavy bloom; dips along a centreline cutting across touching turns miss
    those contacts). Peaks and dips gain the alike blobs away from every contact found. Blob
    contacts go to their intensity centroid like the peaks (a blob's thresholded core is a little
    off it: calibration set 0.157 -> 0.155 mm). Returns the points (apex -> base) and the method.
    """
    method, pitch = placed.method, placed.pitch_mm
    separate = method in ("peaks", "dips") or pitch >= a.cal.separate_pitch_mm
    # farther off the centreline than half a pitch: placed by the chain, not by the nearest centreline sample
    off_mm = pitch / 2 if np.isfinite(pitch) and a.cal.chain_order else np.inf
    if not (a.cal.blob_completion and len(pts) >= 3 and separate):
        return pts, method
    blobs = a.blobs()
    expected = int(placed.layout["n_contacts"]) if placed.layout is not None else a.cal.max_separate_contacts
    iterations = a.cal.refine_separate_iterations
    if method in ("pitch", "dips") and len(blobs[0]):
        chosen = contact_blobs(blobs, pitch, expected)
        if len(chosen) >= 0.75 * expected and (method == "pitch" or len(chosen) >= len(pts) - 2):
            info["from_blobs"] = int(len(chosen))
            if refine:
                chosen = refine_to_centroids(a.image, a.smoothed, chosen, placed.radius_mm, iterations)
            pts, method = chain_along(chosen, a.curve, off_mm), "blobs"
    if method in ("peaks", "dips"):
        extra = missing_blobs(blobs, pts, pitch, expected - len(pts))
        if len(extra):
            info["added_from_blobs"] = int(len(extra))
            if refine:
                extra = refine_to_centroids(a.image, a.smoothed, extra, placed.radius_mm, iterations)
            pts = chain_along(np.vstack([pts, extra]), a.curve, off_mm)
    return pts, method


def find_blobs(image: Volume, smoothed: np.ndarray, m: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Separate bright blobs of the label: centroids (LPS mm) and volumes (mm^3).

    Separate contacts show as blobs of the CT near its top grey value (``level`` of the way
    from the label's 10th to its 99.5th percentile); merged ones as one long band.
    """
    vals = smoothed[m]
    if vals.size < 10:
        return np.zeros((0, 3)), np.zeros(0)
    lo, top = np.percentile(vals, [10, 99.5])
    hi = (smoothed >= lo + level * (top - lo)) & ndimage.binary_dilation(m, iterations=1)
    lab, n = ndimage.label(hi)
    if n == 0:
        return np.zeros((0, 3)), np.zeros(0)
    idx = np.arange(1, n + 1)
    cents = np.array(ndimage.center_of_mass(np.where(hi, smoothed - lo, 0), lab, idx))
    vol = ndimage.sum(hi, lab, idx) * float(np.prod(image.spacing_mm))
    return image.index_to_lps(cents[:, ::-1]), np.asarray(vol, dtype=float)


def missing_blobs(blobs: tuple[np.ndarray, np.ndarray], found: np.ndarray, pitch_mm: float, room: int) -> np.ndarray:
    """Up to ``room`` contacts the centreline missed, from the label's blobs (:func:`find_blobs`).

    Where the centreline cuts across a deep insertion's touching turns (or stops short of the
    apex) the peaks along it miss some contacts. A blob at least ``0.6 * pitch`` from every contact
    found and about as big as the blobs on found contacts (0.4-2.5 times their median) is one of
    those; closest in size first, never two within ``0.6 * pitch`` of each other.
    """
    from scipy.spatial import cKDTree

    lps, vol = blobs
    if room <= 0 or len(lps) < 2 or len(found) < 3:
        return np.zeros((0, 3))
    d, _ = cKDTree(found).query(lps)
    on_found = d <= 0.5 * pitch_mm
    if on_found.sum() < 3:
        return np.zeros((0, 3))
    return alike_blobs(blobs, float(np.median(vol[on_found])), pitch_mm, room, d >= 0.6 * pitch_mm)


def contact_blobs(blobs: tuple[np.ndarray, np.ndarray], pitch_mm: float, n: int) -> np.ndarray:
    """Up to ``n`` blobs that look like one array's contacts: sizes within 0.4-2.5 times the median of
    the ``n`` largest, none within ``0.6 * pitch`` of another (closest in size first)."""
    if len(blobs[0]) == 0:
        return np.zeros((0, 3))
    return alike_blobs(blobs, float(np.median(np.sort(blobs[1])[::-1][:n])), pitch_mm, n)


def alike_blobs(blobs: tuple[np.ndarray, np.ndarray], ref_mm3: float, pitch_mm: float, n: int,
                 allowed: np.ndarray | None = None) -> np.ndarray:
    """Up to ``n`` of the ``allowed`` blobs sized 0.4-2.5 times ``ref_mm3``, closest in size first,
    never two within ``0.6 * pitch`` of each other (LPS mm)."""
    lps, vol = blobs
    ok = (vol >= 0.4 * ref_mm3) & (vol <= 2.5 * ref_mm3) & (True if allowed is None else allowed)
    cand = np.nonzero(ok)[0]
    cand = cand[np.argsort(np.abs(np.log(vol[cand] / ref_mm3)))]
    keep: list[int] = []
    for c in cand:
        if len(keep) >= n:
            break
        if all(np.linalg.norm(lps[c] - lps[k]) >= 0.6 * pitch_mm for k in keep):
            keep.append(int(c))
    return lps[keep] if keep else np.zeros((0, 3))
