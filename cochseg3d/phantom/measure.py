"""Measurements taken back from a phantom's volumes (used by the realism tests and the benchmark).

All positions are LPS mm; volumes are sampled with nearest neighbour (masks) or linearly (images).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cochseg3d.volume import Volume


def sample(volume: Volume, points_lps: np.ndarray, *, order: int = 0, cval: float = 0.0) -> np.ndarray:
    """Values of ``volume`` at LPS points ``(..., 3)`` (``order`` 0 nearest, 1 linear)."""
    pts = np.asarray(points_lps, float)
    kji = volume.lps_to_index(pts.reshape(-1, 3))[:, ::-1].T
    vals = ndimage.map_coordinates(volume.array.astype(np.float32), kji, order=order, mode="constant", cval=cval)
    return vals.reshape(pts.shape[:-1])


def component_centroids(mask: Volume, *, min_voxels: int = 1) -> np.ndarray:
    """LPS centroids (N, 3) of the 26-connected components of ``mask``."""
    lab, n = ndimage.label(mask.array > 0, structure=np.ones((3, 3, 3)))
    if n == 0:
        return np.zeros((0, 3))
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, idx)
    cents = np.array(ndimage.center_of_mass(mask.array > 0, lab, idx))  # (k, j, i)
    cents = cents[sizes >= min_voxels]
    return mask.index_to_lps(cents[:, ::-1])


def tangents(points: np.ndarray) -> np.ndarray:
    """Unit tangents of an ordered polyline (central differences)."""
    t = np.gradient(np.asarray(points, float), axis=0)
    return t / np.linalg.norm(t, axis=1, keepdims=True)


def bloom_diameters(label: Volume, centers: np.ndarray, tangent: np.ndarray, *, reach_mm: float = 3.0,
                    step_mm: float = 0.02) -> np.ndarray:
    """Extent (mm) of ``label`` through each centre, perpendicular to the array, mean of two directions."""
    out = []
    s = np.arange(-reach_mm, reach_mm + step_mm / 2, step_mm)
    for c, t in zip(np.asarray(centers, float), np.asarray(tangent, float)):
        a = np.cross(t, [0.0, 0.0, 1.0] if abs(t[2]) < 0.9 else [1.0, 0.0, 0.0])
        a /= np.linalg.norm(a)
        b = np.cross(t, a)
        widths = []
        for d in (a, b):
            v = sample(label, c + s[:, None] * d) > 0.5
            i0 = len(s) // 2
            if not v[i0]:
                widths.append(0.0)
                continue
            lo = i0
            while lo > 0 and v[lo - 1]:
                lo -= 1
            hi = i0
            while hi < len(s) - 1 and v[hi + 1]:
                hi += 1
            widths.append((hi - lo + 1) * step_mm)
        out.append(float(np.mean(widths)))
    return np.asarray(out)


def cumulative_angles_deg(points_apex_to_base: np.ndarray, center: np.ndarray, axes: np.ndarray,
                          sense: float) -> np.ndarray:
    """Angle (deg) of each point about the modiolar axis from the round window (e1), unwrapped from the base."""
    q = (np.asarray(points_apex_to_base, float) - center) @ np.asarray(axes).T
    ang = np.mod(sense * np.arctan2(q[:, 1], q[:, 0]), 2 * np.pi)[::-1]
    ang = np.unwrap(ang)
    if ang[0] > np.radians(300):
        ang -= 2 * np.pi
    return np.degrees(ang[::-1])
