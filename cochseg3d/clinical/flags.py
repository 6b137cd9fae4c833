"""Flags on one array's contacts (apex -> base): tip fold-over, a kink, contacts out of order.

Each flag is ``{"value": bool, "evidence": str}``. With the angles (deg from the round window)
the flags read the angular sequence, which falls monotonically from the tip to the base on an
array lying as intended; without them (no cochlear frame) only the geometry between neighbours.
"""

from __future__ import annotations

import numpy as np

FOLD_BACK_DEG = 15.0  # the tip runs back by more than this from the deepest contact
INVERSION_DEG = 10.0  # a more basal contact deeper than its apical neighbour by more than this
KINK_EXCESS_DEG = 45.0  # bend between neighbours beyond what the spiral's curvature explains
TOUCH_FRACTION = 0.6  # non-neighbours nearer than this many pitches: the array lies on itself


def _flag(value: bool, evidence: str) -> dict:
    return {"value": bool(value), "evidence": evidence}


def _reversed(ang: np.ndarray) -> bool:
    d = np.diff(ang)
    return len(d) > 0 and np.mean(d > 2.0) > 0.7


def _touching(pts: np.ndarray, pitch: float) -> tuple[int, int] | None:
    """A pair of contacts two or more places apart that lie closer than a neighbour pitch allows."""
    d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    idx = np.arange(len(pts))
    far = np.abs(idx[:, None] - idx[None]) >= 2
    close = far & (d < TOUCH_FRACTION * pitch)
    if not close.any():
        return None
    i, j = np.argwhere(close)[0]
    return int(i), int(j)


def fold_over(pts, names, ang, pitch) -> dict:
    if ang is not None and not _reversed(ang):
        m = int(np.argmax(ang))
        back = float(ang[m] - ang[0])
        if m > 0 and back > FOLD_BACK_DEG:
            return _flag(True, f"{names[0]}..{names[m - 1]} lie {back:.0f} deg short of {names[m]} "
                               f"({ang[m]:.0f} deg): the tip runs back towards the base")
    pair = None if ang is not None and _reversed(ang) else _touching(pts[: max(len(pts) // 2, 2)], pitch)
    if pair is not None:
        i, j = pair
        return _flag(True, f"{names[i]} and {names[j]} lie "
                           f"{np.linalg.norm(pts[i] - pts[j]):.2f} mm apart, under {TOUCH_FRACTION} pitch: "
                           f"the tip lies back on the array")
    if ang is None:
        return _flag(False, "no contacts of the apical half lie back on the array (no angles: frame not estimated)")
    return _flag(False, f"the angle falls from the tip ({ang[0]:.0f} deg) without running back")


def _fold_index(pts, ang, pitch) -> int:
    """Index of the first contact basal of a flagged fold: the deepest one, or the later of the touching pair."""
    if ang is not None and not _reversed(ang) and ang.max() - ang[0] > FOLD_BACK_DEG:
        return int(np.argmax(ang))
    pair = _touching(pts[: max(len(pts) // 2, 2)], pitch)
    return max(pair) if pair is not None else 0


def out_of_order(pts, names, ang, pitch, fold_at: int = 0) -> dict:
    if ang is not None:
        if _reversed(ang):
            return _flag(True, f"the angle rises from {names[0]} ({ang[0]:.0f} deg) to {names[-1]} "
                               f"({ang[-1]:.0f} deg): the list runs base -> apex")
        m = int(np.argmax(ang))
        d = np.diff(ang[m:])
        bad = np.flatnonzero(d > INVERSION_DEG)
        if len(bad):
            i = m + int(bad[0])
            return _flag(True, f"{names[i + 1]} ({ang[i + 1]:.0f} deg) lies deeper than {names[i]} "
                               f"({ang[i]:.0f} deg), which comes before it")
    g = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    skip = np.linalg.norm(pts[2:] - pts[:-2], axis=1)
    bad = np.flatnonzero(skip < 0.8 * g[:-1])
    bad = bad[bad >= fold_at]  # a fold-over's arms lie side by side, in order
    if len(bad):
        i = int(bad[0])
        return _flag(True, f"{names[i]} lies nearer {names[i + 2]} ({skip[i]:.2f} mm) than its neighbour "
                           f"{names[i + 1]} ({g[i]:.2f} mm)")
    return _flag(False, "angles fall from the tip to the base and every contact is nearest its neighbours"
                 if ang is not None else "every contact is nearest its neighbours (no angles: frame not estimated)")


def kink(pts, names, ang, rho, pitch, folded: bool) -> dict:
    if len(pts) < 3:
        return _flag(False, "fewer than 3 contacts")
    a, b = pts[1:-1] - pts[:-2], pts[2:] - pts[1:-1]
    cosang = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    turn = np.degrees(np.arccos(np.clip(cosang, -1, 1)))
    expected = np.degrees(pitch / np.maximum(rho[1:-1], 0.5)) if rho is not None else np.zeros_like(turn)
    excess = turn - expected
    i = int(np.argmax(excess))
    if excess[i] > KINK_EXCESS_DEG and not folded:
        return _flag(True, f"the array bends {turn[i]:.0f} deg at {names[i + 1]}, "
                           f"{excess[i]:.0f} deg more than the spiral's curvature")
    note = " (the fold-over's bend)" if folded and excess[i] > KINK_EXCESS_DEG else ""
    return _flag(False, f"largest bend {turn[i]:.0f} deg at {names[i + 1]}, {excess[i]:.0f} deg over the "
                        f"spiral's curvature{note}")


def array_flags(pts: np.ndarray, names: list[str], ang: np.ndarray | None, rho: np.ndarray | None = None) -> dict:
    """fold_over, kink and out_of_order for contacts ``pts`` (apex -> base, LPS mm)."""
    pts = np.asarray(pts, float)
    if len(pts) < 2:
        none = _flag(False, "fewer than 2 contacts")
        return {"fold_over": none, "kink": none, "out_of_order": none}
    pitch = float(np.median(np.linalg.norm(np.diff(pts, axis=0), axis=1)))
    fo = fold_over(pts, names, ang, pitch)
    return {"fold_over": fo, "kink": kink(pts, names, ang, rho, pitch, fo["value"]),
            "out_of_order": out_of_order(pts, names, ang, pitch,
                                         _fold_index(pts, ang, pitch) if fo["value"] else 0)}
