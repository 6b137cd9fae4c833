"""The cochlear frame of one array, estimated from its contacts and centreline.

Consensus definition (Verbist et al., Otol Neurotol 2010;31:722-730): z along the modiolar axis
towards the apex, x from the axis through the round window, the origin on the modiolar axis at the
basal-turn level; here y = z x x (right-handed, LPS mm).

Method: the intracochlear array follows the scala's spiral, so the track (the dense centreline, or
the contacts alone) is fitted by a spiral about an unknown axis, radius ``ra + exp(lb - k psi)``
and height ``h0 + h1 psi`` (plus the basal turn's dip) in the cumulative angle ``psi`` (least squares, soft-L1 loss,
started from the track's PCA plane and a circle fit). The round window is where the array enters
the spiral: outside, the lead runs straight on, so the entry is where the centreline's curvature
(over +-1 mm) first falls below half the spiral's (1 / radius) for 1 mm; the spiral is then fitted
again up to the entry, with the basal turn's dip, and the entry found again. Where the centreline
never runs straight, the junction that best splits it into "on the spiral" and "on the spiral's
tangent" stands in. With the image, the entry is also measured on it: where the bone around the
array ends (:mod:`.round_window`); an entry the curvature rule puts clearly basal of that is moved
there (the lead is not in the cochlea where no bone surrounds it), and the spiral fitted again.
The apex is the end the spiral climbs towards (``z`` grows along ``psi``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from cochseg3d.contacts.centreline import cumulative_arc

MIN_CONTACTS = 4
MIN_TURN_DEG = 120.0  # less spiral than this fixes no axis
JUNCTION_WINDOW_MM = 3.0


@dataclass
class SpiralFit:
    """A spiral about the axis through ``centre`` along ``axis`` (LPS mm), psi in rad."""

    centre: np.ndarray
    axis: np.ndarray
    e1: np.ndarray  # reference direction in the plane (psi's zero is the fit's first point)
    sense: float  # +1: psi grows counter-clockwise about ``axis``
    phi0: float
    params: np.ndarray  # ra, lb, k, h0, h1, dip
    rms_mm: float
    base: np.ndarray  # the fitted track's basal point (psi = 0)

    def local(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rho, phi, w) of LPS points: distance to the axis, polar angle about it, height along it."""
        d = np.atleast_2d(p) - self.centre
        w = d @ self.axis
        e2 = np.cross(self.axis, self.e1)
        return np.hypot(d @ self.e1, d @ e2), np.arctan2(d @ e2, d @ self.e1), w

    def psi(self, p: np.ndarray) -> np.ndarray:
        """Cumulative angle (rad) of an ordered track, unwrapped along it."""
        _, phi, _ = self.local(p)
        phi = np.unwrap(phi)
        i = int(np.argmin(np.linalg.norm(np.atleast_2d(p) - self.base, axis=1)))
        phi -= 2 * np.pi * np.round((phi[i] - self.phi0) / (2 * np.pi))  # whole turns: as in the fit
        return self.sense * (phi - self.phi0)

    def radius(self, psi):
        ra, lb, k = self.params[:3]
        return ra + np.exp(lb - k * np.asarray(psi))

    def height(self, psi):
        return _height(self.params[3:], np.asarray(psi))

    def basal_extension(self, mm: float, step_mm: float = 0.1) -> np.ndarray:
        """Points (apex -> base) continuing the spiral ``mm`` beyond its basal end (psi < 0)."""
        n = max(1, int(np.ceil(mm / step_mm)))
        dpsi = step_mm / max(float(self.radius(0.0)), 0.5)
        return self.point(-dpsi * np.arange(1, n + 1))

    def point(self, psi) -> np.ndarray:
        psi = np.atleast_1d(np.asarray(psi, float))
        e2 = np.cross(self.axis, self.e1)
        ang = self.phi0 + self.sense * psi
        r = self.radius(psi)
        return (self.centre + r[:, None] * (np.cos(ang)[:, None] * self.e1 + np.sin(ang)[:, None] * e2)
                + self.height(psi)[:, None] * self.axis)


@dataclass
class CochlearFrame:
    """The estimated frame (LPS mm); ``ok`` False with ``reason`` when it cannot be estimated."""

    ok: bool
    origin: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    x: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    y: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    z: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    turn_sense: int = 0  # +1: the array turns counter-clockwise about z from the round window to the apex
    confidence: float = 0.0
    reason: str = ""
    round_window_lps_mm: np.ndarray | None = None
    round_window_index: int | None = None  # on ``track``
    track: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # apex -> base
    spiral: SpiralFit | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> np.ndarray:
        return np.stack([self.x, self.y, self.z])

    def to_local(self, p: np.ndarray) -> np.ndarray:
        """Frame coordinates (mm) of LPS points."""
        return (np.atleast_2d(p) - self.origin) @ self.rows.T

    def to_json(self) -> dict:
        if not self.ok:
            return {"confidence": 0.0, "reason": self.reason}
        out = {"origin_lps_mm": _r(self.origin, 3), "x_lps": _r(self.x, 5), "y_lps": _r(self.y, 5),
               "z_lps": _r(self.z, 5), "turn_sense": self.turn_sense, "confidence": round(self.confidence, 2),
               "definition": "Verbist et al. 2010 consensus cochlear coordinates (z modiolar axis to the apex, "
                             "x through the round window)"}
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def _r(v, nd):
    return [round(float(a), nd) for a in v]


def _track(lps_mm: np.ndarray, centreline: np.ndarray | None) -> np.ndarray:
    """The ordered track (apex -> base) to fit: the centreline where it spans the contacts."""
    if centreline is None or len(centreline) < 20:
        return np.asarray(lps_mm, float)
    cl = np.asarray(centreline, float)
    s = cumulative_arc(cl)
    if np.median(np.diff(s)) <= 0.1:
        return cl
    s_new = np.linspace(0.0, s[-1], int(np.ceil(s[-1] / 0.1)) + 1)  # a coarse line: entry to 0.1 mm
    return np.stack([np.interp(s_new, s, cl[:, d]) for d in range(3)], axis=1)


def _circle_centre(q: np.ndarray) -> np.ndarray:
    """Algebraic (Kasa) circle fit of 2D points."""
    A = np.column_stack([2 * q, np.ones(len(q))])
    b = (q**2).sum(axis=1)
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    return sol[:2]


def _height(h: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Height along the axis: a steady rise plus the basal turn's dip over its first half-turn.

    No curvature of the rise: over the one to two turns an array spans, a quadratic term trades
    off against the axis's tilt, and a found centreline's voxel-scale wiggles then tilt the axis
    by 5-30 deg (3.5 deg mean without it, against 10.9, on development phantoms).
    """
    return h[0] + h[1] * psi + h[2] * np.sin(np.clip(psi, 0.0, np.pi))


def fit_spiral(track: np.ndarray, *, dip: bool = False) -> SpiralFit:
    """Least-squares spiral through the ordered points ``track`` (apex -> base, LPS mm).

    With ``dip`` (the track's basal end is the round window), the height model also carries the
    basal turn's dip below its plane over the first half-turn (the "rollercoaster" of the basal
    turn, cf. Avci et al., Hear Res 2014), which an axis tilt would otherwise absorb.
    """
    pts = track[::-1]  # base -> apex: psi grows
    mean = pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts - mean, full_matrices=False)
    n0, u, v = vt[2], vt[0], vt[1]
    c2 = _circle_centre(np.column_stack([(pts - mean) @ u, (pts - mean) @ v]))
    c0 = mean + c2[0] * u + c2[1] * v

    def geometry(x):
        a = n0 + x[0] * u + x[1] * v
        a /= np.linalg.norm(a)
        c = c0 + x[2] * u + x[3] * v
        e1 = u - (u @ a) * a
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(a, e1)
        d = pts - c
        w = d @ a
        phi = np.unwrap(np.arctan2(d @ e2, d @ e1))
        sense = 1.0 if phi[-1] >= phi[0] else -1.0
        return a, c, e1, sense * (phi - phi[0]), np.hypot(d @ e1, d @ e2), w, sense, phi[0]

    def resid(x):
        _, _, _, psi, rho, w, _, _ = geometry(x)
        ra, lb, k = x[4:7]
        return np.concatenate([rho - (ra + np.exp(lb - k * psi)), w - _height(x[7:], psi)])

    _, _, _, psi, rho, w, _, _ = geometry(np.zeros(4))
    r_lo, r_hi = float(np.percentile(rho, 10)), float(np.percentile(rho, 90))
    x0 = np.array([0, 0, 0, 0, max(r_lo * 0.5, 0.1), np.log(max(r_hi - r_lo * 0.5, 0.2)), 0.2, w.mean(), 0.0, 0.0])
    lo = [-1, -1, -5, -5, -3, -5, -0.5, -20, -5, -1.5 if dip else -1e-6]
    hi = [1, 1, 5, 5, 6, 3, 2.0, 20, 5, 1.5 if dip else 1e-6]
    x0 = np.clip(x0, np.array(lo) + 1e-6, np.array(hi) - 1e-6)
    sol = optimize.least_squares(resid, x0, bounds=(lo, hi), loss="soft_l1", f_scale=0.15, x_scale="jac")
    a, c, e1, psi, _, _, sense, phi0 = geometry(sol.x)
    rms = float(np.sqrt(np.mean(resid(sol.x) ** 2)))
    return SpiralFit(c, a, e1, sense, phi0, sol.x[4:].copy(), rms, pts[0].copy())


def _straight_from(track: np.ndarray, fit: SpiralFit, *, half_mm: float = 1.0) -> int | None:
    """First index (apex -> base) from which the track runs straight for a while: the entry.

    Menger curvature over +-``half_mm``; the spiral's is about 1 / its radius, a straight lead's 0,
    so the curvature crosses half the spiral's where the array leaves it (symmetric, unbiased).
    """
    s = cumulative_arc(track)
    step = max(float(np.median(np.diff(s))), 1e-3)
    i = np.arange(len(track))
    lo = np.searchsorted(s, s - half_mm)
    hi = np.minimum(np.searchsorted(s, s + half_mm), len(track) - 1)
    a, b = track[lo] - track[i], track[hi] - track[i]
    c = track[hi] - track[lo]
    cross = np.linalg.norm(np.cross(a, b), axis=1)
    kappa = 2 * cross / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) * np.linalg.norm(c, axis=1) + 1e-12)
    rho, _, _ = fit.local(track)
    low = (kappa < 0.5 / np.maximum(rho, 0.5)) & (s > s[0] + half_mm) & (s < s[-1] - half_mm)
    run = int(np.ceil(half_mm / step))
    for j in np.flatnonzero(low):
        if low[j: j + run].all():
            return int(j)
    return None


def _junction(track: np.ndarray, fit: SpiralFit, near_index: int) -> int:
    """Index on ``track`` (apex -> base) where the array leaves the spiral along its tangent."""
    s = cumulative_arc(track)
    psi = fit.psi(track[::-1])[::-1]
    on_spiral = np.linalg.norm(track - fit.point(psi), axis=1)
    best, best_cost = len(track) - 1, np.inf
    lo = max(int(np.searchsorted(s, s[near_index] - 4.0)), 1)
    hi = min(int(np.searchsorted(s, s[near_index] + 3.0)), len(track) - 2)
    for j in range(lo, hi):
        ahead = (s > s[j]) & (s <= s[j] + JUNCTION_WINDOW_MM)
        behind = (s <= s[j]) & (s > s[j] - JUNCTION_WINDOW_MM)
        if ahead.sum() < 3:
            break
        t = fit.point(psi[j] + 1e-3) - fit.point(psi[j] - 1e-3)
        t = (t[0] / np.linalg.norm(t[0]))
        p0 = fit.point(psi[j])[0]
        d = track[ahead] - p0
        off_line = np.linalg.norm(d - np.outer(d @ t, t), axis=1)
        cost = (np.sum(np.minimum(on_spiral[behind], 1.0) ** 2) + np.sum(np.minimum(off_line, 1.0) ** 2)) / (
            ahead.sum() + behind.sum())
        if cost < best_cost:
            best, best_cost = j, cost
    return best


def estimate_frame(lps_mm: np.ndarray, centreline: np.ndarray | None = None, image=None,
                   levels=None) -> CochlearFrame:
    """The cochlear frame from the contacts (apex -> base, LPS mm) and the array's centreline.

    Args:
        lps_mm: (N, 3) contact centres, apex -> base.
        centreline: (M, 3) the array's centreline, apex -> base, running on out of the cochlea
            (what :class:`cochseg3d.contacts.Contacts` carries); None: the contacts alone, and the
            round window is then taken at the most basal contact (lower confidence).
        image: the scan (:class:`cochseg3d.Volume`), to measure the round window on (where the
            bone around the array ends); None: from the centreline's shape alone.
        levels: the image's :class:`cochseg3d.greylevels.GreyLevels` (measured when None).

    Returns:
        :class:`CochlearFrame`; ``ok`` False with the reason when the array is too short or straight.
    """
    pts = np.asarray(lps_mm, float).reshape(-1, 3)
    if len(pts) < MIN_CONTACTS:
        return CochlearFrame(False, reason=f"{len(pts)} contacts: at least {MIN_CONTACTS} are needed to fix an axis")
    track = _track(pts, centreline)
    has_line = centreline is not None and len(centreline) >= 20
    near = np.argmin(np.linalg.norm(track[:, None] - pts[None], axis=2), axis=0)
    basal = int(near.max())
    sv = np.linalg.svd(track[: basal + 1] - track[: basal + 1].mean(axis=0), compute_uv=False)
    if sv[1] < 0.05 * sv[0]:
        return CochlearFrame(False, reason="the array runs straight: no spiral to fix the modiolar axis", track=track)
    notes = []
    if has_line:
        fit = fit_spiral(track[: basal + 1])
        start = _straight_from(track, fit)
        rw = _junction(track, fit, basal) if start is None else start
        for _ in range(3):  # again up to the entry, without the lead, then the entry again
            fit = fit_spiral(track[: rw + 1], dip=True)
            new = _straight_from(track, fit)
            if new is None or abs(new - rw) <= 2:
                break
            rw = new
        if image is not None:
            track, rw, fit = _bone_bound(image, levels, track, rw, fit, notes)
    else:
        fit = fit_spiral(track)
        rw = len(track) - 1
        notes.append("no centreline: the round window is taken at the most basal contact")
    inner = track[: rw + 1]
    if len(inner) < MIN_CONTACTS:
        return CochlearFrame(False, reason="the array enters the cochlea too little to fix an axis", track=track)
    psi = fit.psi(inner[::-1])
    turn = float(np.degrees(psi[-1] - psi[0]))
    if turn < MIN_TURN_DEG:
        return CochlearFrame(False, reason=f"the array turns {turn:.0f} deg, too straight to fix the modiolar axis",
                             track=track)
    climb = float(fit.height(psi[-1]) - fit.height(psi[0]))
    z = fit.axis * (1.0 if climb >= 0 else -1.0)
    if abs(climb) < 0.3:
        notes.append(f"the spiral climbs only {abs(climb):.2f} mm: the apex side of the axis is uncertain")
    rwp = track[rw]
    origin = fit.centre + ((rwp - fit.centre) @ z) * z
    x = rwp - origin
    x -= (x @ z) * z
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    # the turning sense in the final frame: psi grows with sense about fit.axis
    sense = int(fit.sense * (1 if z @ fit.axis > 0 else -1))
    conf = _confidence(fit, turn, climb, has_line)
    return CochlearFrame(True, origin, x, y, z, sense, conf, "", rwp, rw, track, fit, notes)


def _bone_bound(image, levels, track: np.ndarray, rw: int, fit: SpiralFit, notes: list[str]):
    """(track, entry, fit): the entry moved to where the bone around the array ends.

    Apically, when the bone ends clearly before the entry the shape gives: the lead is not in the
    cochlea where no bone surrounds it, but bone around it does not make it inside (the
    round-window niche and the drilled facial recess are bone too), so never basally along the
    track. Where the track stops inside the bone (a label that ends at the last contact, the
    lead not seen), the spiral is continued past its end and the bone's end sought there.
    """
    from cochseg3d.clinical.round_window import WINDOW_MM, bone_entry
    from cochseg3d.greylevels import measure

    levels = measure(image) if levels is None else levels
    entry = bone_entry(image, track, levels, before=rw)
    s = cumulative_arc(track)
    if entry.index is None:
        longer = _past_the_end(image, levels, track, s, rw, fit, entry)
        if longer is not None:
            notes.append(longer[3])
            return longer[:3]
        notes.append(f"round window from the centreline's shape: {entry.evidence}")
        return track, rw, fit
    if s[rw] - s[entry.index] <= WINDOW_MM:  # within the fall's own window: the shape is finer
        return track, rw, fit
    notes.append(f"round window moved {s[rw] - s[entry.index]:.1f} mm apically, to the end of the bone: "
                 f"{entry.evidence}")
    return track, entry.index, fit_spiral(track[: entry.index + 1], dip=True)


def _past_the_end(image, levels, track: np.ndarray, s: np.ndarray, rw: int, fit: SpiralFit, entry):
    """(track, entry, fit, note) with the spiral continued past a track (arc length ``s``) that ends
    inside the bone and the round window found on it; None when the track does not end there.

    The array follows the spiral to the round window and leaves it along its tangent (as
    :func:`_junction` reads it), so each point of the continued spiral is tried as the exit: the
    bone around the spiral before it against the bone around its tangent after it. A shape entry
    more than the bone rule's window before the end counts only when bone surrounds the track from
    it to the end (a straight stretch of the array inside the cochlea), and only with an exit found.
    """
    from cochseg3d.clinical.round_window import BONE_HU, EXTEND_MM, MIN_INSIDE, WINDOW_MM, exit_fall, tangent_line

    if entry.profile[s >= s[-1] - WINDOW_MM].mean() < MIN_INSIDE:
        return None
    inner = s[-1] - s[rw] > WINDOW_MM
    # the shape's entry well inside the track is a straight stretch of the array, not its exit, when
    # the bone surrounds the track from it to the end: the spiral is then the whole track's
    if inner and _least_window(entry.profile, s, s[rw]) < MIN_INSIDE:
        return None
    along = fit_spiral(track, dip=True) if inner else fit
    spiral = np.concatenate([track, along.basal_extension(EXTEND_MM)])
    exit_ = exit_fall(image, spiral, levels.from_hu(BONE_HU), len(track) - 1)
    k = exit_.index
    if k is None and inner:
        return None  # nothing past the end to show for it: the shape's entry stands
    if k is None:
        return (track, rw, fit, "the array's track ends inside the bone and no exit from it follows on its spiral "
                                "(no clear fall of the bone around its tangent): the round window may lie beyond "
                                "the label, the angles too shallow")
    t = spiral[k] - spiral[k - 1]
    longer = np.concatenate([spiral[: k + 1], tangent_line(spiral[k], t / np.linalg.norm(t))])
    over = float(np.linalg.norm(spiral[k] - track[-1]))
    note = (f"the array's track ends inside the bone: round window {over:.1f} mm from its end, on its spiral "
            f"continued, where {exit_.evidence}")
    return longer, k, fit_spiral(longer[: k + 1], dip=True), note


def _least_window(profile: np.ndarray, s: np.ndarray, start_mm: float) -> float:
    """The lowest mean of ``profile`` over a window of the bone rule's length from ``start_mm`` on."""
    from cochseg3d.clinical.round_window import WINDOW_MM

    ends = s[(s >= start_mm + WINDOW_MM)]
    if not ends.size:
        return float(profile[s >= start_mm].mean())
    return float(min(profile[(s > e - WINDOW_MM) & (s <= e)].mean() for e in ends[::5]))


def _confidence(fit: SpiralFit, turn_deg: float, climb_mm: float, has_line: bool) -> float:
    """0..1 from the fit's residual, how much spiral there is, its climb and the entry's evidence."""
    c = np.clip((turn_deg - MIN_TURN_DEG) / (360.0 - MIN_TURN_DEG), 0, 1)
    c *= np.clip(1.5 - fit.rms_mm / 0.2, 0.2, 1.0)
    c *= np.clip(abs(climb_mm) / 0.6, 0.3, 1.0)
    c *= 1.0 if has_line else 0.6
    return float(c)


def angles_and_depths(frame: CochlearFrame, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative angle (deg, from the round window towards the apex) and depth along the track (mm).

    The track (apex -> base) is unwrapped from the round window, where the angle is 0; each point
    takes its nearest track sample's angle plus its own offset from that sample.
    """
    tr = frame.track
    loc = frame.to_local(tr)
    phi = np.unwrap(frame.turn_sense * np.arctan2(loc[:, 1], loc[:, 0]))
    phi -= phi[frame.round_window_index]
    s = cumulative_arc(tr)
    depth_track = s[frame.round_window_index] - s
    q = frame.to_local(pts)
    own = frame.turn_sense * np.arctan2(q[:, 1], q[:, 0])
    i = np.argmin(np.linalg.norm(tr[:, None] - np.atleast_2d(pts)[None], axis=2), axis=0)
    d_ang = np.angle(np.exp(1j * (own - phi[i])))
    # the contact's own offset along the track (between two samples of a coarse track)
    t = np.gradient(tr, axis=0)[i]
    t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-12
    ds = np.einsum("ij,ij->i", np.atleast_2d(pts) - tr[i], t)
    return np.degrees(phi[i] + d_ang), depth_track[i] - ds
