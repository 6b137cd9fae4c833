"""Segmentation and contact-localisation metrics (MONAI's implementations where they exist).

Masks are numpy arrays indexed ``[k, j, i]`` or :class:`~cochseg3d.volume.Volume` objects; spacing
is given in ITK order ``(i, j, k)`` in mm like everywhere in the package (a Volume brings its own).
Prediction and truth must lie on the same grid; :func:`evaluate_case` resamples a prediction onto the
truth's grid when they differ.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage

from cochseg3d.volume import Volume

log = logging.getLogger(__name__)



@contextlib.contextmanager
def _quiet_monai():
    # MONAI 1.5+ warns about its own internal use of a deprecated argument on every call
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        yield


def _arr(mask: Any) -> np.ndarray:
    return np.asarray(mask.array if isinstance(mask, Volume) else mask).astype(bool)


def _spacing_numpy_order(mask: Any, spacing_mm: Sequence[float] | None) -> tuple[float, ...]:
    """Spacing per numpy axis ``(k, j, i)`` from an ITK-order spacing or the Volume's own."""
    if spacing_mm is None:
        if isinstance(mask, Volume):
            spacing_mm = mask.spacing_mm
        else:
            raise ValueError("spacing_mm is needed for numpy masks (ITK order i, j, k, in mm)")
    return tuple(float(s) for s in spacing_mm)[::-1]


def _onehot(mask: np.ndarray) -> torch.Tensor:
    """(1, 2, *shape) one-hot tensor (background, foreground) MONAI's metrics take."""
    t = torch.from_numpy(np.ascontiguousarray(mask))
    return torch.stack([~t, t]).unsqueeze(0).float()


def _crop_pair(pred: np.ndarray, truth: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to their joint bounding box plus ``margin`` voxels (distances unchanged)."""
    union = pred | truth
    if not union.any():
        return pred, truth
    idx = np.nonzero(union)
    sl = tuple(slice(max(0, int(i.min()) - margin), int(i.max()) + margin + 1) for i in idx)
    return pred[sl], truth[sl]


def dice(pred: Any, truth: Any) -> float:
    """Dice coefficient (MONAI ``compute_dice``); 1.0 when both masks are empty."""
    p, t = _arr(pred), _arr(truth)
    if not p.any() and not t.any():
        return 1.0
    from monai.metrics import compute_dice

    p, t = _crop_pair(p, t, 1)
    return float(compute_dice(_onehot(p), _onehot(t), include_background=False, ignore_empty=False)[0, 0])


def iou(pred: Any, truth: Any) -> float:
    """Intersection over union (MONAI ``compute_iou``); 1.0 when both masks are empty."""
    p, t = _arr(pred), _arr(truth)
    if not p.any() and not t.any():
        return 1.0
    from monai.metrics import compute_iou

    p, t = _crop_pair(p, t, 1)
    return float(compute_iou(_onehot(p), _onehot(t), include_background=False, ignore_empty=False)[0, 0])


def _confusion(p: np.ndarray, t: np.ndarray, name: str) -> float:
    from monai.metrics import compute_confusion_matrix_metric, get_confusion_matrix

    cm = get_confusion_matrix(_onehot(p), _onehot(t), include_background=False)
    return float(compute_confusion_matrix_metric(name, cm)[0, 0])


def precision(pred: Any, truth: Any) -> float:
    """Fraction of predicted voxels that are electrode (1.0 for an empty prediction)."""
    p, t = _arr(pred), _arr(truth)
    if not p.any():
        return 1.0
    p, t = _crop_pair(p, t, 1)
    return _confusion(p, t, "precision")


def recall(pred: Any, truth: Any) -> float:
    """Fraction of electrode voxels found (1.0 when the truth is empty)."""
    p, t = _arr(pred), _arr(truth)
    if not t.any():
        return 1.0
    p, t = _crop_pair(p, t, 1)
    return _confusion(p, t, "sensitivity")


def hd95_mm(pred: Any, truth: Any, *, spacing_mm: Sequence[float] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between the surfaces, mm (MONAI).

    ``inf`` when exactly one mask is empty, 0.0 when both are.
    """
    p, t = _arr(pred), _arr(truth)
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return math.inf
    from monai.metrics import compute_hausdorff_distance

    sp = _spacing_numpy_order(pred if isinstance(pred, Volume) else truth, spacing_mm)
    p, t = _crop_pair(p, t, 2)
    with _quiet_monai():
        return float(compute_hausdorff_distance(_onehot(p), _onehot(t), percentile=95, spacing=list(sp))[0, 0])


def surface_dice(
    pred: Any, truth: Any, *, spacing_mm: Sequence[float] | None = None, tolerance_mm: float = 1.0
) -> float:
    """Normalised surface Dice: fraction of both surfaces within ``tolerance_mm`` of the other (MONAI)."""
    p, t = _arr(pred), _arr(truth)
    if not p.any() and not t.any():
        return 1.0
    if not p.any() or not t.any():
        return 0.0
    from monai.metrics import compute_surface_dice

    sp = _spacing_numpy_order(pred if isinstance(pred, Volume) else truth, spacing_mm)
    p, t = _crop_pair(p, t, 2)
    with _quiet_monai():
        return float(
            compute_surface_dice(_onehot(p), _onehot(t), class_thresholds=[float(tolerance_mm)], spacing=list(sp))[0, 0]
        )


def fp_volume_far_mm3(
    pred: Any, truth: Any, *, spacing_mm: Sequence[float] | None = None, distance_mm: float = 1.0
) -> float:
    """Volume (mm^3) of predicted voxels farther than ``distance_mm`` from any truth voxel.

    Boundary disagreement is not counted; what is left are false detections (bone, streaks).
    """
    p, t = _arr(pred), _arr(truth)
    sp = _spacing_numpy_order(pred if isinstance(pred, Volume) else truth, spacing_mm)
    voxel = float(np.prod(sp))
    if not p.any():
        return 0.0
    if not t.any():
        return float(p.sum() * voxel)
    dist = ndimage.distance_transform_edt(~t, sampling=sp)
    return float(np.count_nonzero(p & (dist > distance_mm)) * voxel)


def match_contacts(
    pred_mm: Sequence[Sequence[float]] | np.ndarray,
    truth_mm: Sequence[Sequence[float]] | np.ndarray,
    *,
    gate_mm: float = 1.0,
) -> dict[str, Any]:
    """One-to-one matching of contact centres (Hungarian, scipy) with a distance gate.

    Args:
        pred_mm: found contact centres (N, 3), mm (any frame shared with the truth, e.g. LPS).
        truth_mm: true contact centres (M, 3), mm.
        gate_mm: pairs farther apart than this do not count as matches.

    Returns:
        dict with ``recall`` (matched / M), ``precision`` (matched / N), ``mean_error_mm`` and
        ``max_error_mm`` over matches (nan without any), ``n_pred``, ``n_truth``, ``n_matched``,
        ``pairs`` (list of (pred index, truth index, distance mm)) and ``misnamed``: the fraction of
        matched contacts whose index (apex -> base) is not the truth's less the array's one common
        offset (0: every contact named right; ~1: the array read from its base; between: contacts
        out of order), nan with fewer than 2 matches. The order-free errors cannot see either.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    p = np.asarray(pred_mm, dtype=float).reshape(-1, 3)
    t = np.asarray(truth_mm, dtype=float).reshape(-1, 3)
    pairs: list[tuple[int, int, float]] = []
    if len(p) and len(t):
        d = cdist(p, t)
        n, m = d.shape
        # every point may stay unmatched at cost gate_mm (dummy rows/columns), so a far point is
        # never forced onto a truth and a chain of shifted matches never beats leaving it out
        big = gate_mm * 1e3 + d.max()
        cost = np.full((n + m, m + n), big)
        cost[:n, :m] = np.where(d <= gate_mm, d, big)
        cost[:n, m:][np.diag_indices(n)] = gate_mm
        cost[n:, :m][np.diag_indices(m)] = gate_mm
        cost[n:, m:] = 0.0
        rows, cols = linear_sum_assignment(cost)
        pairs = [(int(r), int(c), float(d[r, c])) for r, c in zip(rows, cols)
                 if r < n and c < m and d[r, c] <= gate_mm]
    errs = np.array([e for _, _, e in pairs])
    return {
        "recall": len(pairs) / len(t) if len(t) else 1.0,
        "precision": len(pairs) / len(p) if len(p) else (1.0 if not len(t) else 0.0),
        "mean_error_mm": float(errs.mean()) if len(errs) else math.nan,
        "max_error_mm": float(errs.max()) if len(errs) else math.nan,
        "n_pred": int(len(p)),
        "n_truth": int(len(t)),
        "n_matched": len(pairs),
        "pairs": pairs,
        "misnamed": _misnamed(pairs),
    }


def _misnamed(pairs: list[tuple[int, int, float]]) -> float:
    if len(pairs) < 2:
        return math.nan
    offsets = np.array([t - p for p, t, _ in pairs])
    _, counts = np.unique(offsets, return_counts=True)
    return float(1.0 - counts.max() / len(offsets))


def segmentation_metrics(pred: Volume, truth: Volume, *, tolerance_mm: float = 1.0) -> dict[str, float]:
    """All voxel metrics of one case, computed on the truth's grid.

    A prediction on another grid is resampled onto the truth's (nearest neighbour) first.
    """
    from cochseg3d.volume import resample_to_grid

    if not pred.grid.allclose(truth.grid):
        log.warning("prediction grid differs from the truth's; resampling the prediction onto it")
        pred = resample_to_grid(pred, truth.grid, is_label=True)
    p = pred.with_array(pred.array > 0)
    t = truth.with_array(truth.array > 0)
    voxel = float(np.prod(truth.spacing_mm))
    return {
        "dice": dice(p, t),
        "iou": iou(p, t),
        "precision": precision(p, t),
        "recall": recall(p, t),
        "hd95_mm": hd95_mm(p, t),
        "surface_dice_1mm": surface_dice(p, t, tolerance_mm=tolerance_mm),
        "fp_volume_far_mm3": fp_volume_far_mm3(p, t, distance_mm=tolerance_mm),
        "pred_volume_mm3": float(p.array.sum() * voxel),
        "truth_volume_mm3": float(t.array.sum() * voxel),
    }


# --- folders ------------------------------------------------------------------------------------
#: columns of the evaluation table, in order
COLUMNS = ("case_id", "vendor", "model", "dice", "iou", "precision", "recall", "hd95_mm", "surface_dice_1mm",
           "fp_volume_far_mm3", "contact_recall", "contact_precision", "contact_error_mm", "contact_max_error_mm",
           "contact_misnamed", "n_contacts_pred", "n_contacts_truth")


def truth_cases(truth_dir: str | Path) -> list[dict[str, Any]]:
    """Cases of a phantom cohort folder: ``<case>/truth/label.nii.gz`` (+ ``contacts.json``).

    Uses ``cohort.json`` when present, else every sub-folder holding ``truth/label.nii.gz``.
    """
    truth_dir = Path(truth_dir)
    if not truth_dir.is_dir():
        raise FileNotFoundError(f"{truth_dir}: no such folder")
    cohort = truth_dir / "cohort.json"
    cases = []
    if cohort.is_file():
        cases = _cohort_entries(cohort, truth_dir)
    else:
        for d in sorted(p for p in truth_dir.iterdir() if (p / "truth" / "label.nii.gz").is_file()):
            c = d / "truth" / "contacts.json"
            cases.append({"case_id": d.name, "label": d / "truth" / "label.nii.gz",
                          "contacts": c if c.is_file() else None})
    if not cases:
        raise ValueError(f"{truth_dir}: no cases (needs cohort.json or <case>/truth/label.nii.gz)")
    return cases


def _cohort_entries(cohort: Path, truth_dir: Path) -> list[dict[str, Any]]:
    """The cases of a cohort.json (``case_id``, ``label``, optional ``contacts``), checked."""
    from cochseg3d.utils import read_cohort_json

    return [{"case_id": e["case_id"], "label": e["label"], "contacts": e.get("contacts")}
            for e in read_cohort_json(cohort, required=("case_id", "label"), paths=("label", "contacts"))]


def _contacts(path: Path, what: str) -> Any:
    """The ``contacts_lps_mm`` list of a contacts JSON, or a ValueError naming the file and the key."""
    from cochseg3d.utils import read_json

    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("contacts_lps_mm"), list):
        raise ValueError(f"{path}: {what} contacts file has no 'contacts_lps_mm' list")
    return doc


def evaluate_case(pred_label: Volume, truth_label: Volume, *, pred_contacts_lps_mm=None,
                  truth_contacts: dict[str, Any] | None = None, gate_mm: float = 1.0) -> dict[str, Any]:
    """Voxel metrics and contact matching of one case (see :data:`COLUMNS`)."""
    row: dict[str, Any] = dict(segmentation_metrics(pred_label, truth_label))
    if truth_contacts is not None:
        row["vendor"] = truth_contacts.get("vendor")
        row["model"] = truth_contacts.get("model")
        if pred_contacts_lps_mm is not None:
            m = match_contacts(pred_contacts_lps_mm, truth_contacts["contacts_lps_mm"], gate_mm=gate_mm)
            row.update(contact_recall=m["recall"], contact_precision=m["precision"],
                       contact_error_mm=m["mean_error_mm"], contact_max_error_mm=m["max_error_mm"],
                       contact_misnamed=m["misnamed"], n_contacts_pred=m["n_pred"], n_contacts_truth=m["n_truth"])
    return row


def evaluate_folders(pred_dir: str | Path, truth_dir: str | Path, *, gate_mm: float = 1.0,
                     progress: bool = False) -> list[dict[str, Any]]:
    """One row per truth case: the prediction ``PRED_DIR/<case>.nii.gz`` (+ ``.contacts.json``).

    A missing or unreadable prediction gives a row with an ``error`` entry instead of metrics.
    """
    from cochseg3d.volume import read_image

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: no such folder")
    cases = truth_cases(truth_dir)
    if progress:
        from tqdm.auto import tqdm

        cases = tqdm(cases, desc="evaluate", unit="case")
    rows = []
    for c in cases:
        row: dict[str, Any] = {"case_id": c["case_id"]}
        try:
            truth_contacts = _contacts(Path(c["contacts"]), "truth") if c["contacts"] else None
            if truth_contacts:
                row.update(vendor=truth_contacts.get("vendor"), model=truth_contacts.get("model"))
            pred_path = pred_dir / f"{c['case_id']}.nii.gz"
            if not pred_path.is_file():
                raise FileNotFoundError(f"{pred_path}: no prediction for this case")
            pc = pred_dir / f"{c['case_id']}.contacts.json"
            pred_contacts = _contacts(pc, "predicted")["contacts_lps_mm"] if pc.exists() else None
            row.update(evaluate_case(read_image(pred_path), read_image(c["label"]),
                                     pred_contacts_lps_mm=pred_contacts, truth_contacts=truth_contacts,
                                     gate_mm=gate_mm))
        except (OSError, ValueError, KeyError) as exc:
            log.error("%s: %s", c["case_id"], exc)
            row["error"] = str(exc)
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]], *, by: str | None = "vendor") -> list[dict[str, Any]]:
    """Mean of every numeric column over all cases (``case_id`` "ALL"), and per ``by`` group.

    Infinite and missing values are left out of a mean; ``n`` counts the rows with metrics.
    """
    def mean_row(name: str, group: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"case_id": name, **extra}
        ok = [r for r in group if "error" not in r]
        for col in COLUMNS[3:]:
            vals = [float(r[col]) for r in ok if r.get(col) is not None and math.isfinite(float(r[col]))]
            out[col] = float(np.mean(vals)) if vals else math.nan
        out["n"] = len(ok)
        out["failed"] = len(group) - len(ok)
        return out

    summary = [mean_row("ALL", rows)]
    if by:
        for key in sorted({str(r.get(by)) for r in rows if r.get(by) is not None}):
            summary.append(mean_row(f"ALL[{key}]", [r for r in rows if str(r.get(by)) == key], **{by: key}))
    return summary


def format_table(rows: list[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """A plain-text (markdown) table of the rows."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.3f}")
        return "" if v is None else str(v)

    cols = [c for c in columns if any(c in r for r in rows)] + (["error"] if any("error" in r for r in rows) else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
