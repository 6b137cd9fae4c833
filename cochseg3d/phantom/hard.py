"""Hard scanner conditions (issue 12) in both CT models: patient motion, metal other than the array,
and the head partly outside the reconstructed field.

* ``motion_mm``: a rigid head motion during the acquisition (a drift, a sudden jerk or a nod: a
  rotation about a pivot in the neck plus a translation), ``motion_mm`` being the peak-to-peak
  displacement of the cochlea. The trajectory is centred so that the cochlea's time-averaged
  position is its true one (the truth stays where the image is, on average). The rtk model moves
  the object between projection views (each view's geometry is the inverse motion of the nominal
  one; the scanner reconstructs with the nominal geometry); the fast model averages the
  reconstructed volume over the cochlea's positions (blur for a drift, ghosts for a jerk; a
  translation only, and its noise is averaged too, so it comes out smoother than it should).
* ``screw``: a bone-anchored hearing-implant fixture: a threaded titanium cylinder (3.5-4 mm wide,
  3-4 mm long, with a 0.5 mm flange) in the temporal bone 20-40 mm posterior-superior of the
  cochlea, axis about lateral, moved inside the field (to its edge) where the field is smaller.
* ``dental_fillings``: N amalgam blobs (Hg/Ag/Sn/Cu, 11.6 g/cm^3) in tooth crowns (dentin / enamel)
  low and anterior in the field, as teeth are at the bottom of a large field.
  Both metals: their own attenuation (:mod:`.xray`) in the rtk projections, streaks from the fast
  model's streak model in the fast one. They are not electrode: label and contacts ignore them.
* ``fov_truncation``: the measured field (a cylinder about the rotation axis) shrinks to
  ``1 - t`` of the grid's inscribed radius and its axis moves towards the array (so the contacts
  stay in it): the head is cut on one side. rtk: the detector covers that field only and the
  scanner's extrapolation of the truncated rows falls off within a drawn taper (bright rim, cupping);
  fast: the same field mask with a drawn bright rim and inverse cupping. The label keeps only what
  lies inside the field (no annotator paints what is not reconstructed).

All draws come from a generator of their own (``[seed, 13]``): with every condition off a phantom
is bit-identical to one made before these existed, and turning one on changes no other draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from . import cbct, xray
from .anatomy import ScanGrid, rotation

RANDOM = "random"
OFF = {"motion_mm": 0.0, "screw": False, "dental_fillings": 0, "fov_truncation": 0.0}
MATERIAL_HU_60KEV = {m: float(1000.0 * (xray.mu_per_mm(m, 60.0) / xray.mu_per_mm("water", 60.0) - 1.0))
                     for m in ("titanium", "amalgam")}
MIN_GAP_MM = 5.0  # metal objects stay this far from the electrode path (outside the label band)


def resolve(seed: int, motion_mm, screw, dental_fillings, fov_truncation) -> tuple[dict, np.random.Generator]:
    """The conditions' values (``"random"`` drawn) and the generator of their details."""
    rng = np.random.default_rng([int(seed), 13])
    u = rng.random(4)  # drawn whatever is asked, so one "random" does not shift another's draw
    try:
        v = {"motion_mm": 0.3 + 1.7 * u[0] if motion_mm == RANDOM else float(motion_mm or 0.0),
             "screw": bool(u[1] < 0.5) if screw == RANDOM else bool(screw),
             "dental_fillings": int(u[2] * 5) if dental_fillings == RANDOM else int(dental_fillings or 0),
             "fov_truncation": 0.1 + 0.25 * u[3] if fov_truncation == RANDOM else float(fov_truncation or 0.0)}
    except (TypeError, ValueError):
        raise ValueError(f"motion_mm, dental_fillings and fov_truncation take a number or 'random'; got "
                         f"{motion_mm!r}, {dental_fillings!r}, {fov_truncation!r}") from None
    if not (0 <= v["motion_mm"] <= 20 and 0 <= v["dental_fillings"] <= 12 and 0 <= v["fov_truncation"] <= 0.6):
        raise ValueError(f"motion_mm must be in [0, 20], dental_fillings in 0..12 and fov_truncation in [0, 0.6]; "
                         f"got {motion_mm}, {dental_fillings}, {fov_truncation}")
    return v, rng


def any_on(v: dict) -> bool:
    return any(v[k] for k in OFF)


@dataclass
class Motion:
    """Rigid motion x -> R(s) x + b(s) (LPS mm) at scan time ``s`` in [0, 1)."""

    kind: str
    pivot: np.ndarray
    axis: np.ndarray
    theta_rad: float  # rotation at full excursion
    shift: np.ndarray  # translation at full excursion (mm)
    tau: float  # jerk: when; nod: phase
    cochlea: np.ndarray
    centre: np.ndarray = field(default_factory=lambda: np.zeros(3))  # subtracted: mean cochlea displacement 0

    def g(self, s) -> np.ndarray:
        s = np.asarray(s, float)
        if self.kind == "drift":
            return s
        if self.kind == "jerk":  # a sudden move over 5 % of the scan
            return np.clip((s - self.tau) / 0.05 + 0.5, 0, 1)
        return 0.5 - 0.5 * np.cos(2 * np.pi * (s + self.tau))  # nod: out and back

    def transform(self, s: float) -> tuple[np.ndarray, np.ndarray]:
        g = float(self.g(s))
        R = rotation(self.axis, self.theta_rad * g)
        return R, self.pivot - R @ self.pivot + g * self.shift - self.centre

    def displacement(self, s) -> np.ndarray:
        """Cochlea displacement (LPS mm) at times ``s`` (n, 3)."""
        out = []
        for si in np.atleast_1d(s):
            R, b = self.transform(float(si))
            out.append(R @ self.cochlea + b - self.cochlea)
        return np.array(out)

    def to_dict(self) -> dict:
        d = self.displacement(np.linspace(0, 1, 41))
        return {"kind": self.kind, "pivot_lps_mm": self.pivot.tolist(), "axis_lps": self.axis.tolist(),
                "rotation_deg": float(np.degrees(self.theta_rad)), "translation_mm": self.shift.tolist(),
                "tau": self.tau, "mean_offset_mm": self.centre.tolist(),
                "cochlea_displacement_lps_mm": np.round(d, 4).tolist(),
                "peak_to_peak_mm": float(np.linalg.norm(d.max(0) - d.min(0)))}


def draw_motion(amp_mm: float, C: np.ndarray, E: np.ndarray, rng: np.random.Generator) -> Motion:
    kind = str(rng.choice(["drift", "jerk", "nod"]))
    pivot = C + E @ np.array([-60.0, -10.0, -90.0])  # the neck, below the head's centre
    axis = rng.normal(size=3)
    axis[0] *= 2.0  # nodding (about left-right) dominates
    axis /= np.linalg.norm(axis)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    r = float(rng.uniform(0.2, 0.8))  # share of the rotation in the cochlea's motion
    tau = float(rng.uniform(0.2, 0.8))
    v_rot = np.cross(axis, C - pivot)  # cochlea velocity per radian
    m = Motion(kind, pivot, axis, r * amp_mm / max(np.linalg.norm(v_rot), 1e-6), (1 - r) * amp_mm * direction,
               tau, C.copy())
    for _ in range(3):  # scale to the asked peak-to-peak displacement (rotation and shift add as vectors)
        d = m.displacement(np.linspace(0, 1, 201))
        ptp = float(np.linalg.norm(d.max(0) - d.min(0)))
        if ptp > 1e-9:
            m.theta_rad *= amp_mm / ptp
            m.shift = m.shift * (amp_mm / ptp)
    m.centre = m.displacement(np.linspace(0, 1, 720, endpoint=False)).mean(0)
    return m


def motion_blur(img: np.ndarray, grid: ScanGrid, mo: Motion, n_t: int = 24) -> np.ndarray:
    """The volume averaged over the cochlea's positions (``[k, j, i]``): the fast model's motion."""
    d = mo.displacement((np.arange(n_t) + 0.5) / n_t)
    vox = np.round(d[:, ::-1] / np.asarray(grid.spacing_mm[::-1]), 2)  # (dz, dy, dx) voxels
    shifts, counts = np.unique(vox, axis=0, return_counts=True)
    out = np.zeros_like(img)
    for sh, c in zip(shifts, counts):
        out += np.float32(c / n_t) * ndimage.shift(img, sh, order=1, mode="nearest")
    return out


@dataclass
class Sparse:
    """Partial-volume fractions of one object on the scanner grid."""

    material: str  # "titanium", "amalgam" or "tooth" (HU in ``hu``)
    kji: np.ndarray
    frac: np.ndarray
    hu: float


def _fraction(grid: ScanGrid, centre, half_mm: float, inside, material: str, hu: float, ss: int = 3) -> Sparse | None:
    sl = grid.box(np.asarray(centre, float), np.full(3, half_mm))
    if sl is None:
        return None
    sp = np.asarray(grid.spacing_mm)
    ks, js, is_ = (np.arange(s.start, s.stop) for s in sl)
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    frac = 0.0
    for oz in offs:
        for oy in offs:
            for ox in offs:
                z = grid.origin_mm[2] + sp[2] * (ks + oz)
                y = grid.origin_mm[1] + sp[1] * (js + oy)
                x = grid.origin_mm[0] + sp[0] * (is_ + ox)
                Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
                frac = frac + inside(np.stack([X, Y, Z], -1) - np.asarray(centre)).astype(np.float32)
    frac = np.asarray(frac, np.float32) / ss**3
    idx = np.nonzero(frac > 0)
    if len(idx[0]) == 0:
        return None
    kji = np.stack([idx[0] + sl[0].start, idx[1] + sl[1].start, idx[2] + sl[2].start], 1)
    return Sparse(material, kji, frac[idx], hu)


def screw_fraction(grid: ScanGrid, centre, axis, radius: float, length: float) -> Sparse | None:
    """Threaded titanium fixture (0.6 mm pitch, 0.25 mm threads) with a flange at its outer end."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)

    def inside(q):
        t = q @ axis  # along the axis, 0 = middle, +length/2 = the outer (flange) end
        rr = np.linalg.norm(q - t[..., None] * axis, axis=-1)
        thread = radius - 0.25 * (0.5 + 0.5 * np.sin(2 * np.pi * t / 0.6))
        body = (np.abs(t) <= length / 2) & (rr <= thread)
        flange = (t > length / 2) & (t <= length / 2 + 0.5) & (rr <= radius + 0.5)
        return body | flange

    return _fraction(grid, centre, length / 2 + radius + 1.0, inside, "titanium", MATERIAL_HU_60KEV["titanium"])


def ellipsoid_fraction(grid: ScanGrid, centre, rows, semi, material: str, hu: float) -> Sparse | None:
    rows, semi = np.asarray(rows, float), np.asarray(semi, float)
    return _fraction(grid, centre, float(semi.max()) + grid.h,
                     lambda q: np.sum(((q @ rows.T) / semi) ** 2, axis=-1) <= 1.0, material, hu)


def _gap(p_lps: np.ndarray, path: np.ndarray) -> float:
    return float(np.min(np.linalg.norm(path - p_lps, axis=1)))


def _inside_field(grid: ScanGrid, pt: np.ndarray, margin: float, field_c, field_r) -> np.ndarray:
    """``pt`` moved inside the grid box (and the field cylinder) by ``margin`` mm."""
    lo = np.asarray(grid.origin_mm) + margin
    hi = np.asarray(grid.origin_mm) + (np.array(grid.shape[::-1]) - 1) * np.asarray(grid.spacing_mm) - margin
    q = np.clip(pt, lo, np.maximum(lo, hi))
    if field_r is not None:
        d = q[:2] - field_c
        r = float(np.linalg.norm(d))
        if r > field_r - margin and r > 0:
            q[:2] = field_c + d * max(field_r - margin, 0) / r
    return q


def place_screw(grid: ScanGrid, C, E, path: np.ndarray, field_c, field_r, rng) -> tuple[Sparse | None, dict]:
    radius, length = float(rng.uniform(1.75, 2.0)), float(rng.uniform(3.0, 4.0))
    best = None
    for _ in range(40):
        dist = rng.uniform(20, 40)
        ang = np.radians(rng.uniform(25, 65))  # posterior-superior
        lat = rng.uniform(10, 22)
        v = np.array([lat, -np.cos(ang) * dist, np.sin(ang) * dist])
        want = C + E @ v
        pt = _inside_field(grid, want, length / 2 + radius + 0.5, field_c, field_r)
        gap = _gap(pt, path)
        if best is None or gap > best[1]:
            best = (pt, gap, want)
        if gap >= MIN_GAP_MM + radius + length / 2:
            break
    pt, gap, want = best
    axis = E @ np.array([1.0, rng.normal(0, 0.2), rng.normal(0, 0.2)])  # about perpendicular to the skull
    axis /= np.linalg.norm(axis)
    geo = {"centre_lps_mm": pt.tolist(), "axis_lps": axis.tolist(), "radius_mm": radius, "length_mm": length,
           "wanted_centre_lps_mm": want.tolist(), "moved_into_field_mm": float(np.linalg.norm(pt - want)),
           "gap_to_electrode_mm": gap, "material": "titanium"}
    return screw_fraction(grid, pt, axis, radius, length), geo


def place_fillings(n: int, grid: ScanGrid, path: np.ndarray, field_c, field_r, rng) -> tuple[list[Sparse], list]:
    """``n`` amalgam fillings, each in a tooth crown, in the lowest fifth of the field, anterior half."""
    objs, geos = [], []
    sp = np.asarray(grid.spacing_mm)
    lo = np.asarray(grid.origin_mm)
    ext = (np.array(grid.shape[::-1]) - 1) * sp
    for _ in range(n):
        best = None
        semi = np.array([rng.uniform(1.0, 2.5), rng.uniform(1.0, 2.0), rng.uniform(0.7, 1.5)])
        rows = rotation(rng.normal(size=3), rng.uniform(0, np.pi))
        crown = np.array([rng.uniform(3.5, 4.5), rng.uniform(4.0, 5.0), rng.uniform(3.5, 5.0)])
        for _ in range(30):
            pt = lo + ext * np.array([rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.5), rng.uniform(0.03, 0.2)])
            pt = _inside_field(grid, pt, float(semi.max()) + 0.5, field_c, field_r)
            gap = _gap(pt, path)
            if best is None or gap > best[1]:
                best = (pt, gap)
            if gap >= MIN_GAP_MM + semi.max():
                break
        pt, gap = best
        tooth_hu = float(rng.uniform(1800, 2600))
        for o in (ellipsoid_fraction(grid, pt + rows.T @ np.array([0, 0, -1.5]), rows, crown, "tooth", tooth_hu),
                  ellipsoid_fraction(grid, pt, rows, semi, "amalgam", MATERIAL_HU_60KEV["amalgam"])):
            if o is not None:
                objs.append(o)
        geos.append({"centre_lps_mm": pt.tolist(), "semi_axes_mm": semi.tolist(), "rows": rows.tolist(),
                     "tooth_hu": tooth_hu, "gap_to_electrode_mm": gap, "material": "amalgam"})
    return objs, geos


def truncation_field(t: float, grid: ScanGrid, centre_xy, radius: float, contacts: np.ndarray,
                     rng) -> tuple[np.ndarray, float, dict]:
    """Measured field (axis x, y; radius) of truncation ``t``: shrunk, its axis moved towards the contacts
    so that they stay 3 mm inside; ``t`` is lowered where they would not."""
    centre_xy = np.asarray(centre_xy, float)
    toward = contacts[:, :2].mean(0) - centre_xy
    if np.linalg.norm(toward) < 1e-6:
        toward = rng.normal(size=2)
    toward = toward / np.linalg.norm(toward)
    t_eff = t
    while True:
        r = (1 - t_eff) * radius
        c = centre_xy + toward * t_eff * radius
        if t_eff <= 0 or np.max(np.linalg.norm(contacts[:, :2] - c, axis=1)) <= r - 3.0:
            break
        t_eff = max(0.0, t_eff - 0.02)
    info = {"requested": t, "effective": float(t_eff), "axis_xy_lps_mm": c.tolist(), "radius_mm": float(r),
            "grid_radius_mm": float(radius), "rim_hu": float(rng.uniform(150, 500)),
            "rim_width_mm": float(rng.uniform(1.5, 4.0)), "inverse_cupping_hu": float(rng.uniform(30, 150)),
            "extrapolation_taper_mm": float(rng.uniform(80, 300))}
    return c, float(r), info


@dataclass
class Plan:
    """Everything the conditions add to one patient; ``record`` goes into ``params``."""

    values: dict
    record: dict
    motion: Motion | None = None
    objects: list = field(default_factory=list)  # Sparse
    field_xy: np.ndarray | None = None
    field_r: float | None = None
    rng: np.random.Generator | None = None  # the fast model's streak noise of the extra metal

    def field_mask(self, grid: ScanGrid) -> np.ndarray | None:
        if self.field_r is None:
            return None
        r = np.sqrt((grid.xs - self.field_xy[0])[None, :] ** 2 + (grid.ys - self.field_xy[1])[:, None] ** 2)
        return r > self.field_r

    def metals(self) -> list:
        return [o for o in self.objects if o.material != "tooth"]


def plan(values: dict, rng, grid: ScanGrid, C, E, path: np.ndarray, contacts: np.ndarray, centre_xy,
         grid_radius: float, cylinder: bool) -> Plan:
    """Draw the conditions' details in a fixed order (motion, truncation, screw, fillings)."""
    pl = Plan(values, dict(values), rng=rng)
    if values["motion_mm"] > 0:
        pl.motion = draw_motion(values["motion_mm"], np.asarray(C, float), np.asarray(E, float), rng)
        pl.record["motion"] = pl.motion.to_dict()
    field_c, field_r = np.asarray(centre_xy, float), (grid_radius if cylinder else None)
    if values["fov_truncation"] > 0:
        pl.field_xy, pl.field_r, pl.record["truncation"] = truncation_field(
            values["fov_truncation"], grid, centre_xy, grid_radius, contacts, rng)
        field_c, field_r = pl.field_xy, pl.field_r
    if values["screw"]:
        obj, pl.record["screw_geometry"] = place_screw(grid, C, E, path, field_c, field_r, rng)
        pl.objects += [obj] if obj is not None else []
    if values["dental_fillings"]:
        objs, pl.record["fillings"] = place_fillings(values["dental_fillings"], grid, path, field_c, field_r, rng)
        pl.objects += objs
    return pl


def displaced(true_hu: np.ndarray, pl: Plan) -> np.ndarray:
    """True HU with the tooth crowns painted and the metal's volume removed (the rtk model's input)."""
    out = true_hu.copy()
    for o in pl.objects:
        k, j, i = o.kji.T
        keep = out[k, j, i] * (1 - o.frac)
        out[k, j, i] = keep + (o.frac * np.float32(o.hu) if o.material == "tooth" else 0)
    return out


def apply_fast(img: np.ndarray, true_hu: np.ndarray, pl: Plan, grid: ScanGrid, p: dict, streak_kw: dict,
               rng) -> np.ndarray | None:
    """The fast model's conditions on the reconstructed HU ``img`` (in place; before gain / offset);
    returns the truncated field's outside mask (or None)."""
    sp = grid.spacing_mm
    sig = [p["psf_sigma_mm"] / s for s in sp[::-1]]
    tail = [p["psf_tail_sigma_mm"] / s for s in sp[::-1]]
    w = p["psf_tail_weight"]
    for o in pl.objects:
        pad = int(np.ceil(3 * p["psf_tail_sigma_mm"] / min(sp))) + 1
        lo = np.maximum(o.kji.min(0) - pad, 0)
        hi = np.minimum(o.kji.max(0) + pad + 1, np.array(grid.shape))
        k, j, i = o.kji.T
        d = np.zeros(tuple(hi - lo), np.float32)
        d[k - lo[0], j - lo[1], i - lo[2]] = o.frac * (np.float32(o.hu) - true_hu[k, j, i])
        blur = ndimage.gaussian_filter(d, sig, truncate=3.0)
        if o.material != "tooth":  # glare tail of bright metal, and its streaks
            blur = (1 - w) * blur + w * ndimage.gaussian_filter(d, tail, truncate=3.0)
            mu = np.zeros((hi[0] - lo[0], grid.shape[1], grid.shape[2]), np.float32)
            mu[k - lo[0], j, i] = o.frac * np.float32(xray.mu_per_mm(o.material, 60.0))
            kw = dict(streak_kw, strength=1.0)  # the physical error: a drawn gain past 1 would turn big metal dark
            img[lo[0]:hi[0]] += cbct.streak_image(grid, mu, (int(lo[0]), int(hi[0])), rng=rng, **kw)
        img[tuple(slice(a, b) for a, b in zip(lo, hi))] += blur
    if pl.motion is not None:
        img[...] = motion_blur(img, grid, pl.motion)
    out = pl.field_mask(grid)
    if out is not None:
        tr = pl.record["truncation"]
        r = np.sqrt((grid.xs - pl.field_xy[0])[None, :] ** 2 + (grid.ys - pl.field_xy[1])[:, None] ** 2)
        inner = np.minimum(r, pl.field_r)
        bright = tr["rim_hu"] * np.exp(-(pl.field_r - inner) / tr["rim_width_mm"])
        bright += tr["inverse_cupping_hu"] * (inner / pl.field_r) ** 2
        img += bright.astype(np.float32)[None]
    return out
