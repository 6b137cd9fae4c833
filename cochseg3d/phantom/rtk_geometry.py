"""itk-rtk plumbing of the physics CBCT model (:mod:`.rtk`): geometry, detectors, volumes, projector, FDK.

RTK's world frame is ``(x, y, z)_rtk = (x, z, y)_LPS - isocentre``: its gantry turns about its y axis,
which is the scanner grid's k (LPS z) axis. itk is imported inside the functions (it is slow to load).
"""

from __future__ import annotations

import numpy as np

from .cbct import ramp_filter

SKULL_BONE, SKULL_WATER = 0.85, 0.2  # composition of the analytic skull shell


def itk_image(arr: np.ndarray, spacing, origin):
    import itk

    arr = np.ascontiguousarray(arr, dtype=np.float32)
    ttype = itk.Image[itk.Vector[itk.F, arr.shape[-1]], 3] if arr.ndim == 4 else itk.Image[itk.F, 3]
    im = itk.image_from_array(arr, ttype=ttype)
    im.SetSpacing([float(s) for s in spacing])
    im.SetOrigin([float(o) for o in origin])
    return im


class Detector:
    """A flat-panel detector (window): ``nu`` x ``nv`` pixels of pitch ``du`` x ``dv`` mm (detector plane)."""

    def __init__(self, u0: float, v0: float, du: float, dv: float, nu: int, nv: int) -> None:
        self.u0, self.v0, self.du, self.dv, self.nu, self.nv = u0, v0, du, dv, nu, nv

    def empty(self, n_views: int, comps: int = 0):
        shape = (n_views, self.nv, self.nu) + ((comps,) if comps else ())
        return itk_image(np.zeros(shape, np.float32), (self.du, self.dv, 1.0), (self.u0, self.v0, 0.0))

    def image(self, arr: np.ndarray):
        return itk_image(arr, (self.du, self.dv, 1.0), (self.u0, self.v0, 0.0))

    @property
    def u(self) -> np.ndarray:
        return self.u0 + self.du * np.arange(self.nu)

    @property
    def v(self) -> np.ndarray:
        return self.v0 + self.dv * np.arange(self.nv)


class RtkVolume:
    """A volume of the scanner grid in RTK's frame: corner voxel centre ``origin_lps`` (mm), spacing, shape kji."""

    def __init__(self, origin_lps, spacing, shape_kji, iso) -> None:
        self.origin, self.spacing, self.shape, self.iso = (np.asarray(origin_lps, float), np.asarray(spacing, float),
                                                           tuple(shape_kji), np.asarray(iso, float))

    def to_itk(self, arr_kji: np.ndarray):
        """RTK image of ``arr_kji`` (``[k, j, i]`` or ``[k, j, i, c]``): numpy axes (j, k, i)."""
        o = self.origin - self.iso
        a = np.moveaxis(arr_kji, 0, 1)
        return itk_image(a, (self.spacing[0], self.spacing[2], self.spacing[1]), (o[0], o[2], o[1]))

    def from_itk(self, im) -> np.ndarray:
        import itk

        return np.ascontiguousarray(np.moveaxis(itk.array_from_image(im), 1, 0))

    def corners_rtk(self) -> np.ndarray:
        ext = (np.array(self.shape[::-1]) - 1) * self.spacing
        c = np.array([[a, b, d] for a in (-.5, 1) for b in (-.5, 1) for d in (-.5, 1)])
        lps = self.origin + c * (ext + self.spacing) - self.iso
        return lps[:, [0, 2, 1]]


def circular_geometry(p: dict):
    import itk

    g = itk.ThreeDCircularProjectionGeometry.New()
    for a in p["first_angle_deg"] + 360.0 * np.arange(p["n_views"]) / p["n_views"]:
        g.AddProjection(p["sid_mm"], p["sid_mm"] * p["sdd_over_sid"], float(a % 360.0))
    return g


def moved_geometry(geometry, transforms):
    """The geometry that sees the static object as ``geometry`` sees it moved by ``transforms``:
    one ``(R, t)`` per view (RTK frame, x -> R x + t); source and detector take the inverse motion."""
    import itk

    g = itk.ThreeDCircularProjectionGeometry.New()
    for i, (R, t) in enumerate(transforms):
        s = np.array(geometry.GetSourcePosition(i))[:3]
        M = itk.array_from_matrix(geometry.GetProjectionCoordinatesToFixedSystemMatrix(i))

        def point(x):
            return itk.Point[itk.D, 3]([float(v) for v in R.T @ (x - t)])

        def vector(x):
            return itk.Vector[itk.D, 3]([float(v) for v in R.T @ x])

        g.AddProjection(point(s), point(M[:3, 3]), vector(M[:3, 0]), vector(M[:3, 1]))
    return g


def joseph(vol_itk, det: Detector, geometry, n_views: int, comps: int) -> np.ndarray:
    import itk

    t = type(vol_itk)
    j = itk.JosephForwardProjectionImageFilter[t, t].New()
    j.SetInput(0, det.empty(n_views, comps))
    j.SetInput(1, vol_itk)
    j.SetGeometry(geometry)
    j.Update()
    return itk.array_from_image(j.GetOutput())


def ramp_response(n: int, d: float, cut: float) -> tuple[np.ndarray, int]:
    """The Hann-windowed ramp of :func:`.cbct.ramp_filter` (float32) and its FFT length."""
    H = ramp_filter(n, d, cut)
    return H.astype(np.float32), 2 * (H.size - 1)


def fdk(proj: np.ndarray, det: Detector, geometry, vol: RtkVolume, *, hann_cut: float,
        extension: tuple | None = None, chunk: int = 16) -> np.ndarray:
    """FDK of line integrals ``proj`` (views, v, u) onto ``vol`` (``[k, j, i]`` float32).

    RTK's cosine weighting and voxel-driven back-projection, with the Hann-windowed ramp filtered here
    (scipy FFT; RTK's own filter gives the same image, tested, at several times the cost).
    ``extension=(n_ext, model, sdd)``: truncated rows are extended by ``n_ext`` pixels each side
    with ``model(i0, i1)`` (the model's line integrals of views ``i0:i1`` on the widened detector,
    cosine-weighted here), scaled on each side to meet the measured edge: model-based
    extrapolation of truncated projections (cf. Hsieh et al., Med Phys 2004;31:2385).
    """
    import itk
    from scipy import fft

    w = itk.FDKWeightProjectionFilter[itk.Image[itk.F, 3]].New()
    w.SetInput(det.image(proj))
    w.SetGeometry(geometry)
    w.Update()
    pw = itk.array_from_image(w.GetOutput())
    n_ext = extension[0] if extension else 0
    H, size = ramp_response(det.nu + 2 * n_ext, det.du, hann_cut)
    if n_ext:  # RTK's weight = a per-view factor x the cosine of the ray; the same for the extension
        u = det.u0 + det.du * (np.arange(det.nu + 2 * n_ext) - n_ext)
        sdd = extension[2]
        cosw = (sdd / np.sqrt(sdd**2 + u[None, :] ** 2 + det.v[:, None] ** 2)).astype(np.float32)
        w.SetInput(det.image(np.ones_like(proj)))
        w.Update()
        c = itk.array_from_image(w.GetOutput())[:, det.nv // 2, det.nu // 2] / cosw[det.nv // 2, n_ext + det.nu // 2]
    for i0 in range(0, len(pw), chunk):
        rows = pw[i0:i0 + chunk]
        if n_ext:
            raw = proj[i0:i0 + len(rows)]
            model = extension[1](i0, i0 + len(rows))
            ext = model * cosw * c[i0:i0 + len(rows), None, None].astype(np.float32)
            ext[..., n_ext:n_ext + det.nu] = rows
            for side, edge, ref in ((slice(0, n_ext), 0, n_ext), (slice(n_ext + det.nu, None), -1, n_ext + det.nu - 1)):
                r = np.clip(raw[..., edge] / np.maximum(model[..., ref], 1e-3), 0.5, 2.0)
                ext[..., side] *= r[..., None]
            rows = ext
        f = fft.irfft(fft.rfft(rows, n=size, axis=-1, workers=2) * H, n=size, axis=-1, workers=2)
        pw[i0:i0 + chunk] = f[..., n_ext:n_ext + det.nu]
    bp = itk.FDKBackProjectionImageFilter[itk.Image[itk.F, 3], itk.Image[itk.F, 3]].New()
    bp.SetInput(0, vol.to_itk(np.zeros(vol.shape, np.float32)))
    bp.SetInput(1, det.image(pw))
    bp.SetGeometry(geometry)
    bp.Update()
    return vol.from_itk(bp.GetOutput())


def head_chords(geometry, det: Detector, head_xy_rtk, axes_mm, skull_mm: float,
                views: range | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Water and bone line integrals (mm) of the elliptic-cylinder head with its skull shell (``views``: all)."""
    import itk

    views = range(len(geometry.GetGantryAngles())) if views is None else views
    n = len(views)
    uu = np.stack([det.u, np.zeros(det.nu), np.zeros(det.nu), np.ones(det.nu)])
    vv = det.v
    water = np.zeros((n, det.nv, det.nu), np.float32)
    bone = np.zeros_like(water)
    for n_i, i in enumerate(views):
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
        water[n_i] = ((inner + SKULL_WATER * (outer - inner))[None, :] * scale).astype(np.float32)
        bone[n_i] = (SKULL_BONE * (outer - inner)[None, :] * scale).astype(np.float32)
    return water, bone


def head_basis(xs, ys, head_xy, axes_mm, skull_mm) -> tuple[np.ndarray, np.ndarray]:
    """The analytic head's (water, bone) at voxel centres ``(ys, xs)`` (LPS mm), shape (ny, nx)."""
    def inside(a, b):
        return ((xs[None, :] - head_xy[0]) / a) ** 2 + ((ys[:, None] - head_xy[1]) / b) ** 2 <= 1

    outer = inside(*axes_mm)
    inner = inside(axes_mm[0] - skull_mm, axes_mm[1] - skull_mm)
    shell = outer & ~inner
    return (inner + SKULL_WATER * shell).astype(np.float32), (SKULL_BONE * shell).astype(np.float32)


def shadow_window(geometry, box: RtkVolume, det: Detector, n_views: int, fu: int, fv: int) -> tuple[slice, slice, Detector]:
    """Coarse-detector slices (v, u) that hold the shadow of ``box`` in every view, and the fine window
    (``geometry`` may be a list: the window then holds the box's shadow in each)."""
    import itk

    c = np.c_[box.corners_rtk(), np.ones(8)].T
    uv = []
    for g in (geometry if isinstance(geometry, (list, tuple)) else [geometry]):
        for i in range(n_views):
            h = itk.array_from_matrix(g.GetMatrix(i)) @ c
            uv.append(h[:2] / h[2])
    uv = np.concatenate(uv, axis=1)
    a0 = max(int(np.floor((uv[0].min() - det.u0) / det.du)) - 2, 0)
    a1 = min(int(np.ceil((uv[0].max() - det.u0) / det.du)) + 3, det.nu)
    b0 = max(int(np.floor((uv[1].min() - det.v0) / det.dv)) - 2, 0)
    b1 = min(int(np.ceil((uv[1].max() - det.v0) / det.dv)) + 3, det.nv)
    du, dv = det.du / fu, det.dv / fv
    fine = Detector(det.u0 + a0 * det.du - (fu - 1) / 2 * du, det.v0 + b0 * det.dv - (fv - 1) / 2 * dv, du, dv,
                (a1 - a0) * fu, (b1 - b0) * fv)
    return slice(b0, b1), slice(a0, a1), fine
