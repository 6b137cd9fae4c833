"""The scan of a painted patient: its grids, the two CT models ("fast" and "rtk") and the output grid.

"fast" degrades the true HU in the image domain (:mod:`.cbct`); "rtk" projects and reconstructs with
itk-rtk (:mod:`.rtk`). Both end in :func:`grey_values` (gain, offset, saturation, outside the field).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from cochseg3d.volume import Grid, Volume

from . import anatomy as an
from . import cbct
from . import hard
from .implant import ArrayFields, ArrayPath
from .params import grid_for
from .patient import EarFrame

#: DICOM orientation codes (ITK / DICOMOrient convention) of the axis-aligned acquisitions
_ORIENT_CODES = {"axial": "LPS", "coronal": "LIP", "sagittal": "PIR"}


@dataclass
class Scan:
    grid: an.ScanGrid  # the axis-aligned grid the scanner reconstructs (rotation axis = k)
    center: np.ndarray  # isocentre = field-of-view centre, LPS mm
    target: Grid | None  # the oblique output grid, None for axis-aligned acquisitions



def scan_geometry(p: dict, preset: str, orientation: str, f: EarFrame) -> Scan:
    sp, shape_ijk = grid_for(p, preset)
    fov_c = f.ear(p["fov_center_ear_mm"])
    target = None
    if orientation == "oblique":
        D = an.rotation(np.asarray(p["oblique_axis"], float), np.radians(p["oblique_deg"]))
        ext = (np.asarray(shape_ijk) - 1) * np.asarray(sp)
        origin = fov_c - D @ (ext / 2)
        target = Grid(tuple(shape_ijk), sp, exact(origin), tuple(D.ravel()))
        corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]) * ext
        lps = corners @ D.T + origin
        lo, hi = lps.min(0), lps.max(0)
        scan_shape = tuple(int(np.ceil((h - l) / s)) + 1 for l, h, s in zip(lo, hi, sp))
        scan_origin = exact(lo)
    else:
        scan_shape = shape_ijk
        scan_origin = exact(fov_c - (np.asarray(shape_ijk) - 1) / 2 * np.asarray(sp))
    if int(np.prod(scan_shape)) > 100_000_000:
        raise ValueError(f"a {'x'.join(map(str, scan_shape))} grid is too large to simulate; "
                         "pass a smaller shape or a coarser spacing_mm")
    return Scan(an.ScanGrid(tuple(scan_shape[::-1]), sp, scan_origin), fov_c, target)


def scan_fast(P: an.Painter, fld: ArrayFields, p: dict, scan: Scan, f: EarFrame, rng: np.random.Generator,
             timings: dict, inter: dict | None,
             pl: hard.Plan | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CBCT degradation of ``P.hu``; returns the image, the blurred metal HU (sub-box), its corner and
    the image the label rule reads (the image itself, or without the hard conditions ``pl``)."""
    grid, sp, true = scan.grid, scan.grid.spacing_mm, P.hu
    t0 = time.perf_counter()
    sig = [p["psf_sigma_mm"] / s for s in sp[::-1]]
    noisy = _quantum_noise(true, grid, sig, p, rng)
    timings["noise"] = time.perf_counter() - t0

    # PSF: Gaussian core for everything, plus a wide tail for the (very bright) metal only
    t0 = time.perf_counter()
    img = ndimage.gaussian_filter(noisy, sig, truncate=3.0)
    del noisy
    hu_pt = float(cbct.hu_from_mu(p["mu_platinum_per_mm"]))
    pad = int(np.ceil(3 * p["psf_tail_sigma_mm"] / min(sp))) + 1
    lo, hi, fm = _metal_box(fld, pad, grid.shape)
    w = p["psf_tail_weight"]
    m = ndimage.gaussian_filter(fm, sig, truncate=3.0) * np.float32((1 - w) * hu_pt)
    tail = [p["psf_tail_sigma_mm"] / s for s in sp[::-1]]
    m += ndimage.gaussian_filter(fm, tail, truncate=3.0) * np.float32(w * hu_pt)
    img[tuple(slice(a_, b_) for a_, b_ in zip(lo, hi))] += m
    p["hu_platinum"] = hu_pt
    timings["psf"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    streak_kw = _add_streaks(img, fm, lo, hi, p, scan, f, rng, inter, true)
    timings["streaks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    truth_img = _shade_and_grey(img, P, p, scan, rng, pl, streak_kw)
    timings["shading_saturation"] = time.perf_counter() - t0
    return img, m, lo, truth_img


def _quantum_noise(true: np.ndarray, grid: an.ScanGrid, sig: list[float], p: dict,
                   rng: np.random.Generator) -> np.ndarray:
    """``true`` plus quantum noise, before the reconstruction blur (so the PSF also sets its grain); its
    level grows with the local density (rays through the petrous bone carry fewer photons)."""
    gain = cbct.gaussian_noise_gain(sig)
    dens = ndimage.gaussian_filter(np.clip((true[::4, ::4, ::4] + 200.0) / 2000.0, 0, 1), 1.5)
    coords = [np.clip(np.arange(n, dtype=np.float32) / 4, 0, s - 1) for n, s in zip(grid.shape, dens.shape)]
    noisy = an.trilinear(dens, coords)
    noisy *= np.float32(0.4 * p["noise_hu"] / gain)
    noisy += np.float32(0.8 * p["noise_hu"] / gain)
    noisy *= rng.standard_normal(grid.shape, dtype=np.float32)
    noisy += true
    return noisy


def _metal_box(fld: ArrayFields, pad: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The metal fraction in the array's box grown by ``pad`` voxels: (low corner, high corner, box)."""
    k, j, i = fld.kji.T
    lo = np.maximum(fld.kji.min(0) - pad, 0)
    hi = np.minimum(fld.kji.max(0) + pad + 1, np.array(shape))
    fm = np.zeros(tuple(hi - lo), dtype=np.float32)
    fm[k - lo[0], j - lo[1], i - lo[2]] = fld.metal
    return lo, hi, fm


def _add_streaks(img: np.ndarray, fm: np.ndarray, lo: np.ndarray, hi: np.ndarray, p: dict, scan: Scan,
                 f: EarFrame, rng: np.random.Generator, inter: dict | None, true: np.ndarray) -> dict:
    """The metal streaks, in place on the slices the array spans; returns the streak model's arguments."""
    grid = scan.grid
    metal_mu = np.zeros((hi[0] - lo[0], grid.shape[1], grid.shape[2]), dtype=np.float32)
    metal_mu[:, lo[1]:hi[1], lo[2]:hi[2]] = fm * np.float32(p["mu_platinum_per_mm"])
    head_c = f.ear([-60.0, -5.0, 0.0])
    streak_kw = dict(isocenter_xy=tuple(scan.center[:2]), head_center_xy=tuple(head_c[:2]),
                     head_axes_mm=(72.0, 92.0), n0=p["photons_per_bin"], floor=p["count_floor"],
                     bh=p["beam_hardening"], strength=p["streak_strength"], n_angles=90)
    if inter is not None:
        inter.update(grid=grid, true_hu=true.copy(), metal_mu=metal_mu, z_range=(int(lo[0]), int(hi[0])),
                     streak_kw=dict(streak_kw))
    img[lo[0]:hi[0]] += cbct.streak_image(grid, metal_mu, (int(lo[0]), int(hi[0])), rng=rng, **streak_kw)
    return streak_kw


def _shade_and_grey(img: np.ndarray, P: an.Painter, p: dict, scan: Scan, rng: np.random.Generator,
                    pl: hard.Plan | None, streak_kw: dict) -> np.ndarray:
    """Shading, rings, the field's rim, the hard conditions and the grey values, in place on ``img``;
    returns the image the label rule reads (``img`` itself without hard conditions)."""
    grid = scan.grid
    shade, p["shading"] = cbct.shading_field(grid, amplitude_hu=p["shading_hu"], cupping_hu=p["cupping_hu"],
                                            isocenter_xy=scan.center[:2], rng=rng)
    img += shade
    del shade
    if p["rings"]:
        rings, p["ring_list"] = cbct.ring_field(grid, isocenter_xy=scan.center[:2], rng=rng)
        img += rings[None]
    out2d = None
    if p["fov_cylinder"]:
        out2d, r, radius = fov_cylinder(scan)
        # projections truncated by the small field brighten its edge
        img += (np.float32(p["truncation_rim_hu"]) * np.exp(-(radius - np.minimum(r, radius)) / 2.0))[None]
    truth_img = img
    if pl is not None:  # the label reads the scan without the hard conditions
        truth_img = img.copy()
        grey_values(truth_img, P, p, out2d)
        out_t = hard.apply_fast(img, P.hu, pl, grid, p, streak_kw, pl.rng)
        out2d = out_t if out2d is None else (out2d if out_t is None else out2d | out_t)
    grey_values(img, P, p, out2d)
    return truth_img


def fov_cylinder(scan: Scan) -> tuple[np.ndarray, np.ndarray, float]:
    """Reconstructed field: a cylinder about the rotation axis; (outside mask, radius map mm, radius mm)."""
    grid, sp = scan.grid, scan.grid.spacing_mm
    r = np.sqrt((grid.xs - scan.center[0])[None, :] ** 2 + (grid.ys - scan.center[1])[:, None] ** 2)
    size = (grid.shape[2], grid.shape[1]) if scan.target is None else scan.target.size[:2]
    radius = 0.5 * min(size[0] * sp[0], size[1] * sp[1])
    return r > radius, r, radius


def grey_values(img: np.ndarray, P: an.Painter, p: dict, out2d: np.ndarray | None) -> None:
    """Both CT models' last step, in place: gain, offset (grey values are not calibrated HU), saturation."""
    img *= np.float32(p["gain"])
    img += np.float32(p["offset_hu"])
    np.clip(img, -1024.0, p["saturation_hu"], out=img)
    if out2d is not None:
        img[:, out2d] = np.float32(p["outside_fov_hu"])
        P.tissue[:, out2d] = an.OUTSIDE


def scan_rtk(P: an.Painter, fld: ArrayFields, p: dict, scan: Scan, f: EarFrame, rng: np.random.Generator,
                 timings: dict, pl: hard.Plan | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The itk-rtk CBCT model (:mod:`.rtk`); the truth's blurred metal uses that system's PSF. With the
    hard conditions ``pl`` the patient is scanned twice: as is (what the label rule reads) and with them."""
    import copy

    from .rtk import simulate_rtk

    t0 = time.perf_counter()
    rng_hard = copy.deepcopy(rng) if pl is not None else None  # the same photon-noise stream
    head_xy = tuple(f.ear([-60.0, -5.0, 0.0])[:2])
    img, info = simulate_rtk(P.hu, fld, scan.grid, scan.center, p["rtk"], rng, fov_cylinder=p["fov_cylinder"],
                             head_center_xy=head_xy, timings=timings)
    p["hu_platinum"] = info.pop("hu_platinum")
    p["rtk_info"] = info
    sig = np.asarray(info["psf_sigma_mm"]) / np.asarray(scan.grid.spacing_mm[::-1])
    pad = int(np.ceil(3 * sig.max())) + 1
    lo, hi, fm = _metal_box(fld, pad, scan.grid.shape)
    m = ndimage.gaussian_filter(fm, sig, truncate=3.0) * np.float32(p["hu_platinum"])
    out2d = fov_cylinder(scan)[0] if p["fov_cylinder"] else None
    grey_values(img, P, p, out2d)
    truth_img = img
    if pl is not None:
        img, out2d = _rtk_hard(P, fld, p, scan, pl, rng_hard, head_xy, out2d)
        grey_values(img, P, p, out2d)
    timings["rtk_total"] = time.perf_counter() - t0
    return img, m, lo, truth_img


def _rtk_hard(P, fld, p, scan: Scan, pl: hard.Plan, rng, head_xy, out2d):
    """The rtk scan with the hard conditions: moving patient, extra metal, truncated field."""
    from .rtk import Extras, simulate_rtk

    iso = np.asarray(scan.center, float).copy()
    ex = Extras(motion=pl.motion, metals=pl.metals())
    if pl.motion is not None:
        ex.blur = lambda a: hard.motion_blur(a, scan.grid, pl.motion)
    if pl.field_r is not None:
        iso[:2] = pl.field_xy  # the rotation axis moves with the smaller field
        ex.fov_radius_mm, ex.taper_mm = pl.field_r, pl.record["truncation"]["extrapolation_taper_mm"]
        out_t = pl.field_mask(scan.grid)
        out2d = out_t if out2d is None else out2d | out_t
    img, _ = simulate_rtk(hard.displaced(P.hu, pl), fld, scan.grid, iso, p["rtk"], rng,
                          fov_cylinder=p["fov_cylinder"], head_center_xy=head_xy, extras=ex)
    return img, out2d


def hard_plan(hv: dict, rng: np.random.Generator, scan: Scan, f: EarFrame, path: ArrayPath,
               cylinder: bool) -> hard.Plan:
    """The hard conditions' geometry; the field they start from is the grid's inscribed cylinder."""
    grid, sp = scan.grid, scan.grid.spacing_mm
    size = (grid.shape[2], grid.shape[1]) if scan.target is None else scan.target.size[:2]
    radius = 0.5 * min(size[0] * sp[0], size[1] * sp[1])
    return hard.plan(hv, rng, grid, f.C, f.E, path.points, np.asarray(path.contacts_lps), scan.center[:2], radius,
                     cylinder)


def acquire(img: np.ndarray, label: np.ndarray, metal: np.ndarray, tissue: np.ndarray, fld: ArrayFields,
             scan: Scan, orientation: str) -> tuple[list[np.ndarray], tuple]:
    """Image, label, metal and tissue on the output grid, and that grid's (spacing, origin, direction)."""
    grid = scan.grid
    scan_vol = Volume(img, grid.spacing_mm, grid.origin_mm, np.eye(3))
    if orientation == "oblique":
        ref = scan.target.reference_image()

        def rs(arr, interp, default, out_type):
            return sitk.GetArrayFromImage(sitk.Resample(scan_vol.with_array(arr).to_sitk(), ref, sitk.Transform(),
                                                        interp, default, out_type))

        k, j, i = fld.kji.T
        cfrac = np.zeros(grid.shape, dtype=np.float32)
        cfrac[k, j, i] = fld.contact
        metal_o = (rs(cfrac, sitk.sitkLinear, 0.0, sitk.sitkFloat32) >= 0.5).astype(np.uint8)
        label_o = (rs(label.astype(np.float32), sitk.sitkLinear, 0.0, sitk.sitkFloat32) >= 0.5).astype(np.uint8)
        label_o |= metal_o
        arrays = [rs(img, sitk.sitkLinear, -1024.0, sitk.sitkFloat32), label_o, metal_o,
                  rs(tissue, sitk.sitkNearestNeighbor, float(an.AIR), sitk.sitkUInt8)]
        return arrays, (scan.target.spacing_mm, scan.target.origin_mm, scan.target.direction_matrix)
    arrays, geo = [], None
    for arr in (img, label, metal, tissue):
        o = sitk.DICOMOrient(scan_vol.with_array(arr).to_sitk(), _ORIENT_CODES[orientation])
        arrays.append(sitk.GetArrayFromImage(o))
        if geo is None:
            geo = (o.GetSpacing(), exact(o.GetOrigin()), np.round(np.asarray(o.GetDirection()).reshape(3, 3)))
    return arrays, geo


def exact(xyz) -> tuple[float, float, float]:
    """Round LPS mm to 1/1024 mm: exact in float32 (NIfTI) and in a DICOM decimal string alike."""
    return tuple(float(v) for v in np.round(np.asarray(xyz, float) * 1024.0) / 1024.0)
