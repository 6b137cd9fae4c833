"""The scanner model's building blocks: projector units, filtered back-projection, noise gain, field helpers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cochseg3d.phantom import anatomy as an
from cochseg3d.phantom import cbct


def test_fbp_of_projected_disk_recovers_its_attenuation():
    proj = cbct.SliceProjector(64, 64, 0.5, (0.0, 0.0), 180)
    X, Y = np.meshgrid(proj.x, proj.y)
    inside = X**2 + Y**2 < 4.0**2
    mu = 0.02  # /mm, water
    sino = proj.project_sparse(X[inside], Y[inside], np.full(inside.sum(), mu * 0.5 * 0.5))
    assert sino.max() == pytest.approx(2 * 4.0 * mu, rel=0.2)  # chord through the centre
    img = proj.fbp(sino[None])[0]
    assert img[inside & (X**2 + Y**2 < 3.0**2)].mean() == pytest.approx(mu, rel=0.05)
    assert np.abs(img[X**2 + Y**2 > 5.5**2]).mean() < 0.02 * mu


def test_head_background_is_the_chord_through_an_ellipse():
    proj = cbct.SliceProjector(16, 16, 1.0, (0.0, 0.0), 4)  # angles 0, 45, 90, 135 deg
    b = proj.background((0.0, 0.0), (72.0, 92.0), 0.02)
    centre = int(round(-proj.t0 / proj.d))
    assert b[0, centre] == pytest.approx(2 * 92 * 0.02, rel=1e-3)  # theta 0: the line x = 0
    assert b[2, centre] == pytest.approx(2 * 72 * 0.02, rel=1e-3)  # theta 90: the line y = 0


def test_metal_error_grows_with_photon_starvation():
    rng = np.random.default_rng(0)
    p_metal = np.full((1, 200), 4.0)
    p_bg = np.full((1, 200), 3.0)
    rich = cbct.metal_error_sinogram(p_metal, p_bg, n0=1e7, floor=1.0, bh=0.1, rng=rng)
    poor = cbct.metal_error_sinogram(p_metal, p_bg, n0=1e3, floor=1.0, bh=0.1, rng=rng)
    assert np.all(rich < 0)  # beam hardening: metal is under-measured
    assert poor.std() > 5 * rich.std()  # few photons: noisy (streaky) line integrals
    assert not np.any(cbct.metal_error_sinogram(np.zeros((1, 5)), p_bg[:, :5], n0=1e3, floor=1.0, bh=0.1, rng=rng))


def test_noise_gain_matches_filtered_white_noise():
    rng = np.random.default_rng(1)
    sig = (0.8, 1.2, 1.5)
    n = ndimage.gaussian_filter(rng.standard_normal((64, 64, 64)), sig, truncate=3.0)
    assert n[8:-8, 8:-8, 8:-8].std() == pytest.approx(cbct.gaussian_noise_gain(sig), rel=0.05)


def test_trilinear_matches_scipy_zoom_and_keeps_constants():
    rng = np.random.default_rng(2)
    f = rng.random((5, 6, 7)).astype(np.float32)
    coords = [np.linspace(0, s - 1, 2 * s - 1, dtype=np.float32) for s in f.shape]
    out = an.trilinear(f, coords)
    ref = ndimage.map_coordinates(f, np.meshgrid(*coords, indexing="ij"), order=1)
    assert np.allclose(out, ref, atol=1e-5)
    assert np.allclose(an.trilinear(np.full((3, 3, 3), 7.0), [np.linspace(0, 2, 5)] * 3), 7.0)


def test_worley_cells_have_thin_septa():
    grid = an.ScanGrid((60, 60, 60), (0.2, 0.2, 0.2), (-6.0, -6.0, -6.0))
    sl, gap, cell = an.worley_cells(grid, np.zeros(3), np.full(3, 6.0), cell_mm=3.0, coarse_mm=0.5,
                                    rng=np.random.default_rng(3))
    assert gap.shape == cell.shape == tuple(s.stop - s.start for s in sl)
    assert gap.min() >= 0 and len(np.unique(cell)) > 10
    assert 0.05 < np.mean(gap < 0.4) < 0.5  # septa are a minority of the volume
