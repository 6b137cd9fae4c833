"""Electrode contact centres in patient mm from an electrode label and its CT image.

Centreline: the contacts are the brightest stretch of the label's skeleton; its curled end (the
array curls into the spiral; the lead runs off nearly straight) is the apex. From there the array
is tracked along the label's distance ridge toward the base and on into the lead, smoothed by a
spline and sampled every 0.05 mm. Tracking from the apex keeps a lead that passes close to the
basal turn (the label joins them there) from flipping or cutting the array.

Contacts: the CT intensity along the centreline is a profile.
- Separate contacts (MED-EL; others at fine voxels) are its peaks, each moved to its intensity
  centroid. Contacts the centreline missed (it can cut across a deep insertion's touching turns
  or stop short of the apex) are taken from the label's saturated blobs.
- Merged contacts (Cochlear, AB at CBCT resolution) form one saturated band with no ripple left to
  phase a comb on. The array's contact count places them evenly between the band's two ends, each
  end a calibrated distance from the end contact (scripts/calibrate_contacts.py), so the spacing
  also absorbs the centreline's few per cent of length error.
Without a named electrode, separate peaks far behind the apical tip (lead wires) are not taken as
contacts, a few widely spaced peaks pick MED-EL's layouts, and a merged band gets Cochlear's 22.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from cochseg3d.volume import Volume

log = logging.getLogger(__name__)

#: fallback layouts (contact count, pitch mm, apical tip -> first contact centre mm) used when the
#: catalogue (cochseg3d.electrodes) is not importable
_FALLBACK_LAYOUTS: dict[str, list[dict[str, float]]] = {
    "MED-EL": [{"n_contacts": 12, "pitch_mm": 2.1, "tip_to_first_mm": 0.6}],
    "Cochlear": [{"n_contacts": 22, "pitch_mm": p, "tip_to_first_mm": 0.3} for p in (0.67, 0.72, 0.9)],
    "AB": [{"n_contacts": 16, "pitch_mm": p, "tip_to_first_mm": 0.4} for p in (1.0, 1.1, 1.3)],
}


def electrode_layouts(electrode: str) -> list[dict[str, Any]]:
    """Contact layouts of a vendor ("MED-EL", "Cochlear", "AB") or of one catalogue model.

    Each layout: ``n_contacts``, ``pitch_mm``, ``tip_to_first_mm`` (apical tip to the first contact's
    centre) and ``model``. The figures come from the electrode catalogue of the phantom
    (:mod:`cochseg3d.electrodes`, which cites its sources).

    Raises:
        ValueError: unknown vendor / model.
    """
    try:
        from cochseg3d import electrodes as cat
    except ImportError:  # the catalogue ships with the phantom; keep working without it
        cat = None
    if cat is not None:
        try:
            models = [cat.find_model(electrode)]
        except ValueError:
            models = cat.models_of(electrode)
        return [{"n_contacts": m.n_contacts, "pitch_mm": m.pitch_mm, "tip_to_first_mm": m.tip_offset_mm,
                 "model": m.model, "vendor": m.vendor} for m in models]
    key = {k.lower().replace("-", ""): k for k in _FALLBACK_LAYOUTS}.get(electrode.lower().replace("-", ""))
    if key is None:
        raise ValueError(f"unknown electrode {electrode!r}; use one of {sorted(_FALLBACK_LAYOUTS)}")
    return [{**d, "model": key, "vendor": key} for d in _FALLBACK_LAYOUTS[key]]


def _all_layouts() -> list[dict[str, Any]]:
    return [l for v in _FALLBACK_LAYOUTS for l in electrode_layouts(v)]


def electrode_spec(electrode: str) -> dict[str, Any]:
    """Keyword arguments of :func:`find_contacts` for a vendor or model name (validated)."""
    electrode_layouts(electrode)
    return {"electrode": electrode}


#: how far (fraction of a pitch) the comb may shift from its nominal place to follow the profile
COMB_WINDOW = 0.5
CURVE_SMOOTH_MM = 0.3
REFINE_PITCH = True
#: separate contacts go to their intensity centroid this many times over (a mean shift: one step
#: from a point off the contact stops short of it; calibration phantoms MED-EL 0.113 -> 0.106 mm).
#: Merged contacts once: there the neighbours' blur pulls each further off with every step
REFINE_SEPARATE_ITERATIONS = 3
#: smallest comb pitch (mm) whose contacts are moved to their intensity centroid
REFINE_PITCH_MIN_MM = 0.95
#: skeleton points at least this far (fraction) from the skeleton's dim to its bright level are on
#: the contacts
BRIGHT_FRACTION = 0.75
#: place a merged array's first contact from where its band begins (else: from the label's tip)
ANCHOR_TO_BAND = True
#: how far (mm) the profile is sampled on past the label's apical tip, and how much of that sets
#: the band's low level
APICAL_EXTENSION_MM = 1.5
#: and past its basal end: where the label stops just past the last contact (a faint lead left
#: out, common with AB) the band's end is otherwise never seen
BASAL_EXTENSION_MM = 1.5
BAND_HEAD_MM = 1.0
#: fraction of the way from the tip's grey value to the band's plateau that marks its start
BAND_LEVEL = 0.9
#: band start -> first contact plus last contact -> band end, about (mm): where the end is expected
BAND_ENDS_MM = 1.0
#: the band-end distances below hold at a bloom (the label's half-width at the apex) of
#: ``BLOOM_REF_MM``; they grow by these slopes with it (a blurrier scan's band reaches further past
#: its end contacts). Pooled over models on the calibration phantoms (split-half, out of sample:
#: 0.148 -> 0.146 mm)
BLOOM_SLOPE_FIRST = 0.57
BLOOM_SLOPE_LAST = 0.191
BLOOM_REF_MM = 0.671
#: a dip below the band's level shorter than this (mm) is a gap between contacts, inside the band
BAND_GAP_MM = 0.5
#: band start -> first contact centre and last contact centre -> band end, along the array (mm),
#: by model, else vendor, at the reference bloom: medians over 240 calibration phantoms (seeds
#: 800000-800239, never used for training or the held-out tests) segmented by the shipped model, from
#: scripts/calibrate_contacts.py; per model where it had 4 or more cases with a measurable end
#: (median absolute deviation 0.05-0.17 mm; a few cases whose centreline misses an end contact lie
#: far off, hence medians). The band runs on past the last contact along its wires.
#: They depend on the scanner's blur and the contacts' length: other scanners may want their own.
#: Of MED-EL's arrays only FLEX20 (1.4 mm pitch) merges; the others show separately (peaks, blobs).
BAND_TO_FIRST_MM = {"AB": 0.484, "CI612 Contour Advance": 0.364, "CI622 Slim Straight": 0.429,
                    "CI632 Slim Modiolar": 0.324, "Cochlear": 0.396, "FLEX20": 0.504, "HiFocus 1J": 0.507,
                    "HiFocus Mid-Scala": 0.448, "HiFocus SlimJ": 0.469, "MED-EL": 0.504, "default": 0.446}
BAND_TO_LAST_MM = {"AB": 0.596, "CI612 Contour Advance": 0.575, "CI622 Slim Straight": 0.491,
                   "CI632 Slim Modiolar": 0.555, "Cochlear": 0.55, "FLEX20": 0.557, "HiFocus 1J": 0.685,
                   "HiFocus Mid-Scala": 0.454, "HiFocus SlimJ": 0.618, "MED-EL": 0.557, "default": 0.575}
#: how far (fraction) the array's length along the centreline may differ from the datasheet's
PITCH_SCALE_RANGE = 0.08
#: comb phase search (fraction of a pitch) around the band-anchored place: none, as saturation
#: leaves no ripple to phase on (searching it made the held-out error worse)
ANCHORED_COMB_WINDOW = 0.0
#: without a named electrode: how close (fraction) a layout's length must match the band's. As
#: loose as the pitch may stretch: calling a Cochlear array AB loses 6 of its 22 contacts (recall
#: 0.73), the other way round costs ~0.02 mm of error (15 truth-label phantoms: recall 0.93 at 0.02,
#: 1.00 at 0.08; calibration phantoms: error 0.173 vs 0.192 mm)
BLIND_LENGTH_FIT = PITCH_SCALE_RANGE
#: add separate contacts the centreline missed from the label's saturated blobs
BLOB_COMPLETION = True
#: separate contacts whose saturated tops give no peaks are placed between the profile's dips
#: (held-out FLEX24 case 0.234 -> 0.132 mm) unless the blobs find about as many
SATURATED_DIPS = True
#: no electrode named: a layout of 1 mm pitch or more (AB, MED-EL) is taken from the gaps between
#: contacts where their spacings average within this fraction of its pitch and the bright stretch
#: is about its length (calibration phantoms, blind: 0.172 -> 0.168 mm, 11 cases better, 2 worse)
BLIND_DIPS = 0.1
#: no electrode named, no peaks nor gaps: about 12 alike blobs a MED-EL pitch apart name MED-EL
#: before the band's length is tried (calibration phantoms: 2 arrays found, recall 0.0 / 0.42 -> 1.0)
BLIND_BLOBS = True
#: how far (mm) the label's centreline runs inside the array's spiral, by model: the modiolar wall
#: beside a perimodiolar array blooms into the label (medians over the calibration phantoms, where
#: 0.02 mm or more; spread 0.01-0.02 mm; negative: outside). The centreline is moved out by it before
#: contacts are placed
RADIAL_OFFSET_MM = {"CI612 Contour Advance": 0.081, "CI632 Slim Modiolar": 0.066, "FLEX20": -0.022,
                    "HiFocus Mid-Scala": 0.04}
#: pitch (mm) from which contacts show separately at CBCT resolution: such a comb is checked
#: against the blobs and phased on its ripple; closer ones merge into a band placed by its ends
SEPARATE_PITCH_MM = 1.5
#: most contacts a blind search adds up to (MED-EL's 12 separate contacts)
MAX_SEPARATE_CONTACTS = 12
#: blob threshold: fraction of the way from the label's 10th to its 99.5th grey-value percentile
BLOB_LEVEL = 0.9
#: arc length (mm) over which an end's curl is measured (:func:`_straightness`)
CURL_MM = 6.0
#: the centreline's apical end is extended while inside the label, turning as its last ``TURN_MM``
#: turned: a straight extension cut across the tight apical curl of perimodiolar arrays (apex
#: 0.3-0.8 mm off; calibration phantoms 0.155 -> 0.151 mm). At most ``APEX_EXTEND_MM``
APEX_TURN = True
#: the skeleton's bright run stops short of the apical tip (the bloom fills the curl): the
#: centreline is tracked on past it by up to ``APEX_TRACK_MM`` before the extension (calibration
#: phantoms, calibrated on one half, measured on the other: 0.156 -> 0.149 mm; longer tracks
#: overshoot tight apical curls)
APEX_TRACK = True
APEX_TRACK_MM = 1.0
TURN_MM = 1.5
APEX_EXTEND_MM = 2.0

_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


@dataclass
class Contacts:
    """Contacts found on one electrode array.

    Attributes:
        lps_mm: (N, 3) contact centres in LPS mm, apex -> base.
        method: "peaks" (separate intensity peaks), "pitch" (comb of the known pitch) or "blobs"
            (separate contacts as the CT's bright blobs, where the centreline's peaks failed).
        centreline_lps_mm: (M, 3) the array's centreline, apex -> base, every ``step_mm``.
        profile: CT intensity along the centreline (HU), same length.
        pitch_mm: contact spacing used or measured (mm).
        info: extra diagnostics (electrode assumed, peak count, array length mm ...).
    """

    lps_mm: np.ndarray
    method: str
    centreline_lps_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    profile: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pitch_mm: float = math.nan
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ras_mm(self) -> np.ndarray:
        return self.lps_mm * _LPS_TO_RAS

    def to_json(self, **extra: Any) -> dict[str, Any]:
        """The contacts.json record (LPS and RAS mm, apex -> base)."""
        return {
            **extra,
            "n_contacts": int(len(self.lps_mm)),
            "order": "apex_to_base",
            "method": self.method,
            "pitch_mm": None if math.isnan(self.pitch_mm) else round(float(self.pitch_mm), 4),
            "contacts_lps_mm": np.round(self.lps_mm, 4).tolist(),
            "contacts_ras_mm": np.round(self.ras_mm, 4).tolist(),
            "array_length_mm": self.info.get("length_mm"),
            "electrode_assumed": self.info.get("electrode"),
            "model_assumed": self.info.get("model"),
        }


# --- geometry helpers ---------------------------------------------------------------------------
def _crop(volume: Volume, box: tuple[slice, ...]) -> Volume:
    """Sub-volume ``volume.array[box]`` with its origin moved so every voxel keeps its position."""
    start = np.array([s.start for s in box][::-1], dtype=float)  # (i, j, k)
    origin = volume.index_to_lps(start)
    return Volume(volume.array[box], volume.spacing_mm, tuple(origin), volume.direction.copy(), dict(volume.meta))


def _bbox(mask: np.ndarray, margin: tuple[int, int, int]) -> tuple[slice, ...]:
    idx = np.nonzero(mask)
    return tuple(slice(max(0, int(i.min()) - m), min(n, int(i.max()) + m + 1))
                 for i, m, n in zip(idx, margin, mask.shape))


def _longest_path(points_mm: np.ndarray, link_mm: float, *, max_pieces: int = 30) -> np.ndarray:
    """Indices of the longest shortest path through points linked within ``link_mm``.

    Disconnected pieces (an array broken by a label gap) are joined by their closest pair of points
    (a minimum spanning tree over the pieces).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components, dijkstra, minimum_spanning_tree
    from scipy.spatial import cKDTree

    n = len(points_mm)
    if n < 2:
        return np.arange(n)
    tree = cKDTree(points_mm)
    pairs = tree.query_pairs(link_mm, output_type="ndarray")
    w = np.linalg.norm(points_mm[pairs[:, 0]] - points_mm[pairs[:, 1]], axis=1) if len(pairs) else np.zeros(0)
    rows, cols, vals = list(pairs[:, 0]), list(pairs[:, 1]), list(w)
    graph = coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
    n_comp, comp = connected_components(graph, directed=False)
    if n_comp > max_pieces:
        # a label in many pieces (a poor segmentation): bridge only the largest ones
        big = np.argsort(np.bincount(comp))[::-1][:max_pieces]
        keep = np.isin(comp, big)
        return np.nonzero(keep)[0][_longest_path(points_mm[keep], link_mm, max_pieces=max_pieces)]
    if n_comp > 1:
        # bridge the pieces: closest pair between every two pieces, then their spanning tree
        trees = [cKDTree(points_mm[comp == c]) for c in range(n_comp)]
        members = [np.nonzero(comp == c)[0] for c in range(n_comp)]
        dist = np.zeros((n_comp, n_comp))
        link = {}
        for a in range(n_comp):
            for b in range(a + 1, n_comp):
                d, j = trees[b].query(points_mm[members[a]])
                i = int(np.argmin(d))
                dist[a, b] = max(float(d[i]), 1e-6)
                link[(a, b)] = (members[a][i], members[b][int(j[i])], float(d[i]))
        mst = minimum_spanning_tree(dist).tocoo()
        for a, b in zip(mst.row, mst.col):
            i, j, d = link[(min(a, b), max(a, b))]
            rows.append(i)
            cols.append(j)
            vals.append(max(d, 1e-6))
        graph = coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
    d0 = dijkstra(graph, directed=False, indices=0)
    a = int(np.nanargmax(np.where(np.isfinite(d0), d0, -1)))
    da, pred = dijkstra(graph, directed=False, indices=a, return_predecessors=True)
    b = int(np.nanargmax(np.where(np.isfinite(da), da, -1)))
    path = [b]
    while path[-1] != a and pred[path[-1]] >= 0:
        path.append(int(pred[path[-1]]))
    return np.array(path[::-1])


def _resample_curve(points_mm: np.ndarray, step_mm: float, smooth_mm: float) -> np.ndarray:
    """A smoothing spline through ordered points, sampled every ``step_mm`` of arc length."""
    from scipy.interpolate import splev, splprep

    # thin the points to about one per smooth_mm so the spline follows the trend, not voxel steps
    seg = np.linalg.norm(np.diff(points_mm, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    if arc[-1] < 2 * step_mm:
        return points_mm[[0, -1]] if len(points_mm) > 1 else points_mm
    keep = np.unique(np.searchsorted(arc, np.arange(0.0, arc[-1], smooth_mm)))
    keep = np.unique(np.concatenate([keep, [len(points_mm) - 1]]))
    pts = points_mm[keep]
    k = min(3, len(pts) - 1)
    if k < 1:
        return pts
    u = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    u = u / u[-1]
    tck, _ = splprep(pts.T, u=u, k=k, s=len(pts) * (0.25 * smooth_mm) ** 2)
    dense = np.array(splev(np.linspace(0, 1, max(50, int(arc[-1] / step_mm) * 4)), tck)).T
    darc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    s = np.arange(0.0, darc[-1] + 1e-9, step_mm)
    return np.stack([np.interp(s, darc, dense[:, c]) for c in range(3)], axis=1)


def _extend_to_tip(curve: np.ndarray, inside, step_mm: float, max_mm: float, *, turn: bool = False) -> np.ndarray:
    """Extend the curve's last point while still inside the label: along its end tangent, or
    (``turn``) turning as its last ``TURN_MM`` turned (an apex curls tighter still)."""
    if len(curve) < 3:
        return curve
    back = min(len(curve) - 1, max(2, int(0.5 / step_mm)))
    t = curve[-1] - curve[-1 - back]
    t = t / (np.linalg.norm(t) + 1e-12)
    axis, rate = None, 0.0
    far = int(TURN_MM / step_mm)
    if turn and len(curve) > far + back:
        t0 = curve[-1 - far] - curve[-1 - far - back]
        t0 = t0 / (np.linalg.norm(t0) + 1e-12)
        k = np.cross(t0, t)
        if np.linalg.norm(k) > 1e-6:
            axis = k / np.linalg.norm(k)
            rate = float(np.arccos(np.clip(t0 @ t, -1, 1))) / (far * step_mm)
    extra = []
    p = curve[-1]
    for _ in range(int(max_mm / step_mm)):
        if axis is not None:
            a = rate * step_mm
            t = t * np.cos(a) + np.cross(axis, t) * np.sin(a) + axis * (axis @ t) * (1 - np.cos(a))
        p = p + step_mm * t
        if not inside(p):
            break
        extra.append(p)
    return np.vstack([curve, extra]) if extra else curve


def _sample(volume: Volume, points_lps: np.ndarray, array: np.ndarray | None = None, order: int = 1) -> np.ndarray:
    ijk = volume.lps_to_index(points_lps)
    arr = volume.array if array is None else array
    return ndimage.map_coordinates(arr, ijk[:, ::-1].T, order=order, mode="nearest")


# --- contact placement --------------------------------------------------------------------------
def _peaks(profile: np.ndarray, step_mm: float, min_sep_mm: float) -> np.ndarray:
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


def _dips(profile: np.ndarray, step_mm: float, pitch_mm: float, n: int, bloom_mm: float) -> np.ndarray:
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


def _layout_from_blobs(blobs: tuple[np.ndarray, np.ndarray]) -> dict[str, Any] | None:
    """A separate-contact (MED-EL) layout where about its count of alike blobs show, else None."""
    from scipy.spatial import cKDTree

    for layout in sorted(_all_layouts(), key=lambda l: -float(l["pitch_mm"])):
        n, pitch = int(layout["n_contacts"]), float(layout["pitch_mm"])
        if pitch < SEPARATE_PITCH_MM or not len(blobs[0]):
            continue
        found = _contact_blobs(blobs, pitch, n)
        if len(found) < 0.75 * n:
            continue
        # neighbours a pitch apart (a broken merged band's pieces are not evenly spaced)
        nn = cKDTree(found).query(found, k=2)[0][:, 1]
        if np.mean(np.abs(nn / pitch - 1.0) <= 0.25) >= 0.75:
            return layout
    return None


def _bright_runs(above: np.ndarray, step_mm: float, gap_mm: float) -> list[tuple[int, int]]:
    """(start, stop) sample ranges where ``above`` holds, gaps shorter than ``gap_mm`` bridged."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], above.astype(np.int8), [0]])))
    runs: list[list[int]] = []
    for a, b in zip(edges[::2], edges[1::2]):
        if runs and (a - runs[-1][1]) * step_mm < gap_mm:
            runs[-1][1] = b
        else:
            runs.append([a, b])
    return [(int(a), int(b)) for a, b in runs]


def _bright_extent(profile: np.ndarray, step_mm: float, gap_mm: float) -> float:
    """Length (mm) of the profile's first long bright stretch, dips shorter than ``gap_mm`` bridged."""
    bottom = float(profile[: max(2, int(round(BAND_HEAD_MM / step_mm)))].min())
    top = float(np.percentile(profile, 95))
    runs = _bright_runs(profile >= bottom + BAND_LEVEL * (top - bottom), step_mm, gap_mm)
    long = [(b - a) * step_mm for a, b in runs if (b - a) * step_mm >= 2.0]
    return long[0] if long else 0.0


def _layout_from_dips(profile: np.ndarray, step_mm: float, bloom_mm: float) -> dict[str, Any] | None:
    """The catalogue layout whose pitch the gaps between its contacts show, if one does.

    Only layouts of 1 mm pitch or more (AB, MED-EL): closer gaps do not show at CBCT resolution.
    The dips' spacing must match the pitch within ``BLIND_DIPS``, place at least 3/4 of its
    contacts, and the bright stretch must be about as long as the layout (a gap every other
    contact would otherwise pass for twice the pitch); the closest match wins.
    """
    best, best_fit = None, np.inf
    for layout in _all_layouts():
        n, pitch = int(layout["n_contacts"]), float(layout["pitch_mm"])
        if pitch < 1.0:
            continue
        pos = _dips(profile, step_mm, pitch, n, bloom_mm)
        if len(pos) < 0.75 * n:
            continue
        fit = float(np.mean(np.abs(np.diff(pos) * step_mm / pitch - 1.0)))  # every spacing, not their median
        if fit > BLIND_DIPS or fit >= best_fit:
            continue
        length = _bright_extent(profile, step_mm, pitch) - BAND_ENDS_MM
        if abs(length / ((n - 1) * pitch) - 1.0) <= BLIND_LENGTH_FIT:
            best, best_fit = layout, fit
    return best


def _band(profile: np.ndarray, step_mm: float, n: int, pitch_mm: float) -> tuple[float | None, float | None]:
    """Arc positions (mm) where the contact band of ``n`` contacts ``pitch_mm`` apart begins and ends.

    Level: ``BAND_LEVEL`` of the way from the profile's lowest value in its first ``BAND_HEAD_MM``
    (the tissue past the apical tip) to the band's median over its nominal length plus 3 mm (its
    saturated plateau, or the middle of its ripple where it is not saturated). Start: where the
    first run above it at least 2 mm long (or half the band; dips shorter than ``BAND_GAP_MM``
    between contacts do not break a run) rises. End: of its falls below it
    (held for 0.5 mm) within ``PITCH_SCALE_RANGE`` of the band's nominal length after the start,
    the one nearest where a band of nominal length would end. Either is None where the profile
    has no band, or no such fall (a lead as bright as the contacts, a band cut short).
    """
    profile = np.asarray(profile, dtype=float)
    if len(profile) < 4:
        return None, None
    span = (n - 1) * pitch_mm
    bottom = float(profile[: max(2, int(round(BAND_HEAD_MM / step_mm)))].min())
    top = float(np.median(profile[: max(4, int((span + 3.0) / step_mm))]))
    if top - bottom < 200.0:
        return None, None
    level = bottom + BAND_LEVEL * (top - bottom)
    above = profile >= level
    if not above.any():
        return None, None
    # the band starts where the first long bright run rises: a run already bright where the
    # sampling starts (the apical extension ran into a neighbouring turn's bloom) shows no rise
    # (a dip shorter than BAND_GAP_MM is a gap between contacts: one band)
    runs = [(a, b) for a, b in _bright_runs(above, step_mm, BAND_GAP_MM) if (b - a) * step_mm >= min(2.0, 0.5 * span)]
    rising = [a for a, _ in runs if a > 0]
    i = int(rising[0] if rising else (runs[0][0] if runs else np.flatnonzero(above)[0]))
    start = 0.0 if i == 0 else float((i - 1 + (level - profile[i - 1]) / max(float(profile[i] - profile[i - 1]), 1e-6))
                                     * step_mm)
    lo = int((start + span * (1 - PITCH_SCALE_RANGE)) / step_mm)
    hi = int((start + span * (1 + PITCH_SCALE_RANGE) + 1.0) / step_mm)
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
    return start, min(falls, key=lambda f: abs(f - (start + span + BAND_ENDS_MM)))


def _band_offsets(layout: dict[str, Any]) -> tuple[float, float]:
    """Calibrated (band start -> first contact, last contact -> band end) in mm for a layout."""
    keys = (str(layout.get("model")), str(layout.get("vendor")), "default")
    first = next(BAND_TO_FIRST_MM[k] for k in keys if k in BAND_TO_FIRST_MM)
    last = next(BAND_TO_LAST_MM[k] for k in keys if k in BAND_TO_LAST_MM)
    return first, last


def _layout_from_band(profile: np.ndarray, step_mm: float) -> dict[str, Any]:
    """The merged-contact layout (Cochlear, AB) whose length best matches the contact band.

    Saturation flattens the ripple that could tell the pitch; the band's length (first to last
    contact, from its ends) is left. A Cochlear layout within ``BLIND_LENGTH_FIT`` of it is taken
    first (AB's 16 contacts would lie among its 22, the other way round six are lost), then an AB
    one; failing both, or without a measurable band, the closest.
    """
    fits = []
    for l in electrode_layouts("Cochlear") + electrode_layouts("AB"):
        n, pitch = int(l["n_contacts"]), float(l["pitch_mm"])
        start, end = _band(profile, step_mm, n, pitch)
        if end is None:
            fits.append((np.inf, l))
            continue
        to_first, to_last = _band_offsets(l)
        span = (end - to_last) - (start + to_first)
        fits.append((abs(span / ((n - 1) * pitch) - 1.0), l))
    for vendor in ("Cochlear", "AB"):
        close = [t for t in fits if t[1]["vendor"] == vendor and t[0] <= BLIND_LENGTH_FIT]
        if close:
            return min(close, key=lambda t: t[0])[1]
    return min(fits, key=lambda t: t[0])[1] if np.isfinite(min(t[0] for t in fits)) else fits[0][1]


def _comb(profile: np.ndarray, step_mm: float, n: int, pitch_mm: float, tip_to_first_mm: float, *,
          window: float = 0.5) -> tuple[np.ndarray, float]:
    """Sample positions (in steps) of ``n`` contacts ``pitch_mm`` apart, phased to the profile.

    The first contact is searched within one pitch of its nominal place behind the apical tip; the
    phase maximising the summed (detrended) profile at the comb positions wins, with a mild pull
    toward the nominal place so a featureless profile falls back to it.
    """
    detrended = profile - ndimage.uniform_filter1d(profile, max(3, int(2 * pitch_mm / step_mm)), mode="nearest")
    scale = float(np.std(detrended)) + 1e-6
    best, best_score = None, -np.inf
    half = window * pitch_mm
    for s0 in np.arange(max(0.0, tip_to_first_mm - half), tip_to_first_mm + half + step_mm / 4, step_mm / 2):
        pos = (s0 + pitch_mm * np.arange(n)) / step_mm
        if pos[-1] > len(profile) - 1:
            pos = pos[pos <= len(profile) - 1]
        if len(pos) == 0:
            continue
        val = np.interp(pos, np.arange(len(profile)), detrended)
        score = float(val.mean()) / scale - 0.5 * ((s0 - tip_to_first_mm) / pitch_mm) ** 2
        if score > best_score:
            best, best_score = pos, score
    return np.asarray(best if best is not None else [], dtype=float), float(best_score)


def _refine(image: Volume, smoothed: np.ndarray, points_lps: np.ndarray, radius_mm: float,
            iterations: int = 1) -> np.ndarray:
    """Move each point to the intensity-weighted centroid of the bright voxels within ``radius_mm``
    (``iterations`` times, each from where the last put it)."""
    for _ in range(iterations - 1):
        points_lps = _refine(image, smoothed, points_lps, radius_mm)
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


def find_contacts(
    label: Volume,
    image: Volume,
    *,
    electrode: str | None = None,
    n_contacts: int | None = None,
    pitch_mm: float | None = None,
    tip_to_first_mm: float | None = None,
    step_mm: float = 0.05,
    refine: bool = True,
) -> Contacts:
    """Contact centres of the electrode array in ``label`` (LPS mm, apex -> base).

    Args:
        label: electrode mask (non-zero = electrode) on the same grid as ``image``.
        image: the CT in HU.
        electrode: a vendor ("MED-EL", "Cochlear", "AB") or catalogue model name (e.g.
            "CI612 Contour Advance"); its contact count and pitch check the peaks and place the
            contacts where they merge. None: separate peaks are taken as they are, and merged
            contacts are placed with the Cochlear layouts.
        n_contacts: contact count (overrides the electrode's; needs ``pitch_mm``).
        pitch_mm: centre-to-centre contact spacing in mm.
        tip_to_first_mm: apical tip to first contact centre, mm (default: half a pitch).
        step_mm: centreline sampling step in mm.
        refine: move each separate contact to the intensity centroid around it.

    Returns:
        :class:`Contacts`; empty when the label is empty.
    """
    if not label.grid.allclose(image.grid):
        raise ValueError("label and image must share one grid (size, spacing, origin, direction)")
    mask = np.asarray(label.array) > 0
    if not mask.any():
        return Contacts(np.zeros((0, 3)), "none", info={"reason": "empty label"})
    if n_contacts and pitch_mm:
        layouts = [{"n_contacts": int(n_contacts), "pitch_mm": float(pitch_mm), "model": "given",
                    "tip_to_first_mm": float(tip_to_first_mm if tip_to_first_mm is not None else pitch_mm / 2)}]
    elif electrode:
        layouts = electrode_layouts(electrode)
    else:
        layouts = []

    sp = np.asarray(image.spacing_mm)
    box = _bbox(mask, tuple(int(math.ceil(1.5 / s)) for s in sp[::-1]))
    img = _crop(image, box)
    lab = _crop(label, box)
    m = np.asarray(lab.array) > 0
    smoothed = ndimage.gaussian_filter(img.array.astype(np.float32), sigma=np.maximum(0.2 / sp[::-1], 0.5))
    # tracking centres on the label's distance-to-edge ridge: saturated CBCT values are flat there
    edt = ndimage.distance_transform_edt(m, sampling=sp[::-1]).astype(np.float32)
    ridge = ndimage.gaussian_filter(edt, 0.7)
    curve = _centreline(lab, m, step_mm, ridge, smoothed)
    offset = RADIAL_OFFSET_MM.get(str(layouts[0].get("model"))) if len(layouts) == 1 else None
    if offset:
        curve = _shift_outward(curve, offset, step_mm)
    # the label reaches past the metal by the blooming; at the tip about as far as at the sides,
    # so the label's half-width near the tip estimates how far its tip lies beyond the array's
    bloom_mm = float(np.median(_sample(lab, curve[: max(2, int(3.0 / step_mm))], edt)))
    length = _length(curve)
    profile = _sample(img, curve, smoothed)
    # the band's apical end lies near the label's tip: sample on past it along the tip's direction
    n_ext = int(round(APICAL_EXTENSION_MM / step_mm)) if len(curve) > 10 else 0
    t_apex = curve[0] - curve[min(10, len(curve) - 1)]
    t_apex = t_apex / (np.linalg.norm(t_apex) + 1e-12)
    # and past the base: a label can end just past the last contact (a faint lead left out)
    n_base = int(round(BASAL_EXTENSION_MM / step_mm)) if len(curve) > 10 else 0
    t_base = curve[-1] - curve[max(len(curve) - 11, 0)]
    t_base = t_base / (np.linalg.norm(t_base) + 1e-12)
    curve_ext = np.vstack([curve[0] + t_apex * step_mm * np.arange(n_ext, 0, -1)[:, None], curve,
                           curve[-1] + t_base * step_mm * np.arange(1, n_base + 1)[:, None]])
    apical = _sample(img, curve_ext[:n_ext], smoothed) if n_ext else np.zeros(0)
    basal = _sample(img, curve_ext[len(curve_ext) - n_base:], smoothed) if n_base else np.zeros(0)
    profile_ext = np.concatenate([apical, profile, basal])
    info: dict[str, Any] = {"length_mm": round(length, 3), "electrode": electrode, "bloom_mm": round(bloom_mm, 3)}

    min_sep = 0.6 * min(l["pitch_mm"] for l in layouts) if layouts else 0.5
    peaks = _peaks(profile, step_mm, min_sep)
    info["n_peaks"] = int(len(peaks))
    chosen: dict[str, Any] | None = None
    blobs: tuple[np.ndarray, np.ndarray] | None = None  # the label's bright blobs, found once where needed
    measured_pitch = math.nan
    use_peaks = False
    pitch_guess: list[dict[str, Any]] = []
    if len(peaks) >= 3:
        gaps = np.diff(peaks) * step_mm
        measured_pitch = float(np.median(gaps))
        regular = float(np.std(gaps) / measured_pitch) < 0.3
        # peaks closer than what CBCT resolves are noise on a merged array
        resolvable = measured_pitch >= 2 * float(sp.max())
        fits = [l for l in layouts if abs(measured_pitch - l["pitch_mm"]) < 0.3 * l["pitch_mm"]
                and len(peaks) >= 0.75 * l["n_contacts"]]
        # without a known layout, accept only a count any catalogue array could have
        enough = len(peaks) >= 0.75 * min(l["n_contacts"] for l in (layouts or _all_layouts()))
        # the contacts start at the apical tip: a run of peaks far behind it lies on the lead's wires
        cands = layouts or _all_layouts()
        near_tip = peaks[0] * step_mm <= bloom_mm + max(float(l.get("tip_to_first_mm", 0.5 * l["pitch_mm"]))
                                                        for l in cands) + 1.5 * measured_pitch
        use_peaks = regular and resolvable and enough and near_tip and (not layouts or bool(fits))
        on_array = peaks[0] * step_mm <= bloom_mm + 0.6 + 6 * measured_pitch
        if not layouts and regular and resolvable and on_array and len(peaks) >= 4:
            # too few peaks to take as they are, but widely spaced ones starting within the first half
            # of a 12-contact array name MED-EL's layouts, which the Cochlear comb below would leave
            # mostly uncovered (AB's fall inside it)
            pitch_guess = [l for l in _all_layouts() if l["vendor"] == "MED-EL"
                           and abs(measured_pitch - l["pitch_mm"]) < 0.2 * l["pitch_mm"]]
        info["peaks_near_tip"] = bool(near_tip)
        info["first_peak_mm"] = round(float(peaks[0] * step_mm - bloom_mm), 3)
        if use_peaks and fits:
            chosen = min(fits, key=lambda l: abs(measured_pitch - l["pitch_mm"]))
    if use_peaks:
        pos = peaks
        if chosen is not None and len(pos) > chosen["n_contacts"]:
            # keep the brightest run of the expected count
            vals = np.interp(pos, np.arange(len(profile)), profile)
            n = int(chosen["n_contacts"])
            a = max(range(len(pos) - n + 1), key=lambda a: vals[a:a + n].sum())
            pos = pos[a:a + n]
        method, pitch_used = "peaks", measured_pitch
    else:
        dip_fit = _layout_from_dips(profile_ext, step_mm, bloom_mm) if not layouts and BLIND_DIPS else None
        if not layouts and not pitch_guess and dip_fit is None and BLIND_BLOBS:
            blobs = _blobs(img, smoothed, m)
            dip_fit = _layout_from_blobs(blobs)
        if not layouts and pitch_guess:
            layouts = pitch_guess
            info["electrode"] = f"{pitch_guess[0]['vendor']} (assumed from the peaks' spacing)"
        elif dip_fit is not None:
            layouts = [dip_fit]
            info["electrode"] = f"{dip_fit['vendor']} (assumed from the spacing of the gaps between contacts)"
        elif not layouts:
            layouts = [_layout_from_band(profile_ext, step_mm)]
            note = f"{layouts[0]['vendor']} (assumed from the band's length: contacts not separable)"
            if RADIAL_OFFSET_MM.get(str(layouts[0].get("model"))):
                # a perimodiolar layout's centreline lies inside its spiral: start again, moved out
                # (calibration phantoms, no electrode named: 0.187 -> 0.175 mm)
                found = find_contacts(label, image, electrode=str(layouts[0]["model"]), step_mm=step_mm,
                                      refine=refine)
                found.info["electrode"] = note
                return found
            info["electrode"] = note
        best = None
        for l in layouts:
            n_l, pitch_l = int(l["n_contacts"]), float(l["pitch_mm"])
            merged = ANCHOR_TO_BAND and pitch_l < SEPARATE_PITCH_MM
            start, end = _band(profile_ext, step_mm, n_l, pitch_l) if merged else (None, None)
            if start is not None:
                # the band's two ends place the first and last contacts; the spacing between them
                # absorbs the few per cent by which the centreline's length differs from the array's
                to_first, to_last = _band_offsets(l)
                to_first += BLOOM_SLOPE_FIRST * (bloom_mm - BLOOM_REF_MM)
                to_last += BLOOM_SLOPE_LAST * (bloom_mm - BLOOM_REF_MM)
                first = start + to_first
                if end is not None and n_l > 1:
                    last = end - to_last
                    pitch_l = float(np.clip((last - first) / (n_l - 1), pitch_l * (1 - PITCH_SCALE_RANGE),
                                            pitch_l * (1 + PITCH_SCALE_RANGE)))
                window = ANCHORED_COMB_WINDOW
            else:
                first = n_ext * step_mm + bloom_mm + float(l.get("tip_to_first_mm", 0.5 * pitch_l))
                window = COMB_WINDOW
            cand, score = _comb(profile_ext, step_mm, n_l, pitch_l, first, window=window)
            cand = cand - n_ext
            if best is None or score > best[1]:
                best, chosen = (cand, score, pitch_l), l
                if start is not None:
                    info["band_mm"] = [round(start - n_ext * step_mm, 3),
                                       None if end is None else round(end - n_ext * step_mm, 3)]
        pos = best[0]
        method, pitch_used = "pitch", float(best[2])
        if SATURATED_DIPS and chosen is not None and pitch_used >= SEPARATE_PITCH_MM:
            # separate contacts whose tops saturate flat leave no peaks, but the gaps between
            # them still dip: the contacts lie midway between the dips
            n_c = int(chosen["n_contacts"])
            mid = _dips(profile, step_mm, pitch_used, n_c, bloom_mm)
            if len(mid) >= 0.75 * n_c:
                pos, method = mid, "dips"
                info["n_dips"] = int(len(mid))
    if chosen is not None:
        info["model"] = chosen.get("model")
    s_idx = np.arange(len(curve_ext)) - n_ext
    pts = np.stack([np.interp(pos, s_idx, curve_ext[:, c]) for c in range(3)], axis=1) if len(pos) else np.zeros((0, 3))
    # a comb of closely spaced contacts is placed better than a centroid can: the neighbours' blur
    # pulls each centroid off; widely spaced ones, and a comb of an assumed layout (which may not
    # be the array's), gain from it
    assumed = electrode is None and not (n_contacts and pitch_mm)
    radius = min(0.45 * pitch_used, 0.6)
    if refine and (method in ("peaks", "dips") or (REFINE_PITCH and (pitch_used >= REFINE_PITCH_MIN_MM or assumed))) \
            and len(pts):
        pts = _refine(img, smoothed, pts, radius, REFINE_SEPARATE_ITERATIONS if method != "pitch" else 1)
    if BLOB_COMPLETION and len(pts) >= 3 and (method in ("peaks", "dips") or pitch_used >= SEPARATE_PITCH_MM):
        blobs = blobs if blobs is not None else _blobs(img, smoothed, m)
        expected = int(chosen["n_contacts"]) if chosen is not None else MAX_SEPARATE_CONTACTS
        # blob contacts go to their intensity centroid like the peaks (a blob's thresholded core is
        # a little off it: calibration set 0.157 -> 0.155 mm, no held-out set worse)
        if method in ("pitch", "dips") and len(blobs[0]):
            # a comb of separate contacts where the peaks failed: the blobs themselves, if about
            # the expected count of them look alike; the comb stays otherwise. Dips stay where they
            # found clearly more (touching blobs merge under heavy bloom), not otherwise: dips
            # along a centreline that cuts across touching turns miss the contacts there
            chosen_blobs = _contact_blobs(blobs, pitch_used, expected)
            if len(chosen_blobs) >= 0.75 * expected and (method == "pitch" or len(chosen_blobs) >= len(pts) - 2):
                info["from_blobs"] = int(len(chosen_blobs))
                if refine:
                    chosen_blobs = _refine(img, smoothed, chosen_blobs, radius, REFINE_SEPARATE_ITERATIONS)
                pts, method = _order_along(chosen_blobs, curve), "blobs"
        if method in ("peaks", "dips"):
            extra = _missing_blobs(blobs, pts, pitch_used, expected - len(pts))
            if len(extra):
                info["added_from_blobs"] = int(len(extra))
                if refine:
                    extra = _refine(img, smoothed, extra, radius, REFINE_SEPARATE_ITERATIONS)
                pts = _order_along(np.vstack([pts, extra]), curve)
    return Contacts(pts, method, curve, profile.astype(np.float32), pitch_used, info)


def _blobs(image: Volume, smoothed: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Separate bright blobs of the label: centroids (LPS mm) and volumes (mm^3).

    Separate contacts show as blobs of the CT near its top grey value (``BLOB_LEVEL`` of the way
    from the label's 10th to its 99.5th percentile); merged ones as one long band.
    """
    vals = smoothed[m]
    if vals.size < 10:
        return np.zeros((0, 3)), np.zeros(0)
    lo, top = np.percentile(vals, [10, 99.5])
    hi = (smoothed >= lo + BLOB_LEVEL * (top - lo)) & ndimage.binary_dilation(m, iterations=1)
    lab, n = ndimage.label(hi)
    if n == 0:
        return np.zeros((0, 3)), np.zeros(0)
    idx = np.arange(1, n + 1)
    cents = np.array(ndimage.center_of_mass(np.where(hi, smoothed - lo, 0), lab, idx))
    vol = ndimage.sum(hi, lab, idx) * float(np.prod(image.spacing_mm))
    return image.index_to_lps(cents[:, ::-1]), np.asarray(vol, dtype=float)


def _missing_blobs(blobs: tuple[np.ndarray, np.ndarray], found: np.ndarray, pitch_mm: float, room: int) -> np.ndarray:
    """Up to ``room`` contacts the centreline missed, from the label's blobs (:func:`_blobs`).

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
    return _alike_blobs(blobs, float(np.median(vol[on_found])), pitch_mm, room, d >= 0.6 * pitch_mm)


def _contact_blobs(blobs: tuple[np.ndarray, np.ndarray], pitch_mm: float, n: int) -> np.ndarray:
    """Up to ``n`` blobs that look like one array's contacts: sizes within 0.4-2.5 times the median of
    the ``n`` largest, none within ``0.6 * pitch`` of another (closest in size first)."""
    if len(blobs[0]) == 0:
        return np.zeros((0, 3))
    return _alike_blobs(blobs, float(np.median(np.sort(blobs[1])[::-1][:n])), pitch_mm, n)


def _alike_blobs(blobs: tuple[np.ndarray, np.ndarray], ref_mm3: float, pitch_mm: float, n: int,
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


def _order_along(points: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Points sorted by the arc position of their nearest centreline sample (apex -> base)."""
    from scipy.spatial import cKDTree

    _, j = cKDTree(curve).query(points)
    return points[np.argsort(j, kind="stable")]


def _perpendicular_basis(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1.0, 0.0, 0.0]) if abs(t[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(t, a)
    u /= np.linalg.norm(u)
    return u, np.cross(t, u)


def _track(field: np.ndarray, vol: Volume, m: np.ndarray, start: np.ndarray, direction: np.ndarray, *,
           step_mm: float = 0.1, radius_mm: float = 0.3, max_mm: float = 80.0, max_gap_mm: float = 0.5
           ) -> np.ndarray:
    """Follow the array's bright core from ``start`` along ``direction`` until the label ends.

    Each step goes ``step_mm`` ahead, then moves half-way to the intensity centroid of a disc of
    ``radius_mm`` across the direction of travel; the direction changes smoothly. The momentum
    carries the track through places where neighbouring turns blur together, where a skeleton
    takes shortcuts.
    """
    rings = [(r, a) for r in (radius_mm / 2, radius_mm) for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
    offsets2d = np.array([[0.0, 0.0]] + [[r * np.cos(a), r * np.sin(a)] for r, a in rings])
    t = direction / np.linalg.norm(direction)
    p = np.asarray(start, float)
    pts = [p]
    outside = 0
    inv = np.linalg.inv(vol.direction @ np.diag(vol.spacing_mm))
    origin = np.asarray(vol.origin_mm)
    for _ in range(int(max_mm / step_mm)):
        q = p + step_mm * t
        u, v = _perpendicular_basis(t)
        cand = q + offsets2d[:, :1] * u + offsets2d[:, 1:] * v
        ijk = (cand - origin) @ inv.T
        w = ndimage.map_coordinates(field, ijk[:, ::-1].T, order=1, mode="nearest")
        w = np.clip(w - w.min(), 0, None)
        if w.sum() > 0:
            q = q + 0.5 * ((w[:, None] * (cand - q)).sum(axis=0) / w.sum())
        t_new = q - p
        t_new /= np.linalg.norm(t_new) + 1e-12
        t = 0.6 * t + 0.4 * t_new
        t /= np.linalg.norm(t)
        p = q
        i, j, k = np.rint((p - origin) @ inv.T).astype(int)
        inside = 0 <= k < m.shape[0] and 0 <= j < m.shape[1] and 0 <= i < m.shape[2] and bool(m[k, j, i])
        outside = 0 if inside else outside + 1
        if outside * step_mm > max_gap_mm:
            log.debug("track left the label at %s", np.round(p, 2))
            break
        if len(pts) > int(3.0 / step_mm):
            # coming back onto its own earlier path: the tip was passed and a neighbouring turn reached
            if np.min(np.linalg.norm(np.asarray(pts[: -int(3.0 / step_mm)]) - p, axis=1)) < 0.5:
                log.debug("track came back onto itself at %s", np.round(p, 2))
                break
        pts.append(p)
    pts = np.array(pts)
    return pts[: max(1, len(pts) - outside)]


def _centreline(lab: Volume, m: np.ndarray, step_mm: float, field: np.ndarray | None = None,
                brightness: np.ndarray | None = None) -> np.ndarray:
    """The array's centreline (LPS mm, apex -> base, every ``step_mm``) from its mask ``m``.

    The contacts are the brightest stretch of the label's skeleton (``brightness``: smoothed CT):
    the longest path through its bright points (:func:`_bright_run`) gives the apex (its curled
    end). From there the array is tracked (:func:`_track`) on ``field`` (the label's distance
    ridge) toward the base and on into the lead. Tracking from the apex does not depend on where the lead
    runs: a lead passing close to the basal turn joins the label there, and a track or skeleton
    path from the lead's end can then run the turn backwards and leave the apex aside.

    Fallbacks, in order: the track from the skeleton's basal end (the end of its longest path
    farther from the apex), then the skeleton path itself. Smoothing spline, every ``step_mm``.
    """
    from skimage.morphology import skeletonize

    sp = np.asarray(lab.spacing_mm)
    skel = skeletonize(m)
    if skel.sum() < 2:
        skel = m
    kji = np.argwhere(skel)
    pts = lab.index_to_lps(kji[:, ::-1])
    link = 1.75 * float(sp.max())
    path = pts[_longest_path(pts, link_mm=link)]
    run = _bright_run(pts, brightness[tuple(kji.T)], link) if brightness is not None else None
    if run is not None:
        if np.linalg.norm(path[-1] - run[0]) < np.linalg.norm(path[0] - run[0]):
            path = path[::-1]
    else:
        centroid = path.mean(axis=0)
        if np.linalg.norm(path[0] - centroid) > np.linalg.norm(path[-1] - centroid):
            path = path[::-1]  # now apex (roughly) -> base
    skel_len = _length(path)
    smooth = max(CURVE_SMOOTH_MM, 2.0 * float(sp.max()) if field is None else CURVE_SMOOTH_MM)
    if field is not None and skel_len > 3.0:
        if run is not None:
            ahead = _point_along(run, 1.0)
            if np.linalg.norm(ahead - run[0]) > 0:
                out = _track(field, lab, m, run[0], ahead - run[0])
                log.debug("centreline: bright run %.1f mm, tracked from its apex %.1f mm", _length(run), _length(out))
                # taken where it follows the whole bright run (it stops at a label gap)
                if _length(out) >= _length(run) - 2.0:
                    if APEX_TRACK:
                        # the skeleton stops short of the apical tip: track on to it as well
                        tip = _track(field, lab, m, run[0], run[0] - ahead, max_mm=APEX_TRACK_MM)
                        if len(tip) > 1:
                            out = np.vstack([tip[:0:-1], out])
                    return _extend_tips(_resample_curve(out, step_mm, smooth), lab, m, step_mm)
        base = path[-1]
        back = _point_along(path[::-1], 1.0)
        tracked = _track(field, lab, m, base, back - base) if np.linalg.norm(back - base) > 0 else path[::-1]
        t_len = _length(tracked)
        log.debug("centreline: skeleton path %.1f mm, tracked %.1f mm", skel_len, t_len)
        if t_len > 0.8 * skel_len:
            curve = _resample_curve(tracked[::-1], step_mm, smooth)
            return _extend_tips(curve, lab, m, step_mm)
    curve = _resample_curve(path, step_mm, smooth)
    return _extend_tips(curve, lab, m, step_mm)


def _shift_outward(curve: np.ndarray, offset_mm: float, step_mm: float) -> np.ndarray:
    """The curve moved ``offset_mm`` away from its local centre of curvature (where it curves).

    Curvature from the turn of the tangent over 1 mm either side; the full shift where the radius
    is 5 mm or less, tapering toward straight stretches (the lead). Resampled every ``step_mm``.
    """
    if len(curve) < 5:
        return curve
    w = max(1, int(round(1.0 / step_mm)))
    idx = np.arange(len(curve))
    before = curve[np.maximum(idx - w, 0)]
    after = curve[np.minimum(idx + w, len(curve) - 1)]
    t0 = curve - before
    t1 = after - curve
    t0 /= np.linalg.norm(t0, axis=1, keepdims=True) + 1e-12
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True) + 1e-12
    k = t1 - t0
    kn = np.linalg.norm(k, axis=1, keepdims=True)
    weight = np.clip(kn / 0.2, 0.0, 1.0)
    moved = curve - offset_mm * weight * k / (kn + 1e-12)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(moved, axis=0), axis=1))])
    s = np.arange(0.0, arc[-1] + 1e-9, step_mm)
    return np.stack([np.interp(s, arc, moved[:, c]) for c in range(3)], axis=1)


def _length(points: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum()) if len(points) > 1 else 0.0


def _point_along(path: np.ndarray, mm: float) -> np.ndarray:
    """The path's last point short of ``mm`` of arc length from its start (its end if shorter)."""
    arc = np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))
    return path[min(len(path) - 1, int(np.searchsorted(arc, mm)))]


def _straightness(curve: np.ndarray, length_mm: float = CURL_MM) -> float:
    """Chord / arc length of the curve's first ``length_mm`` (1: straight; the apex's ~0.4-0.8)."""
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    if arc[-1] < 1.0:
        return 1.0
    j = min(len(curve) - 1, int(np.searchsorted(arc, length_mm)))
    return float(np.linalg.norm(curve[j] - curve[0]) / max(arc[j], 1e-9))


def _bright_run(pts: np.ndarray, brightness: np.ndarray, link_mm: float) -> np.ndarray | None:
    """The skeleton's bright run (the contacts), apex -> base; None when it is not clear.

    The longest path through the skeleton points brighter than ``BRIGHT_FRACTION`` of the way from
    their 10th to their 95th percentile (the lead's wires are dimmer). Its apical end lies inside
    the spiral: nearer the run's centroid, and curled (:func:`_straightness`) more tightly than the
    basal end. Both must agree; the run must be at least 3 mm long.
    """
    lo, hi = np.percentile(brightness, [10, 95])
    keep = brightness >= lo + BRIGHT_FRACTION * (hi - lo)
    if keep.sum() < 4:
        return None
    sub = pts[keep]
    run = sub[_longest_path(sub, link_mm)]
    if _length(run) < 3.0:
        return None
    centroid = run.mean(axis=0)
    nearer = np.linalg.norm(run[0] - centroid) < np.linalg.norm(run[-1] - centroid)
    curled = _straightness(run) < _straightness(run[::-1])
    if nearer != curled:
        return None
    return run if nearer else run[::-1]


def _extend_tips(curve: np.ndarray, lab: Volume, m: np.ndarray, step_mm: float) -> np.ndarray:
    def inside(p):
        i, j, k = np.rint(lab.lps_to_index(p)).astype(int)
        return 0 <= k < m.shape[0] and 0 <= j < m.shape[1] and 0 <= i < m.shape[2] and bool(m[k, j, i])

    curve = _extend_to_tip(curve, inside, step_mm, 2.0)
    return _extend_to_tip(curve[::-1], inside, step_mm, APEX_EXTEND_MM, turn=APEX_TURN)[::-1]
