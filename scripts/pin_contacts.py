"""Pin the contact finder's output on a few phantoms, so a refactor can show it changed nothing.

Each pinned case is a small phantom (``generate_patient(seed, preset="small", ...)``) segmented
by the shipped default model, then searched for contacts twice: with its electrode named and
blind. tests/data/contacts_pinned.json keeps the contacts (LPS mm), method, pitch and model
assumed, the label itself (its non-zero voxels: segmenting takes ~20 s a phantom on a CPU, and a
retrained default model must not read as a contact-finder change) and the image's checksum (a
changed phantom generator is told apart from a changed contact finder):

    .venv/bin/python scripts/pin_contacts.py --write     # segment and record
    .venv/bin/python scripts/pin_contacts.py             # compare on the stored labels, exit 1 on a difference
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PINNED = ROOT / "tests" / "data" / "contacts_pinned.json"

#: (seed, model, orientation): all three vendors, separate (MED-EL) and merged (Cochlear, AB)
#: contacts, both perimodiolar arrays (the blind search reruns with their centreline moved out),
#: oblique, coronal and sagittal acquisitions
CASES: tuple[tuple[int, str, str], ...] = (
    (1, "FLEX28", "axial"),
    (2, "CI612 Contour Advance", "coronal"),
    (3, "HiFocus 1J", "axial"),
    (4, "CI632 Slim Modiolar", "oblique"),
    (5, "FLEX24", "sagittal"),
    (6, "HiFocus SlimJ", "axial"),
)

TOLERANCE_MM = 1e-6


def checksum(array: np.ndarray) -> str:
    """Short SHA-256 of an array's bytes (dtype and shape included)."""
    a = np.ascontiguousarray(array)
    return hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()[:16]


def phantom_image(seed: int, model: str, orientation: str):
    """The CT (a :class:`~cochseg3d.volume.Volume`) of one pinned phantom."""
    from cochseg3d.phantom import generate_patient

    return generate_patient(seed, preset="small", orientation=orientation, model=model).image


def label_record(label: Any) -> dict[str, Any]:
    """A 0/1 label as its geometry and the gaps between its non-zero flat indices (small JSON)."""
    values = np.unique(label.array)
    if not set(values.tolist()) <= {0, 1}:
        raise ValueError(f"label values {values} are not 0/1")
    flat = np.flatnonzero(label.array)
    return {"dtype": str(label.array.dtype), "shape": list(label.array.shape),
            "spacing_mm": list(label.spacing_mm), "origin_mm": list(label.origin_mm),
            "direction": np.asarray(label.direction).ravel().tolist(),
            "flat_index_steps": np.diff(flat, prepend=0).tolist(), "sha": checksum(label.array)}


def label_from_record(rec: dict[str, Any]):
    from cochseg3d.volume import Volume

    array = np.zeros(int(np.prod(rec["shape"])), dtype=rec["dtype"])
    array[np.cumsum(rec["flat_index_steps"], dtype=np.int64)] = 1
    return Volume(array.reshape(rec["shape"]), tuple(rec["spacing_mm"]), tuple(rec["origin_mm"]),
                  np.reshape(rec["direction"], (3, 3)))


def record(found: Any) -> dict[str, Any]:
    """The pinned fields of a :class:`~cochseg3d.contacts.Contacts`."""
    return {"lps_mm": np.asarray(found.lps_mm, float).tolist(), "method": found.method,
            "pitch_mm": None if math.isnan(found.pitch_mm) else float(found.pitch_mm),
            "model": found.info.get("model"), "electrode": found.info.get("electrode")}


def run_case(image: Any, label: Any, model: str, find: Callable | None = None) -> dict[str, dict[str, Any]]:
    """Contacts of one phantom found named and blind with ``find`` (default: the package's)."""
    if find is None:
        from cochseg3d.contacts import find_contacts as find
    from cochseg3d.contacts import electrode_spec

    return {"named": record(find(label, image, **electrode_spec(model))), "blind": record(find(label, image))}


def pin_inputs(entry: dict[str, Any]):
    """(image, label, image_same) of a pinned case: the phantom regenerated, the stored label, and
    whether the image is bit-identical to the pinned one.

    Float rounding of numpy/scipy differs between builds, so a regenerated phantom may differ in its
    last bits on another machine; the contacts comparison decides, and ``image_same`` says whether a
    difference there may come from the phantom rather than the contact finder.
    """
    image = phantom_image(entry["seed"], entry["model"], entry["orientation"])
    return image, label_from_record(entry["label"]), checksum(image.array) == entry["image_sha"]


def compute(cases=CASES) -> list[dict[str, Any]]:
    """Every pinned case segmented by the default model, its contacts found named and blind."""
    from cochseg3d.inference import load_model, run_segmentation

    network, pre, _ = load_model(None)
    out = []
    for seed, model, orientation in cases:
        image = phantom_image(seed, model, orientation)
        label = run_segmentation(image, network, preprocessing=pre).label
        out.append({"seed": seed, "model": model, "orientation": orientation, "image_sha": checksum(image.array),
                    "label": label_record(label), **run_case(image, label, model)})
    return out


def differences(pinned: dict[str, Any], now: dict[str, Any], tol_mm: float = TOLERANCE_MM) -> list[str]:
    """What differs between a pinned result and a fresh one (empty: identical within ``tol_mm``)."""
    name = f"seed {pinned['seed']} {pinned['model']} {pinned['orientation']}"
    out = []
    for mode in ("named", "blind"):
        a, b = pinned[mode], now[mode]
        for key in ("method", "model", "electrode"):
            if a[key] != b[key]:
                out.append(f"{name} {mode}: {key} {a[key]!r} -> {b[key]!r}")
        pa, pb = a["pitch_mm"], b["pitch_mm"]
        if (pa is None) != (pb is None) or (pa is not None and abs(pa - pb) > tol_mm):
            out.append(f"{name} {mode}: pitch {pa} -> {pb}")
        la, lb = np.asarray(a["lps_mm"]).reshape(-1, 3), np.asarray(b["lps_mm"]).reshape(-1, 3)
        if la.shape != lb.shape:
            out.append(f"{name} {mode}: {len(la)} -> {len(lb)} contacts")
        elif len(la) and np.abs(la - lb).max() > tol_mm:
            out.append(f"{name} {mode}: contacts moved up to {np.abs(la - lb).max():.2e} mm")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"segment and record the pin ({PINNED.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    if args.write:
        now = compute()
        PINNED.parent.mkdir(parents=True, exist_ok=True)
        PINNED.write_text(json.dumps({"tolerance_mm": TOLERANCE_MM, "cases": now}) + "\n")
        print(f"written {PINNED} ({len(now)} phantoms)")
        return 0
    diffs = []
    pinned = json.loads(PINNED.read_text())["cases"]
    for entry in pinned:
        image, label, _ = pin_inputs(entry)
        diffs += differences(entry, run_case(image, label, entry["model"]))
    print("\n".join(diffs) if diffs else f"identical on {len(pinned)} phantoms (named and blind)")
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
