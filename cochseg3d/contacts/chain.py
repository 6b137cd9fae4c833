"""Contacts in the order they lie along the array, including those off the centreline.

Contacts on the centreline are sorted by where they lie along it. A contact well off it (a blob
beyond the centreline's apical end, which the network's label cut short) has its nearest
centreline sample across the spiral, and sorting by that puts it among contacts of another turn:
every contact after it is then named wrong. Such contacts lie beyond an end of the centreline, so
they extend the chain at its ends instead, each at the end it is nearest, the nearest first (not
wherever the chain grows least: across a 1.5-turn spiral the apex lies nearer the basal turn
than a pitch).
"""

from __future__ import annotations

import numpy as np


def chain_along(points: np.ndarray, curve: np.ndarray, off_mm: float) -> np.ndarray:
    """``points`` (N, 3) in array order: those within ``off_mm`` of ``curve`` (apex -> base) by
    their position along it, the others added at the chain's ends (the nearest to an end first)."""
    from scipy.spatial import cKDTree

    if not len(points):
        return points
    dist, j = cKDTree(curve).query(points)
    on = np.flatnonzero(dist <= off_mm)
    if not len(on):
        on = np.array([int(np.argmin(dist))])
    chain = list(points[on[np.argsort(j[on], kind="stable")]])
    off = np.ones(len(points), bool)
    off[on] = False
    rest = list(points[off])
    while rest:
        d = np.array([[np.linalg.norm(p - chain[0]), np.linalg.norm(p - chain[-1])] for p in rest])
        k, end = np.unravel_index(int(np.argmin(d)), d.shape)
        p = rest.pop(int(k))
        if end == 0:
            chain.insert(0, p)
        else:
            chain.append(p)
    return np.asarray(chain)
