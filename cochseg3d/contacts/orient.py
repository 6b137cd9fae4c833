"""Which end of the found contacts is the apex: the one inside the spiral.

The centreline's direction comes from the label's bright run and its tracking; where the label
breaks (an apex the network missed, blobs added later) it can run from the base, and every contact
is then named from the wrong end. The contacts themselves say which end is inner.
"""

from __future__ import annotations

import numpy as np

#: fewest contacts whose ends can be told apart this way
MIN_CONTACTS = 4


def base_first(pts: np.ndarray, ratio: float) -> bool:
    """True when the chain ``pts`` (N, 3) runs base -> apex: its last contact lies nearer the
    chain's centroid than ``ratio`` times its first's distance."""
    if ratio <= 0 or len(pts) < MIN_CONTACTS:
        return False
    c = pts.mean(axis=0)
    return bool(np.linalg.norm(pts[-1] - c) < ratio * np.linalg.norm(pts[0] - c))
