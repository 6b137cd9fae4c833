"""Physics-based CBCT of a phantom with itk-rtk: polychromatic forward projection, detector, FDK.

Arrays are ``[k, j, i]`` on the axis-aligned scanner grid; the rotation axis is the grid's k (LPS z)
axis through the isocentre (the field-of-view centre). RTK's world frame is ``(x, y, z)_rtk =
(x, z, y)_LPS - isocentre`` (its gantry turns about its y axis).

Chain (parameters drawn per patient by :func:`draw_rtk_params`):

1. materials: the true HU become a water-equivalent density and a cortical-bone fraction
   (:func:`.xray.decompose`), the implant's metal fraction is platinum-iridium;
2. line integrals of the three basis materials with RTK's Joseph projector over ``n_views`` views
   of a full circle on a flat panel (source-isocentre ``sid_mm``, source-detector ``sdd_mm``: the
   cone angle follows). The anatomy is projected at >= 0.4 mm voxels onto a detector of that pitch;
   around the contacts a fine box (output voxels) adds the detail the coarse voxels lack, projected
   onto a fine detector window that follows the box's shadow, so the metal keeps full resolution;
3. the rest of the head: the painted grid is a crop, so the head around it is an elliptic water
   cylinder with a cortical-bone skull shell, added analytically in the projection domain (its
   chord minus the part inside the grid, which the grid's own content replaces). The detector is
   narrower than the head (it covers the reconstructed field only), so the projections are
   truncated as in any small-field CBCT; the reconstruction extrapolates them smoothly;
4. polychromatic transmission over 4-6 energy bins of a filtered 70-120 kVp spectrum (beam
   hardening), detector blur, scatter (a smooth, wide blur of the primary, 2-15 % of it), Poisson
   counts, a detector floor of a few photons (photon starvation behind the metal), ``-log``;
5. the scanner's water pre-correction (partly: residual cupping), FDK (cosine weights and
   back-projection by RTK, Hann-windowed ramp), HU = 1000 * (water-equivalent density - 1).

Hard conditions (:mod:`.hard`, via :class:`Extras`): patient motion moves the object between views
(each view's projection geometry takes the inverse motion; FDK uses the nominal one), titanium and
amalgam objects are two more basis materials projected at the coarse voxels with their own
attenuation, and a truncated field narrows the detector about a moved rotation axis while the
scanner's extrapolation of the truncated rows falls off within a taper.

Approximations: the fine box's noise is not simulated at fine scale (its detail term is the mean
signal's; the noise grain is that of the >= 0.4 mm detector everywhere, which at ~0.25 mm PSF is
close to a real panel's); outside the box the anatomy's sub-0.4 mm detail passes the system
linearly (image-domain, blurred by the fine PSF); scatter is a blur of the primary, not transported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from . import xray
from .anatomy import ScanGrid, trilinear
from .rtk_geometry import (Detector, RtkVolume, circular_geometry, fdk, head_basis, head_chords, joseph,
                           moved_geometry, shadow_window)

COARSE_MM = 0.4  # voxel size (mm) at which the anatomy is projected
BOX_MARGIN_MM = 2.0  # fine box around the contacts
BLEND_MM = 1.0  # width of the fine box's blend into the coarse reconstruction


def draw_rtk_params(rng: np.random.Generator) -> dict[str, Any]:
    """All random draws of the rtk model, in a fixed order (a generator of its own)."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    return {
        "n_views": int(rng.integers(180, 481)),
        "first_angle_deg": u(0, 360),
        "sid_mm": u(450, 700),
        "sdd_over_sid": u(1.3, 1.9),
        "kvp": u(70, 120),
        "al_mm": u(2.0, 4.0),
        "cu_mm": float(rng.choice([0.0, u(0.05, 0.3)])),
        "n_bins": int(rng.integers(4, 7)),
        "photons_per_pixel": float(10 ** rng.uniform(4.6, 5.6)),
        "scatter_fraction": u(0.02, 0.15),
        "scatter_sigma_mm": u(15, 40),
        "count_floor": u(1, 5),
        "detector_blur_px": u(0.3, 0.8),
        "hann_cut": u(0.6, 1.0),
        "water_correction": u(0.6, 1.0),
        "extrapolation_scale": u(0.95, 1.05),
        "skull_mm": u(4, 8),
    }


def rtk_params(seed: int, overrides: dict[str, Any]) -> tuple[dict[str, Any], np.random.Generator]:
    """The rtk draws of patient ``seed`` with ``overrides`` applied, and the generator of its noise.

    A generator of its own (``[seed, 7]``): the fast model's draws, anatomy and implant are unchanged.
    """
    rng = np.random.default_rng([int(seed), 7])
    p = draw_rtk_params(rng)
    unknown = set(overrides) - set(p)
    if unknown:
        raise ValueError(f"unknown rtk override(s) {sorted(unknown)}; known: {sorted(p)}")
    p.update(overrides)
    if int(p["n_views"]) < 8 or not 1 <= int(p["n_bins"]) <= 12:
        raise ValueError(f"rtk n_views must be >= 8 and n_bins 1..12, got {p['n_views']}, {p['n_bins']}")
    p["n_views"], p["n_bins"] = int(p["n_views"]), int(p["n_bins"])
    return p, rng


def _block_mean(a: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    pad = [(0, (-s) % q) for s, q in zip(a.shape, f)]
    a = np.pad(a, pad, mode="edge")
    n = [s // q for s, q in zip(a.shape, f)]
    return a.reshape(n[0], f[0], n[1], f[1], n[2], f[2]).mean(axis=(1, 3, 5), dtype=np.float32)


def _up_coords(n_fine: int, f: int, start: int = 0) -> np.ndarray:
    """Coarse-index coordinates of fine indices ``start .. start + n_fine - 1`` (block factor ``f``)."""
    return ((start + np.arange(n_fine)) - (f - 1) / 2) / f


def _up(coarse: np.ndarray, f, starts, sizes) -> np.ndarray:
    coords = [np.clip(_up_coords(n, q, s), 0, c - 1) for n, q, s, c in zip(sizes, f, starts, coarse.shape)]
    return trilinear(coarse, coords)


def _signal(A: np.ndarray, mus: np.ndarray, w: np.ndarray, X=(), mx=None) -> np.ndarray:
    """Detected polychromatic signal (flat field 1) of basis line integrals ``A`` (..., 3) (mm) and
    of extra materials' line integrals ``X`` (each shaped like ``A[..., 0]``; ``mx[m, bin]`` /mm)."""
    out = np.zeros(A.shape[:-1], np.float32)
    for b, (m, wb) in enumerate(zip(mus, w)):
        att = A @ m.astype(np.float32)
        for x, mxm in zip(X, () if mx is None else mx):
            att += np.float32(mxm[b]) * x
        out += np.float32(wb) * np.exp(-att)
    return out


@dataclass
class Extras:
    """What :mod:`.hard` adds to an acquisition (all optional).

    Attributes:
        motion: LPS rigid motion ``transform(s) -> (R, b)`` (x -> R x + b) at scan time s in [0, 1).
        metals: objects with ``material`` (an :mod:`.xray` material), ``kji`` and ``frac`` (sparse).
        fov_radius_mm: radius of the measured field about the rotation axis (detector width).
        taper_mm: the scanner's extrapolation of truncated rows falls to zero within this (isocentre mm).
        blur: applied to the image-domain sub-voxel detail (the motion blur of what is not projected).
    """

    motion: Any = None
    metals: list = field(default_factory=list)
    fov_radius_mm: float | None = None
    taper_mm: float | None = None
    blur: Callable | None = None


def _motion_geometry(geometry, motion, n: int, iso: np.ndarray):
    """Per-view projection geometry of the moving object (LPS motion -> RTK frame (x, z, y) - iso)."""
    Q = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])
    tr = []
    for i in range(n):
        R, b = motion.transform(i / n)
        tr.append((Q @ R @ Q.T, Q @ (R @ iso + b - iso)))
    return moved_geometry(geometry, tr)


def _box_of(fld, grid: ScanGrid) -> tuple[np.ndarray, np.ndarray] | None:
    sel = fld.contact > 0.01
    if not np.any(sel):
        return None
    marg = np.ceil(BOX_MARGIN_MM / np.asarray(grid.spacing_mm)[::-1]).astype(int)
    lo = np.maximum(fld.kji[sel].min(0) - marg, 0)
    hi = np.minimum(fld.kji[sel].max(0) + marg + 1, np.array(grid.shape))
    return lo, hi


@dataclass
class _Scan:
    """One rtk acquisition: geometry, coarse and fine volumes, detector and their line integrals."""

    p: dict
    grid: ScanGrid
    f: tuple[int, int, int]  # block factor (k, j, i) of the coarse voxels
    geometry: Any
    mag: float
    vol_c: RtkVolume
    basis_c: np.ndarray  # coarse (water, bone, metal), the grid's own content
    det: Detector
    head: tuple | None  # (centre in RTK x, z; semi-axes mm) or None
    box: tuple[np.ndarray, np.ndarray] | None = None  # fine box [lo, hi) (k, j, i)
    vol_b: RtkVolume | None = None
    window: tuple[slice, slice, Detector] | None = None
    extras: Extras = field(default_factory=Extras)
    geometry_p: Any = None  # the projections' geometry (the moving object's), else ``geometry``
    extra_c: list = field(default_factory=list)  # (material, coarse fraction) of extra metals


def _setup(true_hu, fld, grid, iso, p, fov_cylinder, head_center_xy, head_axes_mm,
           extras: Extras) -> tuple[_Scan, np.ndarray]:
    """Materials on the coarse grid, geometry, detector; returns the scan and the coarse volume to project."""
    sp = np.asarray(grid.spacing_mm, float)  # (dx, dy, dz)
    nz, ny, nx = grid.shape
    fxy = max(1, int(round(COARSE_MM / min(sp[0], sp[1]))))
    fz = max(1, int(round(COARSE_MM / sp[2])))
    f = (fz, fxy, fxy)
    rho, bone = xray.decompose(true_hu)
    k, j, i = fld.kji.T
    shape_c = tuple(-(-s // q) for s, q in zip(grid.shape, f))
    basis_c = np.empty(shape_c + (3,), np.float32)
    basis_c[..., 0] = _block_mean(rho, f)
    basis_c[..., 1] = _block_mean(bone, f)
    mc = np.zeros(shape_c, np.float32)
    np.add.at(mc, (k // fz, j // fxy, i // fxy), fld.metal / np.float32(fz * fxy * fxy))
    basis_c[..., 2] = mc
    sp_c = sp * np.array([fxy, fxy, fz])
    org_c = np.asarray(grid.origin_mm) + (np.array([fxy, fxy, fz]) - 1) / 2 * sp
    proj_c = basis_c.copy()
    head = None
    if head_axes_mm is not None:  # the grid replaces the head model's content inside it
        head = ((head_center_xy[0] - iso[0], head_center_xy[1] - iso[1]), tuple(head_axes_mm))
        hw, hb = head_basis(org_c[0] + sp_c[0] * np.arange(shape_c[2]), org_c[1] + sp_c[1] * np.arange(shape_c[1]),
                            head_center_xy, head_axes_mm, p["skull_mm"])
        proj_c[..., 0] -= hw[None]
        proj_c[..., 1] -= hb[None]
    # detector: covers the reconstructed field (narrower than the head), pitch of the coarse voxels
    sid = p["sid_mm"]
    sdd = sid * p["sdd_over_sid"]
    r_fov = 0.5 * (min(nx * sp[0], ny * sp[1]) if fov_cylinder else np.hypot(nx * sp[0], ny * sp[1])) + sp_c[0]
    if extras.fov_radius_mm is not None:
        r_fov = extras.fov_radius_mm + sp_c[0]
    u_half = sdd * r_fov / np.sqrt(sid**2 - r_fov**2)
    v_half = sdd * (nz * sp[2] / 2 + sp_c[2]) / (sid - r_fov)
    du, dv = sp_c[0] * sdd / sid, sp_c[2] * sdd / sid
    nu, nv = 2 * int(np.ceil(u_half / du)), 2 * int(np.ceil(v_half / dv))
    det = Detector(-(nu - 1) / 2 * du, -(nv - 1) / 2 * dv, du, dv, nu, nv)
    scan = _Scan(p, grid, f, circular_geometry(p), sdd / sid, RtkVolume(org_c, sp_c, shape_c, iso), basis_c, det, head,
                 extras=extras)
    scan.geometry_p = scan.geometry
    if extras.motion is not None:
        scan.geometry_p = _motion_geometry(scan.geometry, extras.motion, p["n_views"], np.asarray(iso, float))
    for o in extras.metals:
        x = np.zeros(shape_c, np.float32)
        np.add.at(x, (o.kji[:, 0] // fz, o.kji[:, 1] // fxy, o.kji[:, 2] // fxy), o.frac / np.float32(fz * fxy * fxy))
        scan.extra_c.append((o.material, x))
    box = _box_of(fld, grid) if max(f) > 1 else None
    if box is not None:
        scan.box = box
        scan.vol_b = RtkVolume(np.asarray(grid.origin_mm) + box[0][::-1] * sp, sp, tuple(box[1] - box[0]), iso)
        geos = scan.geometry if scan.geometry_p is scan.geometry else [scan.geometry, scan.geometry_p]
        scan.window = shadow_window(geos, scan.vol_b, det, p["n_views"], fxy, fz)
    return scan, proj_c


def _project(sc: _Scan, proj_c: np.ndarray, true_hu: np.ndarray, fld) -> tuple[np.ndarray, np.ndarray | None]:
    """Basis line integrals (views, v, u, 3) on the detector, and on the fine window (or None)."""
    n, geo = sc.p["n_views"], sc.geometry_p
    A = joseph(sc.vol_c.to_itk(proj_c), sc.det, geo, n, 3)
    if sc.head is not None:
        w_head, b_head = head_chords(geo, sc.det, sc.head[0], sc.head[1], sc.p["skull_mm"])
        A[..., 0] += w_head
        A[..., 1] += b_head
    sc.extra_c = [(m, joseph(sc.vol_c.to_itk(x), sc.det, geo, n, 0)) for m, x in sc.extra_c]  # now line integrals
    if sc.box is None:
        return A, None
    lo, hi = sc.box
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    rho, bone = xray.decompose(true_hu[sl])
    mf = np.zeros(tuple(hi - lo), np.float32)
    inb = np.all((fld.kji >= lo) & (fld.kji < hi), axis=1)
    mf[tuple((fld.kji[inb] - lo).T)] = fld.metal[inb]
    detail = np.empty(tuple(hi - lo) + (3,), np.float32)  # what the coarse voxels lack
    for c, fine in enumerate((rho, bone, mf)):
        detail[..., c] = fine - _up(sc.basis_c[..., c], sc.f, lo, hi - lo)
    sv, su, det_f = sc.window
    B = joseph(sc.vol_b.to_itk(detail), det_f, geo, n, 3)
    Af = np.stack([trilinear(A[..., c], _win_coords(sc, det_f)) for c in range(3)], axis=-1)
    Af += B
    Af[..., 2] = np.maximum(Af[..., 2], 0)
    return A, Af


def _win_coords(sc: _Scan, det_f: Detector, relative: bool = False) -> list[np.ndarray]:
    """Coarse-detector coordinates (views, v, u) of the fine window's pixels (``relative``: to the window)."""
    sv, su, _ = sc.window
    v0, u0 = (0, 0) if relative else (sv.start, su.start)
    nv, nu = (sv.stop - sv.start, su.stop - su.start) if relative else (sc.det.nv, sc.det.nu)
    return [np.arange(sc.p["n_views"]), np.clip(_up_coords(det_f.nv, sc.f[0]) + v0, 0, nv - 1),
            np.clip(_up_coords(det_f.nu, sc.f[2]) + u0, 0, nu - 1)]


def _detector(sc: _Scan, A: np.ndarray, Af: np.ndarray | None, rng) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """Water-corrected line integrals (mm of water): the detector's, and the fine window's detail."""
    p, n = sc.p, sc.p["n_views"]
    fz, _, fxy = sc.f
    e_b, w_b = xray.spectrum(p["kvp"], p["al_mm"], p["cu_mm"], p["n_bins"])
    mus = np.stack([xray.mu_per_mm(m, e_b) for m in ("water", "bone", "platinum_iridium")], axis=1)
    X = [x for _, x in sc.extra_c]
    mx = [xray.mu_per_mm(m, e_b) for m, _ in sc.extra_c]
    wc = xray.WaterCorrection(e_b, w_b, strength=p["water_correction"])
    n0, floor, blur = p["photons_per_pixel"], p["count_floor"], p["detector_blur_px"]
    E = ndimage.gaussian_filter(_signal(A, mus, w_b, X, mx), (0, blur / fz, blur / fxy))
    if Af is not None:
        sv, su, det_f = sc.window
        Xf = [trilinear(x, _win_coords(sc, det_f)) for x in X]
        Ef = ndimage.gaussian_filter(_signal(Af, mus, w_b, Xf, mx), (0, blur, blur))
        nb = (n, Ef.shape[1] // fz, fz, Ef.shape[2] // fxy, fxy)
        E[:, sv, su] = Ef.reshape(nb).mean(axis=(2, 4))
    sp_c = sc.vol_c.spacing
    sig = np.array([0, p["scatter_sigma_mm"] / sp_c[2], p["scatter_sigma_mm"] / sp_c[0]]) / [1, 4, 4]
    S = np.float32(p["scatter_fraction"]) * ndimage.gaussian_filter(E[:, ::4, ::4], sig)
    S = trilinear(S, [np.arange(n), np.arange(sc.det.nv) / 4, np.arange(sc.det.nu) / 4])
    mean = E + S
    counts = np.maximum(rng.poisson(n0 * mean).astype(np.float32), np.float32(floor))
    L = wc(-np.log(counts / np.float32(n0)))
    if Af is None:
        return L, None, (e_b, w_b)
    # the fine window: the mean signal's detail at full resolution; the noise is the binned pixels'
    Lf = wc(-np.log(np.maximum(Ef + trilinear(S, _win_coords(sc, det_f)), np.float32(floor / n0))))
    Lb = Lf.reshape(nb).mean(axis=(2, 4))
    L[:, sv, su] += Lb - wc(-np.log(np.maximum(mean[:, sv, su], np.float32(floor / n0))))
    return L, Lf - trilinear(Lb, _win_coords(sc, det_f, relative=True)), (e_b, w_b)


def _reconstruct(sc: _Scan, L: np.ndarray, dL: np.ndarray | None, true_hu: np.ndarray) -> np.ndarray:
    """Water-equivalent density on the scanner grid: coarse FDK, fine box FDK, sub-voxel detail."""
    p, grid = sc.p, sc.grid
    det = sc.det
    ext = None
    if sc.head is not None:  # the scanner's head model extends the truncated rows (drawn misfit of its size)
        n_ext = max(0, min(int(np.ceil(2.2 * max(sc.head[1]) * sc.mag / det.du)), (1024 - det.nu) // 2))
        wide = Detector(det.u0 - n_ext * det.du, det.v0, det.du, det.dv, det.nu + 2 * n_ext, det.nv)
        axes = tuple(a * p["extrapolation_scale"] for a in sc.head[1])
        bone_w = np.float32(xray.bone_hu() / 1000.0 + 1.0)  # bone as water-equivalent path

        taper = np.ones(wide.nu, np.float32)
        if sc.extras.taper_mm is not None:  # a cruder extrapolation: it falls to zero within the taper
            d = np.maximum(np.maximum(n_ext - np.arange(wide.nu), np.arange(wide.nu) - (n_ext + det.nu - 1)), 0)
            w_px = max(sc.extras.taper_mm * sc.mag / det.du, 1.0)
            taper = (np.cos(0.5 * np.pi * np.minimum(d / w_px, 1.0)) ** 2).astype(np.float32)

        def model(i0: int, i1: int) -> np.ndarray:
            mw, mb = head_chords(sc.geometry, wide, sc.head[0], axes, p["skull_mm"], views=range(i0, i1))
            return (mw + bone_w * mb) * taper

        ext = (n_ext, model, p["sid_mm"] * sc.mag)
    rc = fdk(L, det, sc.geometry, sc.vol_c, hann_cut=p["hann_cut"], extension=ext)
    if max(sc.f) == 1:
        return rc
    sp = np.asarray(grid.spacing_mm, float)
    rho = _up(rc, sc.f, (0, 0, 0), grid.shape)
    # sub-0.4 mm anatomy (outside the fine box): linear, through the fine PSF
    dhu = true_hu - _up(_block_mean(true_hu, sc.f), sc.f, (0, 0, 0), grid.shape)
    dhu = ndimage.gaussian_filter(dhu, _psf_sigma_mm(sp, p) / sp[::-1], truncate=3.0)
    if sc.extras.blur is not None:
        dhu = sc.extras.blur(dhu)
    dhu *= np.float32(1e-3)
    rho += dhu
    if sc.box is not None:  # inside, the box's own reconstruction holds that detail
        lo, hi = sc.box
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        rb = fdk(dL, sc.window[2], sc.geometry, sc.vol_b, hann_cut=p["hann_cut"])
        rho[sl] += _blend(hi - lo, sp) * (rb - dhu[sl])
    return rho


def simulate_rtk(true_hu: np.ndarray, fld, grid: ScanGrid, iso_lps, params: dict, rng: np.random.Generator, *,
                 fov_cylinder: bool, head_center_xy, head_axes_mm=(72.0, 92.0),
                 timings: dict | None = None, extras: Extras | None = None) -> tuple[np.ndarray, dict]:
    """Reconstructed HU (float32 ``[k, j, i]`` on ``grid``) of the true HU and the implant's metal.

    Args:
        true_hu: true HU (``[k, j, i]``, at 60 keV) of the anatomy with the metal's volume removed.
        fld: the implant's sparse fields (``kji``, ``metal`` and ``contact`` platinum fractions).
        grid: the axis-aligned scanner grid; ``iso_lps``: isocentre (LPS mm) on its rotation axis (k).
        params: :func:`draw_rtk_params` (possibly overridden).
        rng: the generator of the photon noise.
        fov_cylinder: True: the detector covers the cylinder inscribed in the grid (corners left to
            the caller's field mask); False: the whole grid.
        head_center_xy, head_axes_mm: the head's elliptic cylinder (LPS x, y mm; semi-axes mm);
            ``head_axes_mm=None``: no head around the grid (the grid alone is scanned).
        timings: seconds per stage are added here.
        extras: the hard conditions (:class:`Extras`: motion, other metal, a truncated field); None: none.

    Returns:
        (HU image before gain / offset / saturation, info: ``hu_platinum``, ``psf_sigma_mm`` of the
        reconstruction (axes k, j, i), ``cone_angle_deg``, ``fine_box_kji``, ...).
    """
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    sc, proj_c = _setup(true_hu, fld, grid, np.asarray(iso_lps, float), params, fov_cylinder, head_center_xy,
                        head_axes_mm, extras or Extras())
    timings["rtk_setup"], t0 = time.perf_counter() - t0, time.perf_counter()
    A, Af = _project(sc, proj_c, true_hu, fld)
    del proj_c
    timings["rtk_project"], t0 = time.perf_counter() - t0, time.perf_counter()
    L, dL, (e_b, w_b) = _detector(sc, A, Af, rng)
    del A, Af
    timings["rtk_detector"], t0 = time.perf_counter() - t0, time.perf_counter()
    rho = _reconstruct(sc, L, dL, true_hu)
    timings["rtk_fdk"] = time.perf_counter() - t0
    mu_w = xray.mu_per_mm("water", e_b)
    t150 = w_b * np.exp(-mu_w * 150.0)
    e_eff = float(np.sum(t150 * e_b) / np.sum(t150))  # mean detected energy behind 15 cm of water
    det = sc.det
    info = {"hu_platinum": float(1000.0 * (xray.mu_per_mm("platinum_iridium", e_eff) /
                                           xray.mu_per_mm("water", e_eff) - 1.0)),
            "psf_sigma_mm": [float(s) for s in _psf_sigma_mm(np.asarray(grid.spacing_mm, float), params)],
            "effective_kev": e_eff,
            "cone_angle_deg": float(np.degrees(2 * np.arctan(det.nv * det.dv / 2 / (params["sid_mm"] * sc.mag)))),
            "fan_angle_deg": float(np.degrees(2 * np.arctan(det.nu * det.du / 2 / (params["sid_mm"] * sc.mag)))),
            "detector_pixels": [int(det.nu), int(det.nv)], "detector_pitch_mm": [float(det.du), float(det.dv)],
            "fine_box_kji": None if sc.box is None else [sc.box[0].tolist(), sc.box[1].tolist()]}
    rho -= np.float32(1.0)
    rho *= np.float32(1000.0)
    return rho, info


def _psf_sigma_mm(sp: np.ndarray, p: dict) -> np.ndarray:
    """Gaussian sigma (mm, axes k, j, i) of the fine reconstruction: detector blur, Hann window,
    and the two linear interpolations (projector, back-projector) at the output voxel size."""
    d = sp[::-1]
    return np.sqrt((p["detector_blur_px"] * d) ** 2 + (0.75 * d / p["hann_cut"]) ** 2 + 2 * (0.3 * d) ** 2)


def _blend(shape: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Weight of the fine box: 1 inside, falling to 0 over BLEND_MM at its faces (separable)."""
    w = None
    for ax, (n, d) in enumerate(zip(shape, sp[::-1])):
        x = np.arange(n, dtype=np.float32)
        r = np.clip((np.minimum(x, n - 1 - x) + 0.5) * d / BLEND_MM, 0, 1)
        s = [1, 1, 1]
        s[ax] = n
        w = r.reshape(s) if w is None else w * r.reshape(s)
    return w

