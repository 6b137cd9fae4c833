"""A bilateral phantom: both ears implanted, in one scan wide enough to hold them (issue 13).

Each ear is a patient of its own (:func:`.generate.generate_patient`, the right ear with the seed,
the left with a second seed and the right's scanner settings) pasted onto one axial grid that spans
both fields; where neither field reaches, soft tissue with the scanner's noise fills in. The left
ear lands on whole voxels of the shared grid, so its truth (contacts, path, cochlear frame) is moved
by the sub-voxel snap; the truth's ``arrays`` holds each side's contacts.json.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cochseg3d.volume import Volume

from . import anatomy as an
from .generate import PhantomCase, generate_patient

#: what both ears share: one scanner, one exposure
SCANNER_KEYS = ("spacing_mm", "noise_hu", "offset_hu", "gain", "streak_strength", "saturation_hu", "psf_sigma_mm",
                "rings")
#: soft tissue between the ears (HU before the scanner's gain and offset)
FILL_HU = 40.0


def generate_bilateral(seed: int, *, preset: str = "small", ct_model: str = "fast", **overrides: Any) -> PhantomCase:
    """Both ears of one patient in one axial scan; ``overrides`` apply to both (``side`` is set here)."""
    if "side" in overrides:
        raise ValueError("a bilateral phantom has both sides; drop the side override")
    right = generate_patient(seed, preset=preset, ct_model=ct_model, orientation="axial", side="right", **overrides)
    shared = {k: right.params[k] for k in SCANNER_KEYS if k in right.params}
    left = generate_patient(_left_seed(seed), preset=preset, ct_model=ct_model, orientation="axial", side="left",
                            **{**overrides, **shared, "case_id": right.case_id})
    return _compose(right, left, np.random.default_rng([int(seed), 13]))


def _left_seed(seed: int) -> int:
    return int(np.random.SeedSequence([int(seed), 2]).generate_state(1)[0])


def _compose(right: PhantomCase, left: PhantomCase, rng: np.random.Generator) -> PhantomCase:
    sp = np.asarray(right.image.spacing_mm)
    o_r, o_l = np.asarray(right.image.origin_mm), np.asarray(left.image.origin_mm)
    n_r, n_l = np.asarray(right.image.size), np.asarray(left.image.size)  # (i, j, k)
    lo = np.minimum(o_r, o_l)
    off_r = np.ceil((o_r - lo) / sp - 1e-6).astype(int)
    origin = o_r - off_r * sp  # the right ear sits on whole voxels of the shared grid
    off_l = np.rint((o_l - origin) / sp).astype(int)
    shift_l = origin + off_l * sp - o_l  # the left ear's snap, mm (under half a voxel)
    size = np.maximum(off_r + n_r, off_l + n_l)
    p = right.params
    gain, offset = float(p.get("gain", 1.0)), float(p.get("offset_hu", 0.0))
    fill = gain * FILL_HU + offset + rng.normal(0.0, float(p.get("noise_hu", 0.0)) * gain, tuple(size[::-1]))
    image = np.clip(np.rint(fill), -32768, 32767).astype(np.int16)
    label, metal, tissue = (np.zeros(tuple(size[::-1]), np.uint8) for _ in range(3))
    tissue[:] = an.SOFT
    for case, off in ((right, off_r), (left, off_l)):
        sl = tuple(slice(int(a), int(a + n)) for a, n in zip(off[::-1], np.asarray(case.image.size)[::-1]))
        image[sl], label[sl], metal[sl] = case.image.array, case.label.array, case.metal.array
        tissue[sl] = case.tissue.array

    def vol(arr, meta):
        return Volume(arr, tuple(sp), tuple(origin), np.eye(3), dict(meta))

    truth_l = shift_truth(left.contacts, shift_l)
    contacts = {"case_id": right.case_id, "bilateral": True,
                "arrays": {"right": right.contacts, "left": truth_l}}
    params = {**p, "bilateral": {"left_seed": left.params.get("seed"), "left_shift_mm": shift_l.round(5).tolist(),
                                 "left": left.params}, "side": "both"}
    timings = {k: right.timings.get(k, 0.0) + left.timings.get(k, 0.0) for k in right.timings}
    return PhantomCase(right.case_id, vol(image, right.image.meta), vol(label, {}), vol(metal, {}), contacts, params,
                       vol(tissue, {}), timings, {})


def shift_truth(truth: dict[str, Any], shift_mm: np.ndarray) -> dict[str, Any]:
    """A side's contacts.json with every LPS position moved by ``shift_mm`` (directions stay)."""
    out = dict(truth)
    for key in ("contacts_lps_mm", "electrode_path_lps_mm"):
        if key in out:
            out[key] = np.round(np.asarray(out[key], float) + shift_mm, 4).tolist()
    if "cochlear_frame" in out:
        frame = dict(out["cochlear_frame"])
        frame["origin_lps_mm"] = np.round(np.asarray(frame["origin_lps_mm"], float) + shift_mm, 4).tolist()
        out["cochlear_frame"] = frame
    return out
