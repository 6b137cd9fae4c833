"""Contacts moved to the intensity centroid around them (a mean shift on the smoothed CT)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cochseg3d.volume import Volume

if TYPE_CHECKING:
    from cochseg3d.contacts.analysis import LabelAnalysis, Placement


def refine_contacts(a: LabelAnalysis, pts: np.ndarray, placed: Placement, *, assumed: bool) -> np.ndarray:
    """The placed contacts (LPS mm) moved to their intensity centroids where that helps.

    Separate contacts (peaks, dips) go ``refine_separate_iterations`` times over (one step from a
    point off the contact stops short of it). A comb of closely spaced contacts is placed better
    than a centroid can (the neighbours' blur pulls each off), so only a comb of pitch
    ``refine_pitch_min_mm`` or more, or of an ``assumed`` layout (which may not be the array's),
    goes once.
    """
    method, pitch = placed.method, placed.pitch_mm
    comb = a.cal.refine_pitch and (pitch >= a.cal.refine_pitch_min_mm or assumed)
    if not len(pts) or not (method in ("peaks", "dips") or comb):
        return pts
    iterations = a.cal.refine_separate_iterations if method != "pitch" else 1
    return refine_to_centroids(a.image, a.smoothed, pts, placed.radius_mm, iterations)


def refine_to_centroids(image: Volume, smoothed: np.ndarray, points_lps: np.ndarray, radius_mm: float,
                        iterations: int = 1) -> np.ndarray:
    """Move each point to the intensity-weighted centroid of the bright voxels within ``radius_mm``
    (``iterations`` times, each from where the last put it)."""
    for _ in range(iterations - 1):
        points_lps = refine_to_centroids(image, smoothed, points_lps, radius_mm)
    out = points_lps.copy()
    sp = np.asarray(image.spacing_mm)
    r_vox = np.ceil(radius_mm / sp).astype(int)
    for n, p in enumerate(points_lps):
        c = np.rint(image.lps_to_index(p)).astype(int)
        lo = np.maximum(c - r_vox, 0)
        hi = np.minimum(c + r_vox + 1, image.size)
        if np.any(hi <= lo):
            continue
        block = smoothed[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
        kk, jj, ii = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo[::-1], hi[::-1])], indexing="ij")
        ijk = np.stack([ii, jj, kk], axis=-1).reshape(-1, 3)
        lps = image.index_to_lps(ijk)
        w = block.reshape(-1).astype(float)
        inside = np.linalg.norm(lps - p, axis=1) <= radius_mm
        if inside.sum() < 2:
            continue
        w = np.where(inside, w, -np.inf)
        floor = np.percentile(w[inside], 50)
        w = np.clip(w - floor, 0, None)
        if w.sum() > 0:
            out[n] = (lps * w[:, None]).sum(axis=0) / w.sum()
    return out
