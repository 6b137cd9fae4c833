"""Two arrays in one scan (bilateral implants): the label split by patient side.

Post-processing keeps a second array only far from the first (:data:`cochseg3d.postprocess.
BILATERAL_MIN_MM`), so the two lie on either side of the widest gap in patient left-right (LPS x)
between labelled voxels; the array at larger LPS x is the patient's left one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cochseg3d.volume import Volume

def side_name(side: str | None, name: str) -> str:
    """A contact or segment named by its array's side: "R E1", "L carrier" ("?" for no side)."""
    return f"{(side or '?')[0].upper()} {name}"


def side_cut_mm(label: Volume) -> float | None:
    """LPS x (mm) between the two arrays: the middle of the widest gap between labelled voxels."""
    x = np.unique(np.round(_lps_x(label, np.argwhere(label.array > 0)), 3))
    if len(x) < 2:
        return None
    gaps = np.diff(x)
    g = int(np.argmax(gaps))
    return float(x[g] + gaps[g] / 2.0)


def _lps_x(vol: Volume, kji: np.ndarray) -> np.ndarray:
    return vol.index_to_lps(np.asarray(kji, float)[:, ::-1])[:, 0]


def side_masks(grid: Volume, cut_mm: float) -> dict[str, np.ndarray]:
    """Boolean masks of the grid's voxels right (LPS x < cut) and left of ``cut_mm``."""
    k, j, i = np.indices(grid.array.shape, sparse=True)
    # x is affine in the indices: its value on a sparse grid broadcasts to the full one
    d = grid.direction @ np.diag(grid.spacing_mm)
    x = grid.origin_mm[0] + d[0, 0] * i + d[0, 1] * j + d[0, 2] * k
    return {"right": x < cut_mm, "left": x >= cut_mm}


def split_result(res: Any) -> dict[str, Any] | None:
    """Per side, the segmentation result of that side's array alone; None unless two arrays were kept."""
    if (res.info.get("qc") or {}).get("n_arrays") != 2:
        return None
    cut = side_cut_mm(res.label)
    if cut is None:
        return None
    out = {}
    for side, keep in side_masks(res.label, cut).items():
        label = _masked(res.label, keep)
        n = int(label.array.sum())
        info = {**res.info, "voxels": n, "volume_mm3": round(n * float(np.prod(res.label.spacing_mm)), 3),
                "side": side, "side_cut_lps_x_mm": round(cut, 2)}
        out[side] = dataclasses.replace(
            res, label=label, info=info, canonical_label=None,
            probability=None if res.probability is None else _masked(res.probability, keep),
            alternates={p: _masked(v, keep) for p, v in res.alternates.items()})
    return out


def _masked(vol: Volume, keep: np.ndarray) -> Volume:
    return vol.with_array(np.where(keep, vol.array, 0).astype(vol.array.dtype, copy=False))


def merged_contacts(per_side: dict[str, Any]) -> Any:
    """All contacts of the scan, right array then left (each side's own stay in ``per_side``)."""
    from cochseg3d.contacts import Contacts

    pts = [np.asarray(c.lps_mm, float).reshape(-1, 3) for c in per_side.values()]
    return Contacts(np.vstack(pts) if pts else np.zeros((0, 3)), "bilateral",
                    info={"bilateral": True, "sides": {s: {"n_contacts": int(len(c.lps_mm)), "method": c.method,
                                                           **c.info} for s, c in per_side.items()}})


def merged_verdict(per_side: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One QC verdict for the scan: the worse side's, with every side's reasons named by side."""
    from cochseg3d.qc import VERDICTS

    worst = max((v["verdict"] for v in per_side.values()), key=VERDICTS.index)
    reasons = [f"{side} array: {r}" for side, v in per_side.items() for r in v["reasons"]]
    return {"verdict": worst, "reasons": reasons, "sides": per_side}


def side_records(per_side: dict[str, Any], image: Any = None) -> list[dict[str, Any]]:
    """contacts.json's ``arrays``: each side's cochlear measures (the round window measured on
    ``image`` when given), its side from the split."""
    from cochseg3d.clinical import measure_arrays

    records = measure_arrays(list(per_side.values()), image)["arrays"]  # the scan's grey levels measured once
    for side, rec in zip(per_side, records):
        rec.update(side=side, side_evidence="bilateral scan: the array at larger LPS x is the patient's left")
    return records


def merged_array_label(per_side: dict[str, Any]) -> Any:
    """One fitted-array label for both arrays: the right's values first ("R E1" .. "R carrier"), then the
    left's after them; a side without a fit is named in ``info["sides"]``."""
    from cochseg3d.clinical.array_label import ArrayLabel

    fitted = {s: a for s, a in per_side.items() if a.label is not None}
    sides = {s: (a.info if a.label is not None else {"reason": a.reason}) for s, a in per_side.items()}
    if not fitted:
        why = "; ".join(f"{s}: {a.reason}" for s, a in per_side.items())
        return ArrayLabel(None, reason=f"bilateral scan, neither array fitted ({why})")
    grid = next(iter(fitted.values())).label
    lab = np.zeros(grid.array.shape, np.uint8)
    names: list[str] = []
    voxels: dict[str, int] = {}
    for side, a in fitted.items():
        arr = np.asarray(a.label.array)
        lab[arr > 0] = arr[arr > 0] + len(names)
        voxels.update({str(int(v) + len(names)): n for v, n in a.info.get("voxels", {}).items()})
        names += [side_name(side, n) for n in a.names]
    info = {"model": ", ".join(f"{a.info.get('model')} ({s})" for s, a in fitted.items()),
            "centreline_length_mm": " / ".join(f"{a.info.get('centreline_length_mm')} ({s})" for s, a in fitted.items()),
            "voxels": voxels, "sides": sides}
    return ArrayLabel(grid.with_array(lab), names, None, info)
