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

Approximations: the fine box's noise is not simulated at fine scale (its detail term is the mean
signal's; the noise grain is that of the >= 0.4 mm detector everywhere, which at ~0.25 mm PSF is
close to a real panel's); outside the box the anatomy's sub-0.4 mm detail passes the system
linearly (image-domain, blurred by the fine PSF); scatter is a blur of the primary, not transported.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from scipy import ndimage

from . import xray
from .anatomy import ScanGrid, trilinear

COARSE_MM = 0.4  # voxel size (mm) at which the anatomy is projected
BOX_MARGIN_MM = 2.0  # fine box around the contacts
BLEND_MM = 1.0  # width of the fine box's blend into the coarse reconstruction
SKULL_BONE, SKULL_WATER = 0.85, 0.2  # composition of the analytic skull shell


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


def _itk_image(arr: np.ndarray, spacing, origin):
    import itk

    arr = np.ascontiguousarray(arr, dtype=np.float32)
    ttype = itk.Image[itk.Vector[itk.F, arr.shape[-1]], 3] if arr.ndim == 4 else itk.Image[itk.F, 3]
    im = itk.image_from_array(arr, ttype=ttype)
    im.SetSpacing([float(s) for s in spacing])
    im.SetOrigin([float(o) for o in origin])
    return im


class _Det:
    """A flat-panel detector (window): ``nu`` x ``nv`` pixels of pitch ``du`` x ``dv`` mm (detector plane)."""

    def __init__(self, u0: float, v0: float, du: float, dv: float, nu: int, nv: int) -> None:
        self.u0, self.v0, self.du, self.dv, self.nu, self.nv = u0, v0, du, dv, nu, nv

    def empty(self, n_views: int, comps: int = 0):
        shape = (n_views, self.nv, self.nu) + ((comps,) if comps else ())
        return _itk_image(np.zeros(shape, np.float32), (self.du, self.dv, 1.0), (self.u0, self.v0, 0.0))

    def image(self, arr: np.ndarray):
        return _itk_image(arr, (self.du, self.dv, 1.0), (self.u0, self.v0, 0.0))

    @property
    def u(self) -> np.ndarray:
        return self.u0 + self.du * np.arange(self.nu)

    @property
    def v(self) -> np.ndarray:
        return self.v0 + self.dv * np.arange(self.nv)


class _Vol:
    """A volume of the scanner grid in RTK's frame: corner voxel centre ``origin_lps`` (mm), spacing, shape kji."""

    def __init__(self, origin_lps, spacing, shape_kji, iso) -> None:
        self.origin, self.spacing, self.shape, self.iso = (np.asarray(origin_lps, float), np.asarray(spacing, float),
                                                           tuple(shape_kji), np.asarray(iso, float))

    def to_itk(self, arr_kji: np.ndarray):
        """RTK image of ``arr_kji`` (``[k, j, i]`` or ``[k, j, i, c]``): numpy axes (j, k, i)."""
        o = self.origin - self.iso
        a = np.moveaxis(arr_kji, 0, 1)
        return _itk_image(a, (self.spacing[0], self.spacing[2], self.spacing[1]), (o[0], o[2], o[1]))

    def from_itk(self, im) -> np.ndarray:
        import itk

        return np.ascontiguousarray(np.moveaxis(itk.array_from_image(im), 1, 0))

    def corners_rtk(self) -> np.ndarray:
        ext = (np.array(self.shape[::-1]) - 1) * self.spacing
        c = np.array([[a, b, d] for a in (-.5, 1) for b in (-.5, 1) for d in (-.5, 1)])
        lps = self.origin + c * (ext + self.spacing) - self.iso
        return lps[:, [0, 2, 1]]


def _geometry(p: dict):
    import itk

    g = itk.ThreeDCircularProjectionGeometry.New()
    for a in p["first_angle_deg"] + 360.0 * np.arange(p["n_views"]) / p["n_views"]:
        g.AddProjection(p["sid_mm"], p["sid_mm"] * p["sdd_over_sid"], float(a % 360.0))
    return g


def _joseph(vol_itk, det: _Det, geometry, n_views: int, comps: int) -> np.ndarray:
    import itk

    t = type(vol_itk)
    j = itk.JosephForwardProjectionImageFilter[t, t].New()
    j.SetInput(0, det.empty(n_views, comps))
    j.SetInput(1, vol_itk)
    j.SetGeometry(geometry)
    j.Update()
    return itk.array_from_image(j.GetOutput())


def _ramp(n: int, d: float, cut: float) -> tuple[np.ndarray, int]:
    """Discrete Ram-Lak response (Kak & Slaney 3.61) times a Hann window cut at ``cut`` x Nyquist."""
    size = int(2 ** np.ceil(np.log2(2 * n)))
    k = np.concatenate([np.arange(0, size // 2 + 1), np.arange(-size // 2 + 1, 0)])
    h = np.zeros(size)
    h[0] = 1 / (4 * d * d)
    odd = k % 2 == 1
    h[odd] = -1 / (np.pi * k[odd] * d) ** 2
    H = np.real(np.fft.rfft(h)) * d
    f = np.fft.rfftfreq(size) / 0.5
    H *= np.where(f < cut, 0.5 + 0.5 * np.cos(np.pi * f / cut), 0.0)
    return H.astype(np.float32), size


def fdk(proj: np.ndarray, det: _Det, geometry, vol: _Vol, *, hann_cut: float) -> np.ndarray:
    """FDK of line integrals ``proj`` (views, v, u) onto ``vol`` (``[k, j, i]`` float32).

    RTK's cosine weighting and voxel-driven back-projection, with the Hann-windowed ramp filtered here
    (numpy FFT; RTK's own filter gives the same image, tested, at several times the cost).
    Truncated projections are extended beforehand (:func:`_extend`).
    """
    import itk

    w = itk.FDKWeightProjectionFilter[itk.Image[itk.F, 3]].New()
    w.SetInput(det.image(proj))
    w.SetGeometry(geometry)
    w.Update()
    pw = itk.array_from_image(w.GetOutput())
    H, size = _ramp(pw.shape[-1], det.du, hann_cut)
    filt = np.fft.irfft(np.fft.rfft(pw, n=size, axis=-1) * H, n=size, axis=-1)[..., :det.nu]
    del pw
    bp = itk.FDKBackProjectionImageFilter[itk.Image[itk.F, 3], itk.Image[itk.F, 3]].New()
    bp.SetInput(0, vol.to_itk(np.zeros(vol.shape, np.float32)))
    bp.SetInput(1, det.image(filt.astype(np.float32)))
    bp.SetGeometry(geometry)
    bp.Update()
    return vol.from_itk(bp.GetOutput())


def _extend(L: np.ndarray, det: _Det, model: np.ndarray, n_ext: int) -> tuple[np.ndarray, _Det]:
    """Truncated rows extended by ``n_ext`` pixels each side with the scanner's head model.

    ``model`` (views, v, nu + 2 n_ext): the model's line integrals on the extended detector, scaled on
    each side to meet the measured edge (model-based extrapolation of truncated projections, cf.
    Hsieh et al., Med Phys 2004;31:2385). Returns the extended rows and detector.
    """
    out = np.empty(model.shape, np.float32)
    out[..., n_ext:n_ext + det.nu] = L
    for side, edge, ref in ((slice(0, n_ext), 0, n_ext), (slice(n_ext + det.nu, None), -1, n_ext + det.nu - 1)):
        r = np.clip(L[..., edge] / np.maximum(model[..., ref], 1e-3), 0.5, 2.0)
        out[..., side] = model[..., side] * r[..., None]
    return out, _Det(det.u0 - n_ext * det.du, det.v0, det.du, det.dv, det.nu + 2 * n_ext, det.nv)


def _head_chords(geometry, det: _Det, head_xy_rtk, axes_mm, skull_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Water and bone line integrals (mm) of the elliptic-cylinder head with its skull shell."""
    import itk

    n = len(geometry.GetGantryAngles())
    uu = np.stack([det.u, np.zeros(det.nu), np.zeros(det.nu), np.ones(det.nu)])
    vv = det.v
    water = np.zeros((n, det.nv, det.nu), np.float32)
    bone = np.zeros_like(water)
    for i in range(n):
        s = np.array(geometry.GetSourcePosition(i))[:3]
        M = itk.array_from_matrix(geometry.GetProjectionCoordinatesToFixedSystemMatrix(i))
        P = (M @ uu)[:3]  # pixel centres of row v = 0
        d = P - s[:, None]  # direction (x, z); the y part only scales the chord
        vdir = M[:3, 1]
        dy = d[1][None, :] + vv[:, None] * vdir[1]
        norm = np.sqrt(d[0] ** 2 + d[2] ** 2)
        scale = np.sqrt(norm[None, :] ** 2 + dy**2) / norm[None, :]
        chords = []
        for a, b in ((axes_mm[0], axes_mm[1]), (axes_mm[0] - skull_mm, axes_mm[1] - skull_mm)):
            sx, sz = s[0] - head_xy_rtk[0], s[2] - head_xy_rtk[1]
            A = (d[0] / a) ** 2 + (d[2] / b) ** 2
            B = 2 * (sx * d[0] / a**2 + sz * d[2] / b**2)
            C = (sx / a) ** 2 + (sz / b) ** 2 - 1
            chords.append(np.sqrt(np.clip(B * B - 4 * A * C, 0, None)) / A * norm)
        outer, inner = chords
        water[i] = ((inner + SKULL_WATER * (outer - inner))[None, :] * scale).astype(np.float32)
        bone[i] = (SKULL_BONE * (outer - inner)[None, :] * scale).astype(np.float32)
    return water, bone


def _head_basis(xs, ys, head_xy, axes_mm, skull_mm) -> tuple[np.ndarray, np.ndarray]:
    """The analytic head's (water, bone) at voxel centres ``(ys, xs)`` (LPS mm), shape (ny, nx)."""
    def inside(a, b):
        return ((xs[None, :] - head_xy[0]) / a) ** 2 + ((ys[:, None] - head_xy[1]) / b) ** 2 <= 1

    outer = inside(*axes_mm)
    inner = inside(axes_mm[0] - skull_mm, axes_mm[1] - skull_mm)
    shell = outer & ~inner
    return (inner + SKULL_WATER * shell).astype(np.float32), (SKULL_BONE * shell).astype(np.float32)


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


def _window(geometry, box: _Vol, det: _Det, n_views: int, fu: int, fv: int) -> tuple[slice, slice, _Det]:
    """Coarse-detector slices (v, u) that hold the shadow of ``box`` in every view, and the fine window."""
    import itk

    c = np.c_[box.corners_rtk(), np.ones(8)].T
    uv = []
    for i in range(n_views):
        h = itk.array_from_matrix(geometry.GetMatrix(i)) @ c
        uv.append(h[:2] / h[2])
    uv = np.concatenate(uv, axis=1)
    a0 = max(int(np.floor((uv[0].min() - det.u0) / det.du)) - 2, 0)
    a1 = min(int(np.ceil((uv[0].max() - det.u0) / det.du)) + 3, det.nu)
    b0 = max(int(np.floor((uv[1].min() - det.v0) / det.dv)) - 2, 0)
    b1 = min(int(np.ceil((uv[1].max() - det.v0) / det.dv)) + 3, det.nv)
    du, dv = det.du / fu, det.dv / fv
    fine = _Det(det.u0 + a0 * det.du - (fu - 1) / 2 * du, det.v0 + b0 * det.dv - (fv - 1) / 2 * dv, du, dv,
                (a1 - a0) * fu, (b1 - b0) * fv)
    return slice(b0, b1), slice(a0, a1), fine


def _signal(A: np.ndarray, mus: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Detected polychromatic signal (flat field 1) of basis line integrals ``A`` (..., 3) (mm)."""
    out = np.zeros(A.shape[:-1], np.float32)
    for m, wb in zip(mus, w):
        out += np.float32(wb) * np.exp(-(A @ m.astype(np.float32)))
    return out


def _box_of(fld, grid: ScanGrid) -> tuple[np.ndarray, np.ndarray] | None:
    sel = fld.contact > 0.01
    if not np.any(sel):
        return None
    marg = np.ceil(BOX_MARGIN_MM / np.asarray(grid.spacing_mm)[::-1]).astype(int)
    lo = np.maximum(fld.kji[sel].min(0) - marg, 0)
    hi = np.minimum(fld.kji[sel].max(0) + marg + 1, np.array(grid.shape))
    return lo, hi


def simulate_rtk(true_hu: np.ndarray, fld, grid: ScanGrid, iso_lps, params: dict, rng: np.random.Generator, *,
                 fov_cylinder: bool, head_center_xy, head_axes_mm=(72.0, 92.0),
                 timings: dict | None = None) -> tuple[np.ndarray, dict]:
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

    Returns:
        (HU image before gain / offset / saturation, info: ``hu_platinum``, ``psf_sigma_mm`` of the
        reconstruction, ``cone_angle_deg``, ``fine_box_kji``).
    """
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    p = params
    sp = np.asarray(grid.spacing_mm, float)  # (dx, dy, dz)
    nz, ny, nx = grid.shape
    iso = np.asarray(iso_lps, float)
    fxy = max(1, int(round(COARSE_MM / min(sp[0], sp[1]))))
    fz = max(1, int(round(COARSE_MM / sp[2])))
    f = (fz, fxy, fxy)
    geometry = _geometry(p)
    nvw, sid = p["n_views"], p["sid_mm"]
    sdd = sid * p["sdd_over_sid"]
    mag = sdd / sid

    # materials: coarse basis volumes (water, bone, metal) minus the analytic head inside the grid
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
    vol_c = _Vol(org_c, sp_c, shape_c, iso)
    xs_c = org_c[0] + sp_c[0] * np.arange(shape_c[2])
    ys_c = org_c[1] + sp_c[1] * np.arange(shape_c[1])
    proj_c = basis_c.copy()
    if head_axes_mm is not None:
        hw, hb = _head_basis(xs_c, ys_c, head_center_xy, head_axes_mm, p["skull_mm"])
        proj_c[..., 0] -= hw[None]
        proj_c[..., 1] -= hb[None]

    # detector: covers the reconstructed field (narrower than the head), pitch of the coarse voxels
    r_fov = 0.5 * (min(nx * sp[0], ny * sp[1]) if fov_cylinder else np.hypot(nx * sp[0], ny * sp[1])) + sp_c[0]
    u_half = sdd * r_fov / np.sqrt(sid**2 - r_fov**2)
    v_half = sdd * (nz * sp[2] / 2 + sp_c[2]) / (sid - r_fov)
    du, dv = sp_c[0] * mag, sp_c[2] * mag
    nu_c, nv_c = 2 * int(np.ceil(u_half / du)), 2 * int(np.ceil(v_half / dv))
    det = _Det(-(nu_c - 1) / 2 * du, -(nv_c - 1) / 2 * dv, du, dv, nu_c, nv_c)
    timings["rtk_materials"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    A = _joseph(vol_c.to_itk(proj_c), det, geometry, nvw, 3)
    del proj_c
    if head_axes_mm is not None:
        head_rtk = (head_center_xy[0] - iso[0], head_center_xy[1] - iso[1])
        w_head, b_head = _head_chords(geometry, det, head_rtk, head_axes_mm, p["skull_mm"])
        A[..., 0] += w_head
        A[..., 1] += b_head
        del w_head, b_head
    box = _box_of(fld, grid) if max(f) > 1 else None
    if box is not None:
        lo, hi = box
        vb = _Vol(np.asarray(grid.origin_mm) + lo[::-1] * sp, sp, tuple(hi - lo), iso)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        detail = np.empty(tuple(hi - lo) + (3,), np.float32)
        mf = np.zeros(grid.shape, np.float32)  # dense only for the box's crop below
        mf[k, j, i] = fld.metal
        for c, fine in enumerate((rho[sl], bone[sl], mf[sl])):
            detail[..., c] = fine - _up(basis_c[..., c], f, lo, hi - lo)
        del mf
        sv, su, det_f = _window(geometry, vb, det, nvw, fxy, fz)
        B = _joseph(vb.to_itk(detail), det_f, geometry, nvw, 3)
        del detail
        cu = (np.arange(nvw), _up_coords(det_f.nv, fz) + sv.start, _up_coords(det_f.nu, fxy) + su.start)
        cu = [np.clip(c, 0, s - 1) for c, s in zip(cu, A.shape[:3])]
        Af = np.stack([trilinear(A[..., c], cu) for c in range(3)], axis=-1) + B
        Af[..., 2] = np.maximum(Af[..., 2], 0)
        del B
    timings["rtk_project"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    e_b, w_b = xray.spectrum(p["kvp"], p["al_mm"], p["cu_mm"], p["n_bins"])
    mus = np.stack([xray.mu_per_mm("water", e_b), xray.mu_per_mm("bone", e_b),
                    xray.mu_per_mm("platinum_iridium", e_b)], axis=1)
    wc = xray.WaterCorrection(e_b, w_b, strength=p["water_correction"])
    n0, floor = p["photons_per_pixel"], p["count_floor"]
    blur = p["detector_blur_px"]
    E = ndimage.gaussian_filter(_signal(A, mus, w_b), (0, blur / fz, blur / fxy))
    del A
    if box is not None:
        Ef = ndimage.gaussian_filter(_signal(Af, mus, w_b), (0, blur, blur))
        del Af
        nb = (nvw, Ef.shape[1] // fz, fz, Ef.shape[2] // fxy, fxy)
        E[:, sv, su] = Ef.reshape(nb).mean(axis=(2, 4))
    sig = (0, p["scatter_sigma_mm"] / sp_c[2], p["scatter_sigma_mm"] / sp_c[0])
    S = np.float32(p["scatter_fraction"]) * ndimage.gaussian_filter(E[:, ::4, ::4], np.array(sig) / [1, 4, 4])
    S = trilinear(S, [np.arange(nvw), np.arange(nv_c) / 4, np.arange(nu_c) / 4])
    mean = E + S
    counts = np.maximum(rng.poisson(n0 * mean).astype(np.float32), np.float32(floor))
    L = wc(-np.log(counts / np.float32(n0)))
    del counts
    if box is not None:
        # the fine window: mean signal's detail at full resolution; the noise stays the binned pixels'
        cu = [np.arange(nvw), np.clip(_up_coords(det_f.nv, fz) + sv.start, 0, nv_c - 1),
              np.clip(_up_coords(det_f.nu, fxy) + su.start, 0, nu_c - 1)]
        Lf = wc(-np.log(np.maximum(Ef + trilinear(S, cu), np.float32(floor / n0))))
        del Ef
        Lb = Lf.reshape(nb).mean(axis=(2, 4))
        L[:, sv, su] += Lb - wc(-np.log(np.maximum(mean[:, sv, su], np.float32(floor / n0))))
        cb = [np.arange(nvw), np.clip(_up_coords(det_f.nv, fz), 0, Lb.shape[1] - 1),
              np.clip(_up_coords(det_f.nu, fxy), 0, Lb.shape[2] - 1)]
        dL = Lf - trilinear(Lb, cb)
        del Lf
    del mean, S
    timings["rtk_detector"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if head_axes_mm is not None:  # the scanner's model of the head: drawn misfit of its size
        n_ext = int(np.ceil(2.2 * max(head_axes_mm) * mag / du))
        wide = _Det(det.u0 - n_ext * du, det.v0, du, dv, nu_c + 2 * n_ext, nv_c)
        ax = tuple(a * p["extrapolation_scale"] for a in head_axes_mm)
        mw, mb = _head_chords(geometry, wide, head_rtk, ax, p["skull_mm"])
        mw += mb * np.float32(xray.bone_hu() / 1000.0 + 1.0)  # bone as water-equivalent path
        del mb
        L, det_r = _extend(L, det, mw, n_ext)
        del mw
    else:
        det_r = det
    rc = fdk(L, det_r, geometry, vol_c, hann_cut=p["hann_cut"])
    del L
    if max(f) > 1:
        rho_img = _up(rc, f, (0, 0, 0), grid.shape)
    else:
        rho_img = rc
    psf = _psf_sigma_mm(sp, p)
    if max(f) > 1:  # sub-0.4 mm anatomy (outside the fine box): linear, through the fine PSF
        dhu = true_hu - _up(_block_mean(true_hu, f), f, (0, 0, 0), grid.shape)
        dhu = ndimage.gaussian_filter(dhu, psf / sp[::-1], truncate=3.0)
        dhu *= np.float32(1e-3)
        rho_img += dhu
    if box is not None:  # inside, the box's own reconstruction holds that detail
        rb = fdk(dL, det_f, geometry, vb, hann_cut=p["hann_cut"])
        rho_img[sl] += _blend(hi - lo, sp) * (rb - dhu[sl])
    if max(f) > 1:
        del dhu
    timings["rtk_fdk"] = time.perf_counter() - t0

    e_eff = float(np.sum(w_b * e_b * np.exp(-xray.mu_per_mm("water", e_b) * 150)) /
                  np.sum(w_b * np.exp(-xray.mu_per_mm("water", e_b) * 150)))
    hu_pt = 1000.0 * (xray.mu_per_mm("platinum_iridium", e_eff) / xray.mu_per_mm("water", e_eff) - 1.0)
    info = {"hu_platinum": float(hu_pt), "psf_sigma_mm": [float(s) for s in psf], "effective_kev": e_eff,
            "cone_angle_deg": float(np.degrees(2 * np.arctan(det.nv * det.dv / 2 / sdd))),
            "fan_angle_deg": float(np.degrees(2 * np.arctan(det.nu * det.du / 2 / sdd))),
            "detector_pixels": [int(nu_c), int(nv_c)], "detector_pitch_mm": [float(du), float(dv)],
            "fine_box_kji": None if box is None else [lo.tolist(), hi.tolist()]}
    img = np.float32(1000.0) * (rho_img - np.float32(1.0))
    return img, info


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

