"""One synthetic post-operative temporal-bone CBCT patient: draws, anatomy, implant, scanner, grid.

Everything random comes from one ``numpy.random.Generator`` seeded by the patient seed, drawn in a
fixed order whatever the overrides, so overriding one parameter leaves every other draw unchanged.
Two CT models degrade the painted patient: "fast" (image domain, :mod:`.cbct`, the default) and
"rtk" (itk-rtk projection physics and FDK, :mod:`.rtk`), whose draws and noise come from a generator
of its own (``[seed, 7]``), so both models see the same anatomy and implant.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cochseg3d.electrodes import ElectrodeModel, find_model
from cochseg3d.utils import sanitize_case_id
from cochseg3d.volume import Volume

from . import anatomy as an
from . import hard
from . import placement as pm
from .implant import ArrayFields, ArrayPath
# the draws and the label rule live in .params; importable from here as before
from .params import (CT_MODELS, LABEL_BAND_MM, LABEL_IMAGE_HU, LABEL_METAL_HU, ORIENTATIONS, OVERRIDES,  # noqa: F401
                     PRESETS, apply_overrides, draw_params)
from .patient import Anatomy, EarFrame, ear_frame, paint_anatomy, place_implant
from .scanner import Scan, acquire, hard_plan, scan_fast, scan_geometry, scan_rtk

log = logging.getLogger(__name__)


@dataclass
class PhantomCase:
    """A synthetic patient.

    Attributes:
        case_id: file-name-safe id.
        image: CBCT grey values (HU-like, int16) on the acquisition grid.
        label: uint8 0/1, the electrode as an annotator paints it (metal + blooming), same grid.
        metal: uint8 0/1, voxels at least half platinum (contacts), same grid.
        contacts: contacts.json content (LPS mm, apex -> base).
        params: every random draw (JSON-serialisable).
        tissue: uint8 tissue classes (:mod:`.anatomy` constants) on the same grid.
        timings: seconds per generation stage (not deterministic; kept out of ``params``).
        intermediate: with ``keep_intermediate=True``: the scanner grid, the true-HU volume, the
            metal attenuation slab and the streak model's arguments (for benchmarks / inspection).

    Note:
        ``metal`` follows its definition strictly: at 0.4 mm voxels a contact of 0.04-0.08 mm^3
        may fill no voxel half-way, so small-preset metal masks can miss contacts; ``label`` never does.
    """

    case_id: str
    image: Volume
    label: Volume
    metal: Volume
    contacts: dict
    params: dict
    tissue: Volume | None = None
    timings: dict = field(default_factory=dict)
    intermediate: dict = field(default_factory=dict)


def _truth(fld: ArrayFields, m: np.ndarray, lo: np.ndarray, img: np.ndarray, p: dict, pl: hard.Plan | None,
           grid: an.ScanGrid) -> tuple[np.ndarray, np.ndarray]:
    """Label (what an annotator paints) and metal (at least half platinum) on the scanner grid; nothing
    outside a truncated field (``pl``)."""
    k, j, i = fld.kji.T
    mb = m[k - lo[0], j - lo[1], i - lo[2]]
    in_band = fld.dist <= fld.radius + LABEL_BAND_MM
    bright = img[k, j, i] >= p["offset_hu"] + p["gain"] * LABEL_IMAGE_HU
    lab_sparse = (in_band & (mb >= LABEL_METAL_HU) & bright) | (fld.contact >= 0.5)
    label = np.zeros(img.shape, dtype=np.uint8)
    label[k[lab_sparse], j[lab_sparse], i[lab_sparse]] = 1
    metal = np.zeros(img.shape, dtype=np.uint8)
    cm = fld.contact >= 0.5
    metal[k[cm], j[cm], i[cm]] = 1
    if pl is not None and pl.field_r is not None:  # nothing is painted outside the reconstructed field
        out_t = pl.field_mask(grid)
        pl.record["truncation"]["label_voxels_outside"] = int(label[:, out_t].sum())
        label[:, out_t] = 0
        metal[:, out_t] = 0
    return label, metal


def generate_patient(seed: int, *, preset: str = "small", orientation: str = "axial", keep_intermediate: bool = False,
                     ct_model: str = "fast", motion_mm: float | str = 0.0, screw: bool | str = False,
                     dental_fillings: int | str = 0, fov_truncation: float | str = 0.0, array_kind: str = "normal",
                     **overrides: Any) -> PhantomCase:
    """Generate one synthetic post-operative temporal-bone CBCT with its ground truth.

    Args:
        seed: patient seed; the same seed and overrides give bit-identical output.
        preset: "small" (96^3 at 0.4 mm) or "clinical" (200^3 at 0.2 mm).
        orientation: "axial" (IOP 1,0,0,0,1,0), "coronal" (1,0,0,0,0,-1), "sagittal" (0,1,0,0,0,-1),
            "oblique" (a rotated grid, image and truth resampled onto it) or "mixed" (drawn).
        keep_intermediate: keep intermediate arrays in ``PhantomCase.intermediate``.
        ct_model: "fast" (image-domain CBCT model, the default) or "rtk" (itk-rtk projection,
            polychromatic physics and FDK, :mod:`.rtk`; its draws come from a generator of their own
            seeded by ``seed``, so the anatomy and implant are the fast model's).
        **overrides: any of ``OVERRIDES``: vendor, model, side ("left" / "right"), spacing_mm (float
            or (i, j, k) mm), shape (int or (i, j, k)), noise_hu, offset_hu, streak_strength,
            saturation_hu, psf_sigma_mm, aid_deg, mastoidectomy, rings, case_id, oblique_deg,
            mu_platinum_per_mm, fov_center_ear_mm (field-of-view centre, mm lateral / anterior /
            superior of the cochlea), gain (grey value = gain * HU + offset_hu), rtk (a dict
            overriding :func:`.rtk.draw_rtk_params` draws; ct_model "rtk" only).
        motion_mm, screw, dental_fillings, fov_truncation: the hard conditions of :mod:`.hard`
            (peak-to-peak cochlea motion in mm; a titanium bone-anchored screw; N amalgam fillings;
            the measured field's radius cut by this fraction), each off by default and ``"random"``
            to draw it; recorded in ``params["hard_conditions"]``. Neither truth label nor contacts
            include the screw or the fillings.
        array_kind: "normal", "fold_over", "partial", "kink" or "random" (:mod:`.placement`); the truth's
            ``flags`` and ``extracochlear_contacts`` say what a reader should find.

    Returns:
        The :class:`PhantomCase`; image in HU-like grey values on the acquisition grid.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    if orientation not in (*ORIENTATIONS, "mixed"):
        raise ValueError(f"unknown orientation {orientation!r}; use axial, coronal, sagittal, oblique or mixed")
    if ct_model not in CT_MODELS:
        raise ValueError(f"unknown ct_model {ct_model!r}; use fast or rtk")
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    d = _draw(int(seed), preset, orientation, ct_model, overrides, (motion_mm, screw, dental_fillings, fov_truncation),
              array_kind)
    p, rng, model, plc, orientation, case_id = d.p, d.rng, d.model, d.placement, d.p["orientation"], d.p["case_id"]

    t0 = time.perf_counter()
    f = EarFrame(*ear_frame(p), p["skull_scale"])
    scan = scan_geometry(p, preset, orientation, f)
    P = an.Painter(scan.grid, p["hu"]["soft"], an.SOFT)
    anat = paint_anatomy(P, p, f, rng)
    timings["anatomy"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    path, fld = place_implant(P, p, f, anat, model, plc)
    timings["implant"] = time.perf_counter() - t0

    pl = None
    if hard.any_on(d.hard):
        pl = hard_plan(d.hard, d.rng_hard, scan, f, path, bool(p["fov_cylinder"]))
        p["hard_conditions"] = pl.record
    inter: dict | None = {} if keep_intermediate else None
    if ct_model == "rtk":
        img, m, lo, truth_img = scan_rtk(P, fld, p, scan, f, d.rng_rtk, timings, pl)
    else:
        img, m, lo, truth_img = scan_fast(P, fld, p, scan, f, rng, timings, inter, pl)

    t0 = time.perf_counter()
    label, metal = _truth(fld, m, lo, truth_img, p, pl, scan.grid)
    timings["truth"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    arrays, geo = acquire(img, label, metal, P.tissue, fld, scan, orientation)

    def vol(arr, **meta):
        return Volume(arr, geo[0], geo[1], geo[2], {"case_id": case_id, **meta})

    image = vol(np.rint(arrays[0]).astype(np.int16), modality="CT", orientation=orientation)
    label_v, metal_v, tissue_v = vol(arrays[1]), vol(arrays[2]), vol(arrays[3])
    timings["reorient"] = time.perf_counter() - t0

    contacts = _contacts_truth(case_id, model, p, path, anat, plc)
    _record_geometry(p, model, anat, scan)
    timings["total"] = time.perf_counter() - t_all
    return PhantomCase(case_id, image, label_v, metal_v, contacts, _jsonable(p), tissue_v, timings, inter or {})


@dataclass
class _Draws:
    """A patient's draws after the overrides: parameters and the generators of the later stages."""

    p: dict[str, Any]
    rng: np.random.Generator  # the anatomy and the fast CT model
    rng_rtk: np.random.Generator | None
    hard: dict
    rng_hard: np.random.Generator
    placement: pm.Placement
    model: ElectrodeModel


def _draw(seed: int, preset: str, orientation: str, ct_model: str, overrides: dict[str, Any], hard_args: tuple,
          array_kind: str) -> _Draws:
    """Every draw of the patient, in the fixed order, with the overrides applied and derived values set."""
    rng = np.random.default_rng(seed)
    p = draw_params(rng)
    apply_overrides(p, overrides)
    p["seed"] = seed
    p["preset"] = preset
    rtk_overrides, rng_rtk = p.pop("rtk", None) or {}, None
    if ct_model == "rtk":
        from .rtk import rtk_params

        p["rtk"], rng_rtk = rtk_params(seed, rtk_overrides)
    elif rtk_overrides:
        raise ValueError("the rtk override needs ct_model='rtk'")
    p["ct_model"] = ct_model
    hv, rng_hard = hard.resolve(seed, *hard_args)
    p["hard_conditions"] = dict(hv)
    plc = pm.resolve(seed, array_kind)
    p["array_placement"] = plc.record
    if orientation == "mixed":
        orientation = p["mixed_orientation"]
    p["orientation"] = orientation
    model = find_model(p["model"])
    if "aid_deg" not in p:
        p["aid_deg"] = float(model.aid_mean_deg + model.aid_sd_deg * p["aid_z"])
    case_id = sanitize_case_id(p.get("case_id") or f"phantom{seed:06d}")
    p["case_id"] = case_id
    return _Draws(p, rng, rng_rtk, hv, rng_hard, plc, model)


def _contacts_truth(case_id: str, model: ElectrodeModel, p: dict, path: ArrayPath, anat: Anatomy,
                    plc: pm.Placement) -> dict:
    """contacts.json: the contacts (LPS mm, apex -> base), their angles, depths and the clinical truth."""
    coch = anat.coch
    contacts = {
        "case_id": case_id, "vendor": model.vendor, "model": model.model, "side": p["side"],
        "n_contacts": model.n_contacts, "pitch_mm": model.pitch_mm, "insertion_angle_deg": round(p["aid_deg"], 3),
        "contacts_lps_mm": np.round(path.contacts_lps, 4).tolist(),
        "inside_cochlea": [bool(v) for v in path.inside_cochlea],
        "contact_angles_deg": _unwrapped_angles(coch, path.contacts_lps).round(3).tolist(),
        # clinical truth (issue 13): the consensus frame, depth along the array from the round window
        "cochlear_frame": coch.consensus_frame(),
        "contact_depths_mm": np.round(path.s_round_window - path.contacts_s, 4).tolist(),
        "contact_modiolus_distance_mm": np.round(np.linalg.norm(coch.to_local(path.contacts_lps)[:, :2], axis=1),
                                                 4).tolist(),
        "electrode_path_lps_mm": np.round(path.points[::10], 3).tolist(),
    }
    contacts.update(pm.truth(plc, path, contacts["contact_angles_deg"]))
    return contacts


def _record_geometry(p: dict, model: ElectrodeModel, anat: Anatomy, scan: Scan) -> None:
    """What the truth was built from, into ``params``: electrode, cochlea, round window, grid, label rule."""
    coch = anat.coch
    p["electrode"] = model.to_dict()
    p["cochlea"] = coch.to_dict()
    p["round_window_lps_mm"] = anat.rw.tolist()
    grid = scan.grid
    p["scanner_grid"] = {"shape_kji": list(grid.shape), "spacing_mm": list(grid.spacing_mm),
                         "origin_mm": list(grid.origin_mm)}
    p["label_rule"] = {"band_mm": LABEL_BAND_MM, "metal_hu": LABEL_METAL_HU, "image_hu_above_offset": LABEL_IMAGE_HU}


def _unwrapped_angles(coch: an.Cochlea, pts: np.ndarray) -> np.ndarray:
    """Cumulative angle (deg) from the round window of points ordered apex -> base."""
    ang = np.unwrap(coch.angle_of(np.asarray(pts)[::-1]))  # base -> apex, increasing
    if ang[0] > np.radians(300):  # a basal contact just short of the round window
        ang -= 2 * np.pi
    return np.degrees(ang[::-1])


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x
