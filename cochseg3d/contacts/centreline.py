"""The array's centreline from its label: skeleton, bright run, tracking, apex, outward shift.

The contacts are the brightest stretch of the label's skeleton; its curled end (the array curls
into the spiral; the lead runs off nearly straight) is the apex. From there the array is tracked
along the label's distance ridge toward the base and on into the lead, smoothed by a spline and
sampled every ``step_mm``. Tracking from the apex keeps a lead that passes close to the basal
turn (the label joins them there) from flipping or cutting the array. Points are LPS mm.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from cochseg3d.contacts.calibration import Calibration
from cochseg3d.volume import Volume

log = logging.getLogger("cochseg3d.contacts")


def longest_path(points_mm: np.ndarray, link_mm: float, *, max_pieces: int = 30) -> np.ndarray:
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
        return np.nonzero(keep)[0][longest_path(points_mm[keep], link_mm, max_pieces=max_pieces)]
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


def resample_curve(points_mm: np.ndarray, step_mm: float, smooth_mm: float) -> np.ndarray:
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


def extend_to_tip(curve: np.ndarray, inside, step_mm: float, max_mm: float, *,
                  turn_mm: float | None = None) -> np.ndarray:
    """Extend the curve's last point while still ``inside(point)`` the label, by up to ``max_mm``:
    along its end tangent, or (``turn_mm``) turning as its last ``turn_mm`` turned (an apex curls
    tighter still)."""
    if len(curve) < 3:
        return curve
    back = min(len(curve) - 1, max(2, int(0.5 / step_mm)))
    t = curve[-1] - curve[-1 - back]
    t = t / (np.linalg.norm(t) + 1e-12)
    axis, rate = None, 0.0
    far = int(turn_mm / step_mm) if turn_mm is not None else 0
    if turn_mm is not None and len(curve) > far + back:
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


def _perpendicular_basis(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1.0, 0.0, 0.0]) if abs(t[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(t, a)
    u /= np.linalg.norm(u)
    return u, np.cross(t, u)


def track(field: np.ndarray, vol: Volume, m: np.ndarray, start: np.ndarray, direction: np.ndarray, *,
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


def centreline(lab: Volume, m: np.ndarray, step_mm: float, cal: Calibration, field: np.ndarray | None = None,
               brightness: np.ndarray | None = None) -> np.ndarray:
    """The array's centreline (LPS mm, apex -> base, every ``step_mm``) from its mask ``m``.

    The contacts are the brightest stretch of the label's skeleton (``brightness``: smoothed CT):
    the longest path through its bright points (:func:`bright_run`) gives the apex (its curled
    end). From there the array is tracked (:func:`track`) on ``field`` (the label's distance
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
    path = pts[longest_path(pts, link_mm=link)]
    run = (bright_run(pts, brightness[tuple(kji.T)], link, cal.bright_fraction, cal.curl_mm)
           if brightness is not None else None)
    if run is not None:
        if np.linalg.norm(path[-1] - run[0]) < np.linalg.norm(path[0] - run[0]):
            path = path[::-1]
    else:
        centroid = path.mean(axis=0)
        if np.linalg.norm(path[0] - centroid) > np.linalg.norm(path[-1] - centroid):
            path = path[::-1]  # now apex (roughly) -> base
    skel_len = arc_length(path)
    smooth = max(cal.curve_smooth_mm, 2.0 * float(sp.max()) if field is None else cal.curve_smooth_mm)
    if field is not None and skel_len > 3.0:
        if run is not None:
            ahead = point_along(run, 1.0)
            if np.linalg.norm(ahead - run[0]) > 0:
                out = track(field, lab, m, run[0], ahead - run[0])
                log.debug("centreline: bright run %.1f mm, tracked from its apex %.1f mm", arc_length(run),
                          arc_length(out))
                # taken where it follows the whole bright run (it stops at a label gap)
                if arc_length(out) >= arc_length(run) - 2.0:
                    if cal.apex_track:
                        # the skeleton stops short of the apical tip: track on to it as well
                        tip = track(field, lab, m, run[0], run[0] - ahead, max_mm=cal.apex_track_mm)
                        if len(tip) > 1:
                            out = np.vstack([tip[:0:-1], out])
                    return extend_tips(resample_curve(out, step_mm, smooth), lab, m, step_mm, cal)
        base = path[-1]
        back = point_along(path[::-1], 1.0)
        tracked = track(field, lab, m, base, back - base) if np.linalg.norm(back - base) > 0 else path[::-1]
        t_len = arc_length(tracked)
        log.debug("centreline: skeleton path %.1f mm, tracked %.1f mm", skel_len, t_len)
        if t_len > 0.8 * skel_len:
            curve = resample_curve(tracked[::-1], step_mm, smooth)
            return extend_tips(curve, lab, m, step_mm, cal)
    curve = resample_curve(path, step_mm, smooth)
    return extend_tips(curve, lab, m, step_mm, cal)


def shift_outward(curve: np.ndarray, offset_mm: float, step_mm: float) -> np.ndarray:
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


def cumulative_arc(points: np.ndarray) -> np.ndarray:
    """Arc length (mm) from the first point to each point of an ordered polyline."""
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])


def arc_length(points: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum()) if len(points) > 1 else 0.0


def point_along(path: np.ndarray, mm: float) -> np.ndarray:
    """The path's last point short of ``mm`` of arc length from its start (its end if shorter)."""
    arc = np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))
    return path[min(len(path) - 1, int(np.searchsorted(arc, mm)))]


def straightness(curve: np.ndarray, length_mm: float) -> float:
    """Chord / arc length of the curve's first ``length_mm`` (1: straight; the apex's ~0.4-0.8)."""
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    if arc[-1] < 1.0:
        return 1.0
    j = min(len(curve) - 1, int(np.searchsorted(arc, length_mm)))
    return float(np.linalg.norm(curve[j] - curve[0]) / max(arc[j], 1e-9))


def bright_run(pts: np.ndarray, brightness: np.ndarray, link_mm: float, fraction: float, curl_mm: float
               ) -> np.ndarray | None:
    """The skeleton's bright run (the contacts), apex -> base; None when it is not clear.

    The longest path through the skeleton points brighter than ``fraction`` of the way from
    their 10th to their 95th percentile (the lead's wires are dimmer). Its apical end lies inside
    the spiral: nearer the run's centroid, and curled (:func:`straightness`) more tightly than the
    basal end. Both must agree; the run must be at least 3 mm long.
    """
    lo, hi = np.percentile(brightness, [10, 95])
    keep = brightness >= lo + fraction * (hi - lo)
    if keep.sum() < 4:
        return None
    sub = pts[keep]
    run = sub[longest_path(sub, link_mm)]
    if arc_length(run) < 3.0:
        return None
    centroid = run.mean(axis=0)
    nearer = np.linalg.norm(run[0] - centroid) < np.linalg.norm(run[-1] - centroid)
    curled = straightness(run, curl_mm) < straightness(run[::-1], curl_mm)
    if nearer != curled:
        return None
    return run if nearer else run[::-1]


def extend_tips(curve: np.ndarray, lab: Volume, m: np.ndarray, step_mm: float, cal: Calibration) -> np.ndarray:
    """The curve extended at both ends while inside the label (the apex turning with its curl)."""
    def inside(p):
        i, j, k = np.rint(lab.lps_to_index(p)).astype(int)
        return 0 <= k < m.shape[0] and 0 <= j < m.shape[1] and 0 <= i < m.shape[2] and bool(m[k, j, i])

    curve = extend_to_tip(curve, inside, step_mm, 2.0)
    turn = cal.turn_mm if cal.apex_turn else None
    return extend_to_tip(curve[::-1], inside, step_mm, cal.apex_extend_mm, turn_mm=turn)[::-1]

