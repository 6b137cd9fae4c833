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
import SimpleITK as sitk
from scipy import ndimage

from cochseg3d.electrodes import VENDORS, find_model, models_of
from cochseg3d.utils import sanitize_case_id
from cochseg3d.volume import Grid, Volume

from . import anatomy as an
from . import cbct
from . import hard
from . import placement as pm
from .implant import ArrayFields, ArrayPath, array_fields

log = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, Any]] = {
    "small": {"shape": 96, "spacing_mm": 0.4},
    "clinical": {"shape": 200, "spacing_mm": 0.2},
}
ORIENTATIONS = ("axial", "coronal", "sagittal", "oblique")
#: DICOM orientation codes (ITK / DICOMOrient convention) of the axis-aligned acquisitions
_ORIENT_CODES = {"axial": "LPS", "coronal": "LIP", "sagittal": "PIR"}

#: label rule: within this distance (mm) of the carrier surface, brightness from metal >= METAL_HU
#: and the degraded image >= offset + IMAGE_HU (what an annotator's threshold keeps), or platinum
LABEL_BAND_MM = 1.2
LABEL_METAL_HU = 1000.0
LABEL_IMAGE_HU = 1200.0

OVERRIDES = {
    "vendor", "model", "side", "spacing_mm", "shape", "noise_hu", "offset_hu", "streak_strength",
    "saturation_hu", "psf_sigma_mm", "aid_deg", "mastoidectomy", "rings", "case_id", "oblique_deg",
    "mu_platinum_per_mm", "fov_center_ear_mm", "gain", "rtk",
}
CT_MODELS = ("fast", "rtk")


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


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def draw_params(rng: np.random.Generator) -> dict[str, Any]:
    """All scalar random draws of a patient, in a fixed order."""
    p: dict[str, Any] = {}
    p["side"] = str(rng.choice(["left", "right"]))
    vendor = VENDORS[int(rng.integers(len(VENDORS)))]  # vendors equally likely, then a model of it
    p["model_u"] = float(rng.random())
    ms = models_of(vendor)
    p["vendor"], p["model"] = vendor, ms[min(int(p["model_u"] * len(ms)), len(ms) - 1)].model
    p["aid_z"] = float(np.clip(rng.standard_normal(), -2.2, 2.2))
    p["head_rotation_deg"] = (rng.normal(0, 4, 3)).tolist()
    p["cochlea_position_lps_mm"] = [_u(rng, 28, 36), _u(rng, 0, 12), _u(rng, -28, -16)]
    p["a_value_mm"] = float(np.clip(rng.normal(9.2, 0.4), 8.4, 10.4))
    p["turns"] = _u(rng, 2.45, 2.8)
    p["cochlea_height_mm"] = _u(rng, 3.0, 3.8)
    p["canal_base_mm"] = _u(rng, 0.9, 1.1)
    p["canal_apex_mm"] = _u(rng, 0.5, 0.6)
    p["axis_to_lr_deg"] = float(np.clip(rng.normal(52, 3), 44, 60))
    p["axis_inferior_tilt_deg"] = _u(rng, 15, 30)
    p["hu"] = {"capsule": _u(rng, 1600, 2000), "bone": _u(rng, 1100, 1500), "modiolus": _u(rng, 600, 900),
               "soft": _u(rng, 30, 60), "fluid": _u(rng, 0, 20), "silicone": _u(rng, 150, 300),
               "ossicle": _u(rng, 1000, 1500), "air": -1000.0}
    p["pneumatisation"] = _u(rng, 0.3, 0.9)
    p["air_cell_mm"] = _u(rng, 2.5, 5.0)
    p["septum_mm"] = _u(rng, 0.25, 0.5)
    p["mastoidectomy"] = bool(rng.random() < 0.85)
    p["cavity_fill"] = str(rng.choice(["air", "fluid"], p=[0.7, 0.3]))
    p["fov_center_ear_mm"] = [_u(rng, 3, 8), _u(rng, -6, -1), _u(rng, -1, 3)]
    p["lead_jitter_mm"] = rng.normal(0, 1.5, (3, 3)).tolist()
    p["psf_sigma_mm"] = _u(rng, 0.22, 0.35)
    p["psf_tail_weight"] = _u(rng, 0.01, 0.03)
    p["psf_tail_sigma_mm"] = _u(rng, 0.6, 1.0)
    p["mu_platinum_per_mm"] = _u(rng, 7.0, 10.0)
    p["noise_hu"] = _u(rng, 30, 110)
    p["offset_hu"] = float(rng.choice([0.0, _u(rng, -300, 400)], p=[0.3, 0.7]))
    p["saturation_hu"] = float(rng.choice([3071.0, 4095.0], p=[0.7, 0.3]))
    p["streak_strength"] = _u(rng, 0.5, 2.5)
    p["photons_per_bin"] = float(10 ** rng.uniform(3.7, 4.7))
    p["count_floor"] = _u(rng, 1, 5)
    p["beam_hardening"] = _u(rng, 0.05, 0.2)
    p["shading_hu"] = _u(rng, 20, 120)
    p["cupping_hu"] = _u(rng, -60, 60)
    p["rings"] = bool(rng.random() < 0.3)
    p["oblique_deg"] = _u(rng, 10, 25)
    p["oblique_axis"] = rng.normal(size=3).tolist()
    p["mixed_orientation"] = str(rng.choice(ORIENTATIONS))
    p["skull_scale"] = _u(rng, 0.92, 1.08)  # size of the temporal bone around the labyrinth
    p["middle_ear_halfwidth_mm"] = _u(rng, 1.6, 2.4)
    p["eac_radius_mm"] = _u(rng, 3.2, 4.5)  # external auditory canal, ~7-9 mm wide
    p["iac_radius_mm"] = _u(rng, 1.8, 2.6)  # internal auditory canal, ~4-5 mm wide
    p["cavity_scale"] = _u(rng, 0.8, 1.2)
    p["fov_cylinder"] = bool(rng.random() < 0.5)
    p["outside_fov_hu"] = float(rng.choice([-1024.0, -1000.0, 0.0]))
    p["truncation_rim_hu"] = _u(rng, 0, 250)  # bright rim at the edge of a truncated field
    p["gain"] = _u(rng, 0.85, 1.15)  # grey values are not calibrated HU: scale ...
    p["capsule_mm"] = _u(rng, 1.5, 2.5)  # otic capsule thickness around the cochlear canal
    return p


def _apply_overrides(p: dict[str, Any], overrides: dict[str, Any]) -> None:
    unknown = set(overrides) - OVERRIDES
    if unknown:
        raise ValueError(f"unknown phantom override(s) {sorted(unknown)}; known: {sorted(OVERRIDES)}")
    if "vendor" in overrides and "model" not in overrides:
        ms = models_of(overrides["vendor"])
        p["model"] = ms[min(int(p["model_u"] * len(ms)), len(ms) - 1)].model
        p["vendor"] = ms[0].vendor
    if "model" in overrides:
        m = find_model(overrides["model"])
        p["vendor"], p["model"] = m.vendor, m.model
    for k, v in overrides.items():
        if k in ("vendor", "model"):
            continue
        p[k] = v
    if not -1024 < float(p["saturation_hu"]) <= 31743:
        raise ValueError(f"saturation_hu must be in (-1024, 31743] to fit int16 DICOM, got {p['saturation_hu']}")
    if p["side"] not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {p['side']!r}")


def _ear_frame(p: dict) -> tuple[np.ndarray, np.ndarray]:
    """(C, E): cochlea centre (LPS) and the ear frame's columns (lateral, anterior, superior) in LPS."""
    lat = np.array([1.0 if p["side"] == "left" else -1.0, 0, 0])
    E = np.stack([lat, [0, -1.0, 0], [0, 0, 1.0]], axis=1)
    yaw, pitch, roll = np.radians(p["head_rotation_deg"])
    R = an.rotation([0, 0, 1], yaw) @ an.rotation([1, 0, 0], pitch) @ an.rotation([0, 1, 0], roll)
    c = np.array(p["cochlea_position_lps_mm"], float)
    c[0] = abs(c[0]) * (1 if p["side"] == "left" else -1)
    return c, R @ E


def _grid_for(p: dict, preset: str) -> tuple[tuple[float, float, float], tuple[int, int, int]]:
    """Spacing (mm) and size in ITK order ``(i, j, k)``; an overridden spacing keeps the preset's field."""
    pre = PRESETS[preset]
    sp = p.get("spacing_mm", pre["spacing_mm"])
    sp = tuple(float(s) for s in (sp if np.ndim(sp) else (sp, sp, sp)))
    fov = pre["shape"] * pre["spacing_mm"]
    shape = p.get("shape")
    if shape is None:
        shape = tuple(int(round(fov / s)) for s in sp)  # (i, j, k)
    else:
        shape = tuple(int(s) for s in (shape if np.ndim(shape) else (shape,) * 3))
    if len(sp) != 3 or min(sp) <= 0 or len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"spacing_mm must be 1 or 3 positive values and shape 1 or 3 sizes >= 1; "
                         f"got spacing_mm={p.get('spacing_mm')}, shape={p.get('shape')}")
    return sp, shape


@dataclass
class _Ear:
    """The ear frame: cochlea centre ``C`` (LPS mm) and axes ``E`` (columns lateral, anterior, superior)."""

    C: np.ndarray
    E: np.ndarray
    skull_scale: float

    def ear(self, v) -> np.ndarray:
        """LPS point of ear-frame coordinates ``v`` (mm lateral, anterior, superior of the cochlea)."""
        return self.C + self.E @ np.asarray(v, float)

    def far(self, v) -> np.ndarray:
        """As :meth:`ear` for structures away from the labyrinth, which scale with the skull."""
        return self.C + self.E @ (np.asarray(v, float) * self.skull_scale)

    def rows(self, rows) -> np.ndarray:
        """Ear-frame unit vectors (rows) in LPS."""
        return np.asarray(rows, float) @ self.E.T


@dataclass
class _Scan:
    grid: an.ScanGrid  # the axis-aligned grid the scanner reconstructs (rotation axis = k)
    center: np.ndarray  # isocentre = field-of-view centre, LPS mm
    target: Grid | None  # the oblique output grid, None for axis-aligned acquisitions


@dataclass
class _Anatomy:
    coch: an.Cochlea
    rw: np.ndarray  # round window (LPS mm)
    u_me: float  # lateral coordinate of the middle ear's centre (ear frame, mm)
    cav: np.ndarray  # mastoid cavity centre (ear frame, mm, before skull scaling)


def _scan_geometry(p: dict, preset: str, orientation: str, f: _Ear) -> _Scan:
    sp, shape_ijk = _grid_for(p, preset)
    fov_c = f.ear(p["fov_center_ear_mm"])
    target = None
    if orientation == "oblique":
        D = an.rotation(np.asarray(p["oblique_axis"], float), np.radians(p["oblique_deg"]))
        ext = (np.asarray(shape_ijk) - 1) * np.asarray(sp)
        origin = fov_c - D @ (ext / 2)
        target = Grid(tuple(shape_ijk), sp, _exact(origin), tuple(D.ravel()))
        corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]) * ext
        lps = corners @ D.T + origin
        lo, hi = lps.min(0), lps.max(0)
        scan_shape = tuple(int(np.ceil((h - l) / s)) + 1 for l, h, s in zip(lo, hi, sp))
        scan_origin = _exact(lo)
    else:
        scan_shape = shape_ijk
        scan_origin = _exact(fov_c - (np.asarray(shape_ijk) - 1) / 2 * np.asarray(sp))
    if int(np.prod(scan_shape)) > 100_000_000:
        raise ValueError(f"a {'x'.join(map(str, scan_shape))} grid is too large to simulate; "
                         "pass a smaller shape or a coarser spacing_mm")
    return _Scan(an.ScanGrid(tuple(scan_shape[::-1]), sp, scan_origin), fov_c, target)


def _paint_anatomy(P: an.Painter, p: dict, f: _Ear, rng: np.random.Generator) -> _Anatomy:
    """Bone, air spaces, labyrinth, vessels and the cochlea, in painting order (later wins)."""
    grid, hu, ear, far, rows_ear = P.grid, p["hu"], f.ear, f.far, f.rows
    C, E = f.C, f.E
    tex = an.smooth_field(grid.shape, grid.spacing_mm, scale_mm=1.6, rng=rng)
    lumpy = (an.smooth_field(grid.shape, grid.spacing_mm, scale_mm=5.0, rng=rng), 1.5)  # irregular outlines

    def bone(base):
        return lambda sl: np.float32(base) + np.float32(120) * tex[sl]

    I = np.eye(3)
    pr = an.frame_from_axis([0, 0, 1], np.array([-0.7, 0.7, 0.0]))  # petrous ridge runs antero-medially
    P.ellipsoid(far([-4, 2, -1]), rows_ear(pr), [15, 30, 12], bone(hu["bone"]), an.BONE, jitter=lumpy)
    P.ellipsoid(far([10, -2, 0]), rows_ear(I), [16, 14, 13], bone(hu["bone"]), an.BONE, jitter=lumpy)
    P.ellipsoid(far([13, -14, -3]), rows_ear(I), [15, 15, 17], bone(hu["bone"]), an.BONE, jitter=lumpy)
    # middle and posterior cranial fossae, sigmoid sinus
    P.ellipsoid(far([0, 5, 36]), rows_ear(I), [45, 45, 26], hu["soft"], an.SOFT, jitter=lumpy)
    P.ellipsoid(far([-19, -23, -2]), rows_ear(I), [15, 17, 25], hu["soft"], an.SOFT, jitter=lumpy)
    P.capsule(far([9, -25, 10]), far([3, -15, -15]), 4.0, hu["soft"] + 10, an.SOFT)
    # mastoid air cells: Worley cells (2.5-5 mm) with thin bony septa, a drawn fraction aerated
    pc = far([12, -12, 0])
    pr_ = np.array([13.0, 13.0, 14.0])
    half_pc = np.sqrt(((pr_[:, None] * rows_ear(I)) ** 2).sum(axis=0)) + 2 * grid.h  # the ellipsoid's own box
    wc = an.worley_cells(grid, pc, half_pc, cell_mm=p["air_cell_mm"], coarse_mm=0.7, rng=rng)
    if wc is not None:
        _, gap, cell = wc
        aerated = rng.random(int(cell.max()) + 1) < p["pneumatisation"]

        def aircells(sl):
            air = aerated[cell] & (gap > np.float32(p["septum_mm"]))
            return np.where(air, np.float32(hu["air"]), np.float32(hu["bone"]) + 150 * tex[sl])

        P.ellipsoid(pc, rows_ear(I), pr_, aircells, an.BONE, only=(an.BONE,))
    P.tissue[(P.tissue == an.BONE) & (P.hu < -300)] = an.AIR

    # cochlea frame: modiolar axis ~52 deg from left-right, tilted inferiorly; e1 towards the RW
    a = np.radians(p["axis_to_lr_deg"])
    b = np.radians(p["axis_inferior_tilt_deg"])
    axis_ear = np.array([np.cos(a), np.sin(a) * np.cos(b), -np.sin(a) * np.sin(b)])
    rows_c_ear = an.frame_from_axis(axis_ear, np.array([0.35, -0.8, -0.5]))
    sense = 1.0 if rows_c_ear[1][1] >= 0 else -1.0  # the basal turn heads anteriorly from the RW
    coch = an.cochlea_spiral(C, rows_ear(rows_c_ear), sense, a_value_mm=p["a_value_mm"], turns=p["turns"],
                             height_mm=p["cochlea_height_mm"], canal_base_mm=p["canal_base_mm"],
                             canal_apex_mm=p["canal_apex_mm"])
    # otic capsule of the vestibule and canals: dense bone blending into the petrous bone (the
    # cochlea's own capsule follows its canal, below)
    P.ellipsoid(ear([1.0, -8.0, 4.5]), rows_ear(I), [6.5, 7.5, 7.0], bone(hu["capsule"]), an.CAPSULE, soft_mm=1.5,
                jitter=(lumpy[0], 0.6), only=(an.BONE, an.SOFT))
    # where the lateral wall of the basal turn bulges into the middle ear (promontory)
    th = np.linspace(0, 2 * np.pi, 200)
    lw = (coch.point(th, coch.r_lateral(th)) - C) @ E
    u_prom = float(lw[:, 0].max() + coch.canal_base_mm * 0.2)
    u_me = u_prom + 0.8 + 2.0
    rw = coch.point(0.0, coch.r_lateral(0.0) - coch.canal_base_mm)[0]
    rw_ear = (rw - C) @ E
    # middle ear, attic, ossicles, external canal, tympanic membrane
    P.ellipsoid(ear([u_me, 0.5, 0.5]), rows_ear(I), [p["middle_ear_halfwidth_mm"], 6.5, 7.0], hu["air"], an.AIR,
                jitter=(lumpy[0], 0.5))
    P.ellipsoid(ear([u_me + 0.5, -1.0, 6.0]), rows_ear(I), [3.0, 4.0, 3.0], hu["air"], an.AIR)
    P.ellipsoid(ear([u_me + 1.0, -2.0, 5.5]), rows_ear(I), [1.2, 1.5, 1.5], hu["ossicle"], an.BONE)
    P.ellipsoid(ear([u_me + 1.2, 0.5, 6.0]), rows_ear(I), [1.1, 1.1, 1.6], hu["ossicle"], an.BONE)
    P.capsule(ear([u_me + 1.2, 0.5, 5.0]), ear([u_me + 2.6, 0.8, 0.5]), 0.45, hu["ossicle"], an.BONE)
    P.capsule(ear([u_me + 3.5, 0.5, 0.0]), ear([u_me + 40, 1.5, -2.0]), p["eac_radius_mm"], hu["air"], an.AIR)
    P.ellipsoid(ear([u_me + 3.0, 0.5, 0.0]), rows_ear(an.frame_from_axis([0.3, 0.1, 0.95], [0, 1, 0])),
                [4.5, 4.5, 0.15], hu["soft"], an.SOFT)
    # round-window niche: from the basal turn at theta=0 out to the middle ear
    P.capsule(rw, ear([u_me - 1.0, rw_ear[1] - 0.5, rw_ear[2]]), 0.8, hu["air"], an.AIR)
    # mastoidectomy + posterior tympanotomy
    cav = np.array([13.0, -12.0, 3.0]) + np.asarray(p["lead_jitter_mm"])[1] * 0.5
    if p["mastoidectomy"]:
        fill = hu["air"] if p["cavity_fill"] == "air" else hu["fluid"] + 20
        ftis = an.AIR if p["cavity_fill"] == "air" else an.SOFT
        P.ellipsoid(far(cav), rows_ear(I), np.array([6.5, 7.5, 6.5]) * p["cavity_scale"], fill, ftis)
        P.capsule(ear([u_me + 0.8, -4.5, 0.5]), far(cav), 1.5, hu["air"], an.AIR)
    # labyrinth fluid: vestibule, semicircular canals (lateral, superior, posterior: ~6.5 mm loops,
    # 0.9 mm lumen), internal auditory canal
    P.ellipsoid(ear([1.5, -5.5, 2.0]), rows_ear(I), [1.6, 2.4, 2.0], hu["fluid"], an.FLUID)
    for centre, normal, ref, major in (([2.5, -8.5, 4.0], [0, 0.5, 0.87], [1, 0, 0], 3.2),
                                       ([-0.5, -6.0, 7.5], [-0.7, 0.7, 0], [0, 0, 1], 3.3),
                                       ([0.5, -10.5, 3.0], [0.7, 0.7, 0], [0, 0, 1], 3.1)):
        P.torus(ear(centre), rows_ear(an.frame_from_axis(normal, ref)), major, 0.45, hu["fluid"], an.FLUID)
    iac0 = C - coch.rows[2] * (coch.canal_base_mm + 0.3 + p["iac_radius_mm"])  # fundus below the basal turn
    P.capsule(iac0, iac0 - coch.rows[2] * 10.0, p["iac_radius_mm"], hu["fluid"], an.FLUID)
    # vessels (carotid, jugular bulb) and the facial nerve
    P.capsule(far([-3, 7, -16]), far([-5, 9, -3]), 2.6, hu["soft"] + 10, an.SOFT)
    P.capsule(far([-5, 9, -3]), far([-12, 14, -1]), 2.6, hu["soft"] + 10, an.SOFT)
    P.ellipsoid(far([1, -6, -10]), rows_ear(I), [4.5, 5.0, 4.0], hu["soft"] + 10, an.SOFT)
    P.capsule(ear([u_prom + 0.6, 3, 4]), ear([u_prom + 0.8, -5, 3.5]), 0.7, hu["soft"], an.SOFT)
    P.capsule(ear([u_prom + 0.8, -5, 3.5]), ear([u_prom + 2.5, -7.5, -14]), 0.75, hu["soft"], an.SOFT)
    an.paint_cochlea(P, coch, fluid_hu=hu["fluid"], modiolus_hu=hu["modiolus"], capsule=bone(hu["capsule"]),
                     capsule_mm=p["capsule_mm"])
    return _Anatomy(coch, rw, u_me, cav)


def _place_implant(P: an.Painter, p: dict, f: _Ear, anat: _Anatomy, model,
                   plc: pm.Placement) -> tuple[ArrayPath, ArrayFields]:
    """The array path (AID clipped to the cochlea, stored back in ``p``) and its fields in the volume."""
    hu = p["hu"]
    jit = np.asarray(p["lead_jitter_mm"])
    lead_pts = [f.ear(np.array([anat.u_me + 0.8, -5.0, 0.5]) + jit[0] * 0.3), f.far(anat.cav + jit[1] * 0.6),
                f.far(np.array([30.0, -30.0, 24.0]) + jit[2] * 2)]
    path, p["aid_deg"] = pm.build(plc, anat.coch, model, p["aid_deg"], lead_pts)
    if not p["mastoidectomy"]:  # the lead runs in a drilled groove through the mastoid
        outer = path.points[path.s > path.s_round_window + 3.0][::20]
        for a0, a1 in zip(outer[:-1], outer[1:]):
            P.capsule(a0, a1, 0.9, hu["soft"], an.SOFT)
    P.ellipsoid(anat.rw, f.rows(np.eye(3)), [1.0, 1.0, 1.0], hu["soft"], an.SOFT)  # fascia plug at the RW
    band_mm = float(path.radius.max() + LABEL_BAND_MM + 0.2)
    fld = array_fields(P.grid, path, band_mm=band_mm)
    if len(fld.dist) == 0:  # the array lies outside this field of view: keep one inert voxel
        fld = ArrayFields(np.zeros((1, 3), int), np.full(1, 99.0, np.float32), np.ones(1, np.float32),
                          *(np.zeros(1, np.float32) for _ in range(3)))
    k, j, i = fld.kji.T
    keep = 1.0 - fld.metal - fld.silicone  # metal and carrier displace the tissue
    P.hu[k, j, i] = P.hu[k, j, i] * keep + fld.silicone * np.float32(hu["silicone"])
    P.tissue[k, j, i] = np.where(fld.contact >= 0.5, an.METAL,
                                 np.where(fld.silicone >= 0.5, an.SILICONE, P.tissue[k, j, i]))
    return path, fld


def _scanner(P: an.Painter, fld: ArrayFields, p: dict, scan: _Scan, f: _Ear, rng: np.random.Generator,
             timings: dict, inter: dict | None,
             pl: hard.Plan | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CBCT degradation of ``P.hu``; returns the image, the blurred metal HU (sub-box), its corner and
    the image the label rule reads (the image itself, or without the hard conditions ``pl``)."""
    grid, sp, true = scan.grid, scan.grid.spacing_mm, P.hu
    k, j, i = fld.kji.T
    # quantum noise enters before the reconstruction blur, so the PSF also sets its grain; its
    # level grows with the local density (rays through the petrous bone carry fewer photons)
    t0 = time.perf_counter()
    sig = [p["psf_sigma_mm"] / s for s in sp[::-1]]
    gain = cbct.gaussian_noise_gain(sig)
    dens = ndimage.gaussian_filter(np.clip((true[::4, ::4, ::4] + 200.0) / 2000.0, 0, 1), 1.5)
    coords = [np.clip(np.arange(n, dtype=np.float32) / 4, 0, s - 1) for n, s in zip(grid.shape, dens.shape)]
    noisy = an.trilinear(dens, coords)
    noisy *= np.float32(0.4 * p["noise_hu"] / gain)
    noisy += np.float32(0.8 * p["noise_hu"] / gain)
    noisy *= rng.standard_normal(grid.shape, dtype=np.float32)
    noisy += true
    timings["noise"] = time.perf_counter() - t0

    # PSF: Gaussian core for everything, plus a wide tail for the (very bright) metal only
    t0 = time.perf_counter()
    img = ndimage.gaussian_filter(noisy, sig, truncate=3.0)
    del noisy
    hu_pt = float(cbct.hu_from_mu(p["mu_platinum_per_mm"]))
    pad = int(np.ceil(3 * p["psf_tail_sigma_mm"] / min(sp))) + 1
    lo = np.maximum(fld.kji.min(0) - pad, 0)
    hi = np.minimum(fld.kji.max(0) + pad + 1, np.array(grid.shape))
    fm = np.zeros(tuple(hi - lo), dtype=np.float32)
    fm[k - lo[0], j - lo[1], i - lo[2]] = fld.metal
    w = p["psf_tail_weight"]
    m = ndimage.gaussian_filter(fm, sig, truncate=3.0) * np.float32((1 - w) * hu_pt)
    tail = [p["psf_tail_sigma_mm"] / s for s in sp[::-1]]
    m += ndimage.gaussian_filter(fm, tail, truncate=3.0) * np.float32(w * hu_pt)
    img[tuple(slice(a_, b_) for a_, b_ in zip(lo, hi))] += m
    p["hu_platinum"] = hu_pt
    timings["psf"] = time.perf_counter() - t0

    t0 = time.perf_counter()
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
    timings["streaks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    shade, p["shading"] = cbct.shading_field(grid, amplitude_hu=p["shading_hu"], cupping_hu=p["cupping_hu"],
                                            isocenter_xy=scan.center[:2], rng=rng)
    img += shade
    del shade
    if p["rings"]:
        rings, p["ring_list"] = cbct.ring_field(grid, isocenter_xy=scan.center[:2], rng=rng)
        img += rings[None]
    out2d = None
    if p["fov_cylinder"]:
        out2d, r, radius = _fov_cylinder(scan)
        # projections truncated by the small field brighten its edge
        img += (np.float32(p["truncation_rim_hu"]) * np.exp(-(radius - np.minimum(r, radius)) / 2.0))[None]
    truth_img = img
    if pl is not None:  # the label reads the scan without the hard conditions
        truth_img = img.copy()
        _grey_values(truth_img, P, p, out2d)
        out_t = hard.apply_fast(img, true, pl, grid, p, streak_kw, pl.rng)
        out2d = out_t if out2d is None else (out2d if out_t is None else out2d | out_t)
    _grey_values(img, P, p, out2d)
    timings["shading_saturation"] = time.perf_counter() - t0
    return img, m, lo, truth_img


def _fov_cylinder(scan: _Scan) -> tuple[np.ndarray, np.ndarray, float]:
    """Reconstructed field: a cylinder about the rotation axis; (outside mask, radius map mm, radius mm)."""
    grid, sp = scan.grid, scan.grid.spacing_mm
    r = np.sqrt((grid.xs - scan.center[0])[None, :] ** 2 + (grid.ys - scan.center[1])[:, None] ** 2)
    size = (grid.shape[2], grid.shape[1]) if scan.target is None else scan.target.size[:2]
    radius = 0.5 * min(size[0] * sp[0], size[1] * sp[1])
    return r > radius, r, radius


def _grey_values(img: np.ndarray, P: an.Painter, p: dict, out2d: np.ndarray | None) -> None:
    """Both CT models' last step, in place: gain, offset (grey values are not calibrated HU), saturation."""
    img *= np.float32(p["gain"])
    img += np.float32(p["offset_hu"])
    np.clip(img, -1024.0, p["saturation_hu"], out=img)
    if out2d is not None:
        img[:, out2d] = np.float32(p["outside_fov_hu"])
        P.tissue[:, out2d] = an.OUTSIDE


def _scanner_rtk(P: an.Painter, fld: ArrayFields, p: dict, scan: _Scan, f: _Ear, rng: np.random.Generator,
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
    k, j, i = fld.kji.T
    lo = np.maximum(fld.kji.min(0) - pad, 0)
    hi = np.minimum(fld.kji.max(0) + pad + 1, np.array(scan.grid.shape))
    fm = np.zeros(tuple(hi - lo), dtype=np.float32)
    fm[k - lo[0], j - lo[1], i - lo[2]] = fld.metal
    m = ndimage.gaussian_filter(fm, sig, truncate=3.0) * np.float32(p["hu_platinum"])
    out2d = _fov_cylinder(scan)[0] if p["fov_cylinder"] else None
    _grey_values(img, P, p, out2d)
    truth_img = img
    if pl is not None:
        img, out2d = _rtk_hard(P, fld, p, scan, pl, rng_hard, head_xy, out2d)
        _grey_values(img, P, p, out2d)
    timings["rtk_total"] = time.perf_counter() - t0
    return img, m, lo, truth_img


def _rtk_hard(P, fld, p, scan: _Scan, pl: hard.Plan, rng, head_xy, out2d):
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


def _hard_plan(hv: dict, rng: np.random.Generator, scan: _Scan, f: _Ear, path: ArrayPath,
               cylinder: bool) -> hard.Plan:
    """The hard conditions' geometry; the field they start from is the grid's inscribed cylinder."""
    grid, sp = scan.grid, scan.grid.spacing_mm
    size = (grid.shape[2], grid.shape[1]) if scan.target is None else scan.target.size[:2]
    radius = 0.5 * min(size[0] * sp[0], size[1] * sp[1])
    return hard.plan(hv, rng, grid, f.C, f.E, path.points, np.asarray(path.contacts_lps), scan.center[:2], radius,
                     cylinder)


def _truth(fld: ArrayFields, m: np.ndarray, lo: np.ndarray, img: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """Label (what an annotator paints) and metal (at least half platinum) on the scanner grid."""
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
    return label, metal


def _acquire(img: np.ndarray, label: np.ndarray, metal: np.ndarray, tissue: np.ndarray, fld: ArrayFields,
             scan: _Scan, orientation: str) -> tuple[list[np.ndarray], tuple]:
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
            geo = (o.GetSpacing(), _exact(o.GetOrigin()), np.round(np.asarray(o.GetDirection()).reshape(3, 3)))
    return arrays, geo


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
    rng = np.random.default_rng(int(seed))
    p = draw_params(rng)
    _apply_overrides(p, overrides)
    p["seed"] = int(seed)
    p["preset"] = preset
    rtk_overrides = p.pop("rtk", None) or {}
    if ct_model == "rtk":
        from .rtk import rtk_params

        p["rtk"], rng_rtk = rtk_params(int(seed), rtk_overrides)
    elif rtk_overrides:
        raise ValueError("the rtk override needs ct_model='rtk'")
    p["ct_model"] = ct_model
    hv, rng_hard = hard.resolve(int(seed), motion_mm, screw, dental_fillings, fov_truncation)
    p["hard_conditions"] = dict(hv)
    plc = pm.resolve(int(seed), array_kind)
    p["array_placement"] = plc.record
    if orientation == "mixed":
        orientation = p["mixed_orientation"]
    p["orientation"] = orientation
    model = find_model(p["model"])
    if "aid_deg" not in p:
        p["aid_deg"] = float(model.aid_mean_deg + model.aid_sd_deg * p["aid_z"])
    case_id = sanitize_case_id(p.get("case_id") or f"phantom{int(seed):06d}")
    p["case_id"] = case_id

    t0 = time.perf_counter()
    f = _Ear(*_ear_frame(p), p["skull_scale"])
    scan = _scan_geometry(p, preset, orientation, f)
    P = an.Painter(scan.grid, p["hu"]["soft"], an.SOFT)
    anat = _paint_anatomy(P, p, f, rng)
    timings["anatomy"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    path, fld = _place_implant(P, p, f, anat, model, plc)
    timings["implant"] = time.perf_counter() - t0

    pl = None
    if hard.any_on(hv):
        pl = _hard_plan(hv, rng_hard, scan, f, path, bool(p["fov_cylinder"]))
        p["hard_conditions"] = pl.record
    inter: dict | None = {} if keep_intermediate else None
    if ct_model == "rtk":
        img, m, lo, truth_img = _scanner_rtk(P, fld, p, scan, f, rng_rtk, timings, pl)
    else:
        img, m, lo, truth_img = _scanner(P, fld, p, scan, f, rng, timings, inter, pl)

    t0 = time.perf_counter()
    label, metal = _truth(fld, m, lo, truth_img, p)
    if pl is not None and pl.field_r is not None:  # nothing is painted outside the reconstructed field
        out_t = pl.field_mask(scan.grid)
        pl.record["truncation"]["label_voxels_outside"] = int(label[:, out_t].sum())
        label[:, out_t] = 0
        metal[:, out_t] = 0
    timings["truth"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    arrays, geo = _acquire(img, label, metal, P.tissue, fld, scan, orientation)

    def vol(arr, **meta):
        return Volume(arr, geo[0], geo[1], geo[2], {"case_id": case_id, **meta})

    image = vol(np.rint(arrays[0]).astype(np.int16), modality="CT", orientation=orientation)
    label_v, metal_v, tissue_v = vol(arrays[1]), vol(arrays[2]), vol(arrays[3])
    timings["reorient"] = time.perf_counter() - t0

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
    p["electrode"] = model.to_dict()
    p["cochlea"] = coch.to_dict()
    p["round_window_lps_mm"] = anat.rw.tolist()
    grid = scan.grid
    p["scanner_grid"] = {"shape_kji": list(grid.shape), "spacing_mm": list(grid.spacing_mm),
                         "origin_mm": list(grid.origin_mm)}
    p["label_rule"] = {"band_mm": LABEL_BAND_MM, "metal_hu": LABEL_METAL_HU, "image_hu_above_offset": LABEL_IMAGE_HU}
    timings["total"] = time.perf_counter() - t_all
    return PhantomCase(case_id, image, label_v, metal_v, contacts, _jsonable(p), tissue_v, timings, inter or {})


def _exact(xyz) -> tuple[float, float, float]:
    """Round LPS mm to 1/1024 mm: exact in float32 (NIfTI) and in a DICOM decimal string alike."""
    return tuple(float(v) for v in np.round(np.asarray(xyz, float) * 1024.0) / 1024.0)


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
