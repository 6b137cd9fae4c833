"""A phantom patient's parameters: every scalar random draw, in a fixed order, and the overrides.

Drawing everything before anything is painted, whatever the overrides, is what lets one override leave
every other draw (and so the rest of the patient) unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cochseg3d.electrodes import VENDORS, find_model, models_of

PRESETS: dict[str, dict[str, Any]] = {
    "small": {"shape": 96, "spacing_mm": 0.4},
    "clinical": {"shape": 200, "spacing_mm": 0.2},
}
ORIENTATIONS = ("axial", "coronal", "sagittal", "oblique")

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


def apply_overrides(p: dict[str, Any], overrides: dict[str, Any]) -> None:
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


def grid_for(p: dict, preset: str) -> tuple[tuple[float, float, float], tuple[int, int, int]]:
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

