"""Cone-beam CT degradation of a true-HU volume: PSF, metal streaks, noise, shading, rings, offset, saturation.

Arrays are ``[k, j, i]`` on the axis-aligned scanner grid (k = axial slices, the rotation axis).

Model and the figures behind it:

* Linear attenuation: water 0.0206 /mm and platinum ~9 /mm near a 60 keV effective energy
  (NIST XCOM mass attenuation: water ~0.206, platinum roughly 4-4.5 cm^2/g below its 78 keV K edge;
  Pt density 21.45 g/cm^3), so platinum is ~+400,000 HU before the scanner clips it; the drawn
  effective 7-10 /mm covers beam hardening through the array.
* PSF: Gaussian core sigma 0.22-0.35 mm (dental / ENT CBCT resolve ~1.5-2.5 lp/mm) plus a weak wide tail
  applied to the metal only (scatter and detector glare; negligible for low-contrast anatomy).
  Blurred platinum clipped at the saturation level makes each contact bloom to ~2 mm, which is why
  Cochlear's <1 mm-pitch contacts merge into one band while MED-EL's ~2 mm-pitch contacts stay apart.
* Metal streaks, projection domain, per axial slice on a <= 0.4 mm grid: forward-project the metal
  (sparse parallel-beam splatting), add the head's background line integral (an ellipse of water),
  apply beam hardening ``ln(1 + b p) / b`` to the metal part, Poisson counts from ``N0`` photons
  with a floor (photon starvation), take the error against the true line integrals on the rays
  that touch metal, and filtered-back-project that error (Ram-Lak / Hann). Dark bands between
  contacts and bright / dark rays follow. Much cheaper than a dense radon / iradon of each slice:
  only metal pixels are projected, and back-projection is one sparse matrix (two detector bins per
  pixel and angle, built once per scan) applied to all slices' filtered sinograms at once.
* Noise: white Gaussian noise added before the PSF (so the reconstruction blur gives it its grain),
  scaled so its standard deviation after the blur is 30-110 HU, up to 1.5x higher in dense regions.
* Low-frequency shading (+/- 20-120 HU), cupping, ring artefacts in ~30 % of scans, a cylindrical
  reconstructed field in half the scans (constant outside, a bright truncation rim inside its edge),
  a grey-value gain (0.85-1.15) and offset (-300..400; CBCT grey values are not calibrated HU), and
  saturation at 3071 or 4095 (12-bit detectors / stored range).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse

from .anatomy import ScanGrid, trilinear

MU_WATER_PER_MM = 0.0206


def hu_from_mu(mu: float | np.ndarray) -> float | np.ndarray:
    return 1000.0 * (np.asarray(mu) - MU_WATER_PER_MM) / MU_WATER_PER_MM


def ramp_filter(n_det: int, d: float, cut: float = 1.0) -> np.ndarray:
    """Frequency response of the discrete Ram-Lak kernel (Kak & Slaney eq. 3.61) times a Hann window
    reaching zero at ``cut`` x Nyquist (zero above), on ``2**ceil(log2(2 n_det))`` samples."""
    size = int(2 ** np.ceil(np.log2(2 * n_det)))
    n = np.concatenate([np.arange(0, size // 2 + 1), np.arange(-size // 2 + 1, 0)])
    h = np.zeros(size)
    h[0] = 1 / (4 * d * d)
    odd = n % 2 == 1
    h[odd] = -1 / (np.pi * n[odd] * d) ** 2
    H = np.real(np.fft.rfft(h)) * d
    f = np.fft.rfftfreq(size) / 0.5
    H *= np.where(f < cut, 0.5 + 0.5 * np.cos(np.pi * f / cut), 0.0)  # Hann
    return H


class SliceProjector:
    """Parallel-beam geometry of one axial slice grid (square pixels ``d`` mm, isocentre at ``c``)."""

    def __init__(self, nx: int, ny: int, d: float, center_xy: tuple[float, float], n_angles: int) -> None:
        self.nx, self.ny, self.d = nx, ny, d
        self.angles = np.linspace(0, np.pi, n_angles, endpoint=False)
        self.x = (np.arange(nx) - (nx - 1) / 2) * d + center_xy[0]
        self.y = (np.arange(ny) - (ny - 1) / 2) * d + center_xy[1]
        diag = np.hypot(nx, ny) * d + 4 * d
        self.n_det = int(np.ceil(diag / d)) + 2
        self.t0 = -(self.n_det - 1) / 2 * d
        self.H = ramp_filter(self.n_det, d).astype(np.float32)
        self.cos, self.sin = np.cos(self.angles), np.sin(self.angles)
        cos32, sin32 = self.cos.astype(np.float32), self.sin.astype(np.float32)
        u = (self.x.astype(np.float32)[None, None, :] * cos32[:, None, None]
             + self.y.astype(np.float32)[None, :, None] * sin32[:, None, None] - np.float32(self.t0)) / np.float32(d)
        i0 = np.clip(np.floor(u).astype(np.int32), 0, self.n_det - 2)  # (A, ny, nx) detector bin
        w = (u - i0).reshape(n_angles, -1).T  # (pixels, A)
        cols = (i0 + (np.arange(n_angles, dtype=np.int32) * self.n_det)[:, None, None]).reshape(n_angles, -1).T
        # back-projection as a sparse matrix: each pixel reads two detector bins per angle
        npix = nx * ny
        indices = np.stack([cols, cols + 1], axis=-1).reshape(-1)
        data = np.stack([1 - w, w], axis=-1).reshape(-1).astype(np.float32)
        indptr = np.arange(0, npix * 2 * n_angles + 1, 2 * n_angles, dtype=np.int64)
        self.backproject = sparse.csr_matrix((data, indices, indptr), shape=(npix, n_angles * self.n_det))

    def project_sparse(self, x: np.ndarray, y: np.ndarray, val: np.ndarray) -> np.ndarray:
        """Line integrals (A, n_det) of point masses ``val`` (attenuation * area, mm) at ``(x, y)``."""
        A = len(self.angles)
        u = ((x[None] * self.cos[:, None] + y[None] * self.sin[:, None]) - self.t0) / self.d
        i0 = np.floor(u).astype(np.int64)
        w = u - i0
        ok = (i0 >= 0) & (i0 < self.n_det - 1)
        base = (np.arange(A) * self.n_det)[:, None]
        v = np.broadcast_to(val[None] / self.d, u.shape)
        sino = np.bincount((base + i0)[ok], weights=(v * (1 - w))[ok], minlength=A * self.n_det)
        sino += np.bincount((base + i0 + 1)[ok], weights=(v * w)[ok], minlength=A * self.n_det)
        return sino.reshape(A, self.n_det)

    def fbp(self, sinos: np.ndarray) -> np.ndarray:
        """Filtered back-projection of ``sinos`` (B, A, n_det) -> images (B, ny, nx)."""
        B, A, n = sinos.shape
        size = (len(self.H) - 1) * 2
        f = np.fft.irfft(np.fft.rfft(sinos, n=size, axis=-1) * self.H, n=size, axis=-1)[..., :n]
        flat = f.reshape(B, -1).astype(np.float32)
        out = (self.backproject @ flat.T).T
        return (out * np.float32(np.pi / A)).reshape(B, self.ny, self.nx)

    def background(self, head_center: tuple[float, float], axes_mm: tuple[float, float], mu: float) -> np.ndarray:
        """Line integrals (A, n_det) through an elliptical head of attenuation ``mu`` (/mm)."""
        a, b = axes_mm
        t = self.t0 + np.arange(self.n_det) * self.d
        tc = t[None] - (head_center[0] * self.cos + head_center[1] * self.sin)[:, None]
        q = (a * self.cos) ** 2 + (b * self.sin) ** 2
        chord = 2 * a * b * np.sqrt(np.clip(q[:, None] - tc**2, 0, None)) / q[:, None]
        return mu * chord


def metal_error_sinogram(p_metal: np.ndarray, p_bg: np.ndarray, *, n0: float, floor: float, bh: float,
                         rng: np.random.Generator) -> np.ndarray:
    """Measured minus true line integrals on the rays that touch metal (beam hardening, counts, floor)."""
    hit = p_metal > 1e-3
    err = np.zeros_like(p_metal)
    if not np.any(hit):
        return err
    pm = p_metal[hit]
    pb = p_bg[hit]
    p_bh = np.log1p(bh * pm) / bh
    counts = rng.poisson(n0 * np.exp(-(pb + p_bh))).astype(float)
    counts = np.maximum(counts, floor)
    err[hit] = np.log(n0 / counts) - (pb + pm)
    return err


def streak_image(grid: ScanGrid, metal_mu: np.ndarray, z_range: tuple[int, int], *, isocenter_xy, head_center_xy,
                 head_axes_mm, n0: float, floor: float, bh: float, strength: float, n_angles: int,
                 rng: np.random.Generator, max_pixel_mm: float = 0.4) -> np.ndarray:
    """Streak HU (full in-plane size) for axial slices ``z_range`` of the metal attenuation ``metal_mu``.

    Args:
        metal_mu: (nz_r, ny, nx) excess attenuation of metal (/mm) for slices ``z_range``.
    Returns:
        float32 (nz_r, ny, nx) HU to add to the image.
    """
    nz_r, ny, nx = metal_mu.shape
    dx, dy, dz = grid.spacing_mm
    fxy = max(1, int(round(max_pixel_mm / dx)))
    fz = max(1, int(round(max_pixel_mm / dz)))
    pad = [(0, (-s) % f) for s, f in zip(metal_mu.shape, (fz, fxy, fxy))]
    m = np.pad(metal_mu, pad)
    cz, cy, cx = (m.shape[0] // fz, m.shape[1] // fxy, m.shape[2] // fxy)
    m = m.reshape(cz, fz, cy, fxy, cx, fxy).mean(axis=(1, 3, 5))
    d = dx * fxy
    x0 = grid.origin_mm[0] + (fxy - 1) / 2 * dx
    y0 = grid.origin_mm[1] + (fxy - 1) / 2 * dy
    # coarse pixel centres relative to the isocentre
    cxy = (x0 + (cx - 1) / 2 * d - isocenter_xy[0], y0 + (cy - 1) / 2 * d - isocenter_xy[1])
    proj = SliceProjector(cx, cy, d, cxy, n_angles)
    p_bg = proj.background((head_center_xy[0] - isocenter_xy[0], head_center_xy[1] - isocenter_xy[1]),
                           head_axes_mm, MU_WATER_PER_MM * 1.08)
    sinos = np.zeros((cz, n_angles, proj.n_det))
    for k in range(cz):
        jj, ii = np.nonzero(m[k] > 1e-4)
        if len(ii) == 0:
            continue
        p_m = proj.project_sparse(proj.x[ii], proj.y[jj], m[k, jj, ii] * d * d)
        sinos[k] = metal_error_sinogram(p_m, p_bg, n0=n0, floor=floor, bh=bh, rng=rng)
    coarse = np.zeros((cz, cy, cx), dtype=np.float32)
    todo = np.nonzero(np.any(sinos != 0, axis=(1, 2)))[0]
    if len(todo):
        coarse[todo] = proj.fbp(sinos[todo])
    coarse *= np.float32(1000.0 / MU_WATER_PER_MM * strength)
    coords = [(np.arange(n, dtype=np.float32) - (f - 1) / 2) / f for n, f in zip((nz_r, ny, nx), (fz, fxy, fxy))]
    coords = [np.clip(c, 0, s - 1) for c, s in zip(coords, coarse.shape)]
    if min(coarse.shape) < 2:
        return np.broadcast_to(coarse.mean(), (nz_r, ny, nx)).astype(np.float32)
    return trilinear(coarse, coords)


def naive_streak_image(metal_mu: np.ndarray, pixel_mm: float, *, head_center_xy, head_axes_mm, n0: float,
                       floor: float, bh: float, strength: float, n_angles: int,
                       rng: np.random.Generator) -> np.ndarray:
    """The same streak model with scikit-image's dense ``radon`` / ``iradon`` per slice (the benchmark's peer).

    Args:
        metal_mu: (nz, ny, nx) metal attenuation (/mm) on square pixels of ``pixel_mm``.
        head_center_xy: head centre relative to the slice centre, the rotation axis here (mm).
    Returns:
        float32 (nz, ny, nx) streak HU.
    """
    from skimage.transform import iradon, radon

    nz, ny, nx = metal_mu.shape
    n = max(nx, ny)
    theta = np.degrees(np.linspace(0, np.pi, n_angles, endpoint=False))
    out = np.zeros((nz, ny, nx), dtype=np.float32)
    for k in range(nz):
        if not np.any(metal_mu[k] > 1e-4):
            continue
        sl = np.zeros((n, n))
        sl[:ny, :nx] = metal_mu[k]
        p_m = radon(sl, theta=theta, circle=False).T * pixel_mm  # (A, n_det)
        n_det = p_m.shape[1]
        proj = SliceProjector.__new__(SliceProjector)
        proj.angles = np.radians(theta)
        proj.cos, proj.sin = np.cos(proj.angles), np.sin(proj.angles)
        proj.n_det, proj.d, proj.t0 = n_det, pixel_mm, -(n_det - 1) / 2 * pixel_mm
        p_bg = proj.background(head_center_xy, head_axes_mm, MU_WATER_PER_MM * 1.08)
        err = metal_error_sinogram(p_m, p_bg, n0=n0, floor=floor, bh=bh, rng=rng)
        img = iradon(err.T / pixel_mm, theta=theta, circle=False, filter_name="hann", output_size=n)
        out[k] = img[:ny, :nx] * 1000.0 / MU_WATER_PER_MM * strength
    return out


def gaussian_noise_gain(sigma_vox) -> float:
    """Standard deviation of unit white noise after ``ndimage.gaussian_filter(sigma_vox, truncate=3)``."""
    g = 1.0
    for s in np.atleast_1d(sigma_vox):
        delta = np.zeros(int(8 * max(float(s), 0.5)) * 2 + 1)
        delta[len(delta) // 2] = 1.0
        g *= float(np.sqrt(np.sum(ndimage.gaussian_filter1d(delta, float(s), truncate=3.0) ** 2)))
    return g


def shading_field(grid: ScanGrid, *, amplitude_hu: float, cupping_hu: float, isocenter_xy,
                  rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Separable low-frequency shading plus radial cupping about the rotation axis (float32 HU)."""
    z, y, x = grid.zs, grid.ys, grid.xs
    out = np.zeros(grid.shape, dtype=np.float32)
    terms = []
    for _ in range(3):
        k = rng.uniform(0.02, 0.09, 3)  # rad/mm: 70-300 mm periods
        ph = rng.uniform(0, 2 * np.pi, 3)
        a = float(rng.uniform(-1, 1) * amplitude_hu / 2)
        terms.append({"k_rad_per_mm": k.tolist(), "phase": ph.tolist(), "amp_hu": a})
        fx = np.cos(k[0] * x + ph[0]).astype(np.float32)
        fy = np.cos(k[1] * y + ph[1]).astype(np.float32)
        fz = np.cos(k[2] * z + ph[2]).astype(np.float32)
        out += np.float32(a) * fz[:, None, None] * (fy[:, None] * fx[None, :])[None]
    r2 = ((x - isocenter_xy[0])[None, :] ** 2 + (y - isocenter_xy[1])[:, None] ** 2).astype(np.float32)
    rmax2 = float(r2.max()) or 1.0
    out += np.float32(cupping_hu) * (r2 / rmax2 - 0.5)[None]
    return out, {"terms": terms, "cupping_hu": float(cupping_hu)}


def ring_field(grid: ScanGrid, *, isocenter_xy, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Concentric rings about the rotation axis (defective detector columns); (ny, nx) HU."""
    x, y = grid.xs, grid.ys
    r = np.sqrt((x - isocenter_xy[0])[None, :] ** 2 + (y - isocenter_xy[1])[:, None] ** 2)
    out = np.zeros(r.shape, dtype=np.float32)
    rings = []
    for _ in range(int(rng.integers(2, 7))):
        r0 = float(rng.uniform(0.5, r.max()))
        amp = float(rng.choice([-1, 1]) * rng.uniform(20, 90))
        w = float(rng.uniform(0.1, 0.3))
        rings.append({"radius_mm": r0, "amp_hu": amp, "width_mm": w})
        out += (amp * np.exp(-0.5 * ((r - r0) / w) ** 2)).astype(np.float32)
    return out, rings
