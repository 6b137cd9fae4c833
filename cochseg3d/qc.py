"""Quality control of one segmentation: a verdict ("ok" / "review" / "fail") with reasons.

The measures need no ground truth:

* contact count against the named model's, or the model the contact finder assumed / the
  catalogue model whose pitch fits the found spacing;
* pitch regularity of separate contacts: coefficient of variation of the spacings, the widest gap
  and the median spacing against the catalogue pitch;
* label volume against what the catalogue array gives (median label of calibration phantoms with
  that model: blooming, not the carrier's few mm^3, sets it);
* fragments: electrode-like voxels the post-processing dropped far from the kept array;
* network uncertainty: ambiguous probabilities (0.3 < p < 0.7) per label voxel, mean entropy, and
  how far the contacts move when the label is made at p >= 0.3 and p >= 0.7 instead of 0.5;
* the image itself: flat, or no metal brighter than dense bone (``fail``; the label is empty).

Which values flag a result is data, not code: ``qc_thresholds.json`` next to this module, written
by ``scripts/calibrate_qc.py`` from phantoms segmented by the default model (regenerate it for
another scanner or model). A tripped calibrated rule gives ``review``; an empty label, an image
that cannot be read as CT, or no contacts give ``fail``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cochseg3d.volume import Volume

#: the calibrated thresholds shipped with the package (scripts/calibrate_qc.py)
QC_THRESHOLDS = Path(__file__).resolve().parent / "qc_thresholds.json"
#: probabilities in this open interval count as ambiguous
UNCERTAIN_P = (0.3, 0.7)
#: a voxel at least this probable is electrode-like when looking for far fragments
FRAGMENT_P = 0.5
#: the label is made again at these probability thresholds; how far the contacts move is read as
#: the network's uncertainty where it matters
ALTERNATE_P = (0.3, 0.7)
#: a contact that moves farther than this (mm) counts as lost (and at this distance)
SHIFT_GATE_MM = 1.0
#: separate contacts (spacing resolvable by CBCT): methods whose spacings are measured, not placed
SEPARATE_METHODS = ("peaks", "dips", "blobs")
VERDICTS = ("ok", "review", "fail")


# --- thresholds as data -------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One calibrated cut-off: ``measure`` above (``">"``) or below (``"<"``) ``value`` flags."""

    measure: str
    op: str
    value: float

    def trips(self, measures: dict[str, Any]) -> bool:
        v = measures.get(self.measure)
        if v is None or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            return False
        return float(v) > self.value if self.op == ">" else float(v) < self.value


@dataclass(frozen=True)
class QCThresholds:
    """The calibrated rules and where they came from (``provenance``: script, seeds, numbers)."""

    rules: tuple[Rule, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    #: expected label volume (mm^3) per catalogue model, and "default" for any other
    expected_label_mm3: dict[str, float] = field(default_factory=dict)

    def expected_mm3(self, model: str | None) -> float | None:
        """The label volume a good result of ``model`` has (calibrated), or None when unknown."""
        v = self.expected_label_mm3.get(str(model), self.expected_label_mm3.get("default"))
        return float(v) if v else None

    @classmethod
    def load(cls, path: str | Path | None = None) -> "QCThresholds":
        """Read a thresholds file (default: the one shipped in the package).

        Raises:
            ValueError: the file is missing, not JSON, or its rules are malformed (names the file).
        """
        path = Path(path) if path is not None else QC_THRESHOLDS
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: QC thresholds file not found (scripts/calibrate_qc.py writes it)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: QC thresholds file is not readable JSON ({exc})") from None
        return cls.load_dict(data, source=str(path))

    @classmethod
    def load_dict(cls, data: Any, *, source: str = "QC thresholds") -> "QCThresholds":
        """Thresholds from their JSON content; ``source`` names it in errors."""
        try:
            rules = tuple(Rule(str(r["measure"]), str(r["op"]), float(r["value"])) for r in data["rules"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: QC thresholds file has malformed rules "
                             f"(each needs measure, op, value): {exc!r}") from None
        bad = [r for r in rules if r.op not in (">", "<") or r.measure not in MEASURE_TEXT]
        if bad:
            raise ValueError(f"{source}: QC thresholds file has unknown rules {[r.__dict__ for r in bad]}; "
                             f"measures are {sorted(MEASURE_TEXT)}, ops '>' or '<'")
        try:
            expected = {str(k): float(v) for k, v in (data.get("expected_label_mm3") or {}).items()}
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: QC thresholds file has a malformed expected_label_mm3: {exc!r}") from None
        return cls(rules, dict(data.get("provenance") or {}), expected)

    def to_dict(self) -> dict[str, Any]:
        return {"rules": [{"measure": r.measure, "op": r.op, "value": r.value} for r in self.rules],
                "expected_label_mm3": self.expected_label_mm3, "provenance": self.provenance}


@dataclass
class QCVerdict:
    """The QC outcome of one result.

    Attributes:
        verdict: "ok", "review" (a calibrated rule tripped) or "fail" (nothing usable).
        reasons: short human sentences, one per tripped rule or failure.
        measures: every number the verdict was taken from (mm, mm^3, fractions).
    """

    verdict: str
    reasons: list[str]
    measures: dict[str, Any]

    @property
    def flagged(self) -> bool:
        return self.verdict != "ok"

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": list(self.reasons), "measures": _jsonable(self.measures)}


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (float, np.floating)):
            out[k] = round(float(v), 4) if math.isfinite(float(v)) else None
        elif isinstance(v, np.integer):
            out[k] = int(v)
        else:
            out[k] = v
    return out


# --- measures gathered during segmentation ------------------------------------------------------
def image_problem(volume: Volume | np.ndarray) -> str | None:
    """Why the grey values cannot be read as a post-operative CT, or None when they can.

    Flat (no variation), no finite values, or no metal: the brightest voxels are not clearly
    brighter than dense bone (:func:`cochseg3d.metal.threshold_levels`).
    """
    from cochseg3d.metal import threshold_levels

    arr = volume.array if isinstance(volume, Volume) else np.asarray(volume)
    finite = np.isfinite(arr)
    if not finite.any():
        return "no finite grey values"
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    if hi - lo < 1.0:
        return f"flat image: every voxel is {lo:g}"
    arr = np.where(finite, arr, lo)
    levels = threshold_levels(arr)
    if not levels["has_metal"] and not _metal_without_bone(arr, levels):
        return (f"no metal: the brightest voxels ({levels['metal']:.0f}) are not clearly brighter than "
                f"dense bone ({levels['bone']:.0f})")
    return None


def _metal_without_bone(arr: np.ndarray, levels: dict[str, float]) -> bool:
    """Metal in a small field with little or no bone, where metal itself set the 'bone' percentile.

    The dense-bone level is measured again below 90 % of the way from tissue to the brightest
    voxels: real bone reaches up there and stays, a metal-only top end drops out.
    """
    flat = arr.ravel()
    v = flat[:: max(1, flat.size // 2_000_000)].astype(np.float32)
    tissue, metal = levels["tissue"], levels["metal"]
    top = v >= tissue + 0.9 * (metal - tissue)
    lower = v[~top]
    if not lower.size or top.mean() > 0.05:
        return False
    bone = float(np.percentile(lower, 99.0))
    # stricter than threshold_levels' contrast: the top stands at least as far above this bone
    # level as the bone above tissue
    return metal - bone > max(bone - tissue, 1.0)


def segmentation_measures(prob: np.ndarray, raw_mask: np.ndarray, kept_mask: np.ndarray,
                          spacing_mm: Sequence[float], *, keep_distance_mm: float = 3.0,
                          min_component_mm3: float = 0.2) -> dict[str, float]:
    """Uncertainty and far-fragment numbers of one segmentation, on one grid.

    Args:
        prob: electrode probability, array [k, j, i].
        raw_mask: the thresholded mask before post-processing, same shape.
        kept_mask: the mask after post-processing (the array), same shape.
        spacing_mm: voxel size in ITK order (i, j, k), mm.
        keep_distance_mm: voxels farther than this from the kept array are far away.
        min_component_mm3: components smaller than this are noise, not fragments.

    Returns:
        ``uncertain_fraction`` (voxels with 0.3 < p < 0.7 per kept label voxel), ``mean_entropy_bits``
        (binary entropy over the kept label), ``far_fragments_mm3`` / ``n_far_fragments`` (dropped
        raw components at least ``min_component_mm3`` whose nearest voxel lies farther than
        ``keep_distance_mm`` from the kept array), ``raw_mm3``.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    sampling = np.asarray(spacing_mm, dtype=float)[::-1]
    voxel_mm3 = float(np.prod(sampling))
    kept = np.asarray(kept_mask, bool)
    n_kept = int(kept.sum())
    p_kept = prob[kept].astype(np.float64)
    ambiguous = int(np.count_nonzero((prob > UNCERTAIN_P[0]) & (prob < UNCERTAIN_P[1])))
    pk = np.clip(p_kept, 1e-6, 1 - 1e-6)
    entropy = -(pk * np.log2(pk) + (1 - pk) * np.log2(1 - pk))
    out = {"raw_mm3": float(np.count_nonzero(raw_mask)) * voxel_mm3,
           "uncertain_fraction": ambiguous / n_kept if n_kept else math.nan,
           "mean_entropy_bits": float(entropy.mean()) if n_kept else math.nan,
           "far_fragments_mm3": 0.0, "n_far_fragments": 0}
    dropped = np.asarray(raw_mask, bool) & ~kept
    if not n_kept or not dropped.any():
        return out
    labels, n = ndimage.label(dropped, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel())[1:] * voxel_mm3
    tree = cKDTree(np.argwhere(kept) * sampling)
    idx = np.argwhere(labels > 0)
    dist, _ = tree.query(idx * sampling, distance_upper_bound=keep_distance_mm)
    near = np.zeros(n + 1, bool)
    near[labels[tuple(idx[np.isfinite(dist)].T)]] = True
    far = [c for c in range(1, n + 1) if not near[c] and sizes[c - 1] >= min_component_mm3]
    out["far_fragments_mm3"] = float(sum(sizes[c - 1] for c in far))
    out["n_far_fragments"] = len(far)
    return out


# --- the catalogue array a result is compared with ----------------------------------------------
def _catalogue():
    try:
        from cochseg3d import electrodes as cat  # its home once moved out of the phantom
    except ImportError:
        from cochseg3d.phantom import electrodes as cat
    return cat


def expected_model(contacts: Any, electrode: str | None) -> tuple[Any | None, str]:
    """The catalogue model a result is checked against, and how it was chosen.

    The model the contact finder used (named, or assumed from the image) when it is a catalogue
    model; else among the named vendor's (or all) models, the one whose pitch is nearest the
    found spacing.

    Returns:
        (ElectrodeModel or None, "named" | "assumed" | "inferred" | "none").
    """
    cat = _catalogue()
    used = (contacts.info or {}).get("model")
    if electrode:
        try:
            return cat.find_model(electrode), "named"
        except ValueError:
            pass
    if used:
        try:
            return cat.find_model(str(used)), "named" if electrode else "assumed"
        except ValueError:
            pass
    try:
        pool = list(cat.models_of(electrode)) if electrode else list(cat.CATALOGUE)
    except ValueError:
        pool = list(cat.CATALOGUE)
    pitch = float(contacts.pitch_mm) if contacts.pitch_mm is not None else math.nan
    if not math.isfinite(pitch):
        return (pool[0], "named") if electrode and len(pool) == 1 else (None, "none")
    return min(pool, key=lambda m: abs(math.log(m.pitch_mm / pitch))), "inferred"


def contact_shift_mm(contacts_lps_mm: np.ndarray, others: Sequence[np.ndarray]) -> float | None:
    """How far contacts move between labels: mean over contacts of the matched distance (mm).

    A contact without a match within :data:`SHIFT_GATE_MM` (or one more or fewer) counts at the
    gate; the largest value over ``others`` is returned (None without any).
    """
    from cochseg3d.metrics import match_contacts

    shifts = []
    for other in others:
        m = match_contacts(contacts_lps_mm, other, gate_mm=SHIFT_GATE_MM)
        n = max(len(contacts_lps_mm), len(other), 1)
        shifts.append((sum(d for _, _, d in m["pairs"]) + (n - m["n_matched"]) * SHIFT_GATE_MM) / n)
    return max(shifts) if shifts else None


def result_measures(label: Volume, contacts: Any, *, info: dict[str, Any] | None = None,
                    electrode: str | None = None, probability: np.ndarray | None = None,
                    alternate_contacts: Sequence[Any] = ()) -> dict[str, Any]:
    """Every QC measure of one result (see the module docstring).

    ``alternate_contacts``: contacts found the same way on the labels of ``ALTERNATE_P``.
    """
    info = info or {}
    gathered = dict(info.get("qc") or {})
    voxel_mm3 = float(np.prod(label.spacing_mm))
    mask = np.asarray(label.array) > 0
    label_mm3 = float(mask.sum()) * voxel_mm3
    if probability is not None and "uncertain_fraction" not in gathered:
        p = np.asarray(probability.array if isinstance(probability, Volume) else probability)
        gathered.update({k: v for k, v in segmentation_measures(p, mask, mask, label.spacing_mm).items()
                         if k in ("uncertain_fraction", "mean_entropy_bits")})
    model, how = expected_model(contacts, electrode)
    pts = np.asarray(contacts.lps_mm, float).reshape(-1, 3)
    m: dict[str, Any] = {
        "label_mm3": label_mm3, "n_contacts": int(len(pts)), "method": contacts.method,
        "model": model.model if model is not None else None, "model_source": how,
        "n_expected": int(model.n_contacts) if model is not None else None,
        "image_problem": gathered.get("image_problem"),
    }
    m["contact_count_error"] = abs(m["n_contacts"] - m["n_expected"]) if model is not None else None
    gaps = np.linalg.norm(np.diff(pts, axis=0), axis=1) if len(pts) >= 3 else np.zeros(0)
    separate = contacts.method in SEPARATE_METHODS and len(gaps) >= 2
    pitch = model.pitch_mm if model is not None else math.nan
    m["pitch_cv"] = float(gaps.std() / gaps.mean()) if separate and gaps.mean() > 0 else None
    m["max_gap_pitches"] = float(gaps.max() / pitch) if separate and math.isfinite(pitch) else None
    m["pitch_ratio"] = float(np.median(gaps) / pitch) if separate and math.isfinite(pitch) else None
    for k in ("uncertain_fraction", "mean_entropy_bits", "far_fragments_mm3", "n_far_fragments", "raw_mm3",
              "other_metal_mm3", "n_other_metal", "array_rule", "array_path_mm",
              "catalogue_path_mm"):
        m[k] = gathered.get(k)
    m["bloom_mm"] = (contacts.info or {}).get("bloom_mm")
    m["contact_shift_mm"] = contact_shift_mm(pts, [np.asarray(c.lps_mm, float).reshape(-1, 3)
                                                   for c in alternate_contacts]) if len(pts) else None
    return m


# --- the verdict ------------------------------------------------------------------------------
#: how each calibrated measure reads in a reason: (format, unit/limit wording)
MEASURE_TEXT: dict[str, str] = {
    "contact_count_error": "{n_contacts} contacts found, {model} has {n_expected}",
    "pitch_cv": "contact spacing irregular (CV {v:.2f}, limit {t:.2f})",
    "max_gap_pitches": "a gap of {v:.1f} pitches between contacts (limit {t:.1f}): a contact missed?",
    "pitch_ratio": "contact spacing {v:.2f}x {model}'s pitch (limit {t:.2f}x)",
    "volume_ratio": "label volume {label_mm3:.1f} mm^3 is {v:.2f}x what {model} arrays give "
                    "({expected_label_mm3:.0f} mm^3; limit {t:.2f}x)",
    "far_fragments_mm3": "{v:.1f} mm^3 of electrode-like fragments more than 3 mm from the array "
                         "(limit {t:.1f} mm^3)",
    "uncertain_fraction": "network uncertain: {v:.2f} ambiguous voxels (0.3<p<0.7) per label voxel "
                          "(limit {t:.2f})",
    "mean_entropy_bits": "network uncertain: mean entropy {v:.2f} bits over the label (limit {t:.2f})",
    "contact_shift_mm": "contacts move {v:.2f} mm when the label is made at p 0.3 / 0.7 (limit {t:.2f} mm): "
                        "the network is unsure where the array is",
    "bloom_mm": "label {v:.2f} mm wide around the array's tip (limit {t:.2f} mm): blurred or noisy scan",
}


def _reason(rule: Rule, m: dict[str, Any]) -> str:
    model = m.get("model") or "the array"
    if m.get("model") and m.get("model_source") in ("assumed", "inferred"):
        model += " (assumed)"
    return MEASURE_TEXT[rule.measure].format(**{**m, "model": model}, v=float(m[rule.measure]), t=rule.value)


def assess(result_label: Volume, contacts: Any, *, probability: np.ndarray | None = None,
           info: dict[str, Any] | None = None, electrode: str | None = None,
           thresholds: QCThresholds | None = None, alternate_contacts: Sequence[Any] = ()) -> QCVerdict:
    """The QC verdict of one segmentation result.

    Args:
        result_label: the electrode label on the source grid.
        contacts: :class:`cochseg3d.contacts.Contacts` found on it.
        probability: electrode probability on the label's grid, if at hand (for the uncertainty
            measures when ``info`` lacks them).
        info: ``SegmentationResult.info`` (its ``"qc"`` entry holds what only the segmentation saw:
            image problem, uncertainty, dropped fragments).
        electrode: the vendor or model the user named, if any.
        thresholds: calibrated rules; default the shipped ``qc_thresholds.json``.
        alternate_contacts: contacts found the same way on ``SegmentationResult.alternates``.

    Returns:
        :class:`QCVerdict`.
    """
    m = result_measures(result_label, contacts, info=info, electrode=electrode, probability=probability,
                        alternate_contacts=alternate_contacts)
    return assess_measures(m, thresholds)


def assess_measures(m: dict[str, Any], thresholds: QCThresholds | None = None) -> QCVerdict:
    """The verdict on measures from :func:`result_measures` (as they are, or read back from JSON)."""
    thresholds = thresholds or QCThresholds.load()
    if m.get("image_problem"):
        return QCVerdict("fail", [f"{m['image_problem']}; the label is empty"], m)
    if not m.get("label_mm3"):
        return QCVerdict("fail", ["empty label: no electrode found"], m)
    if not m.get("n_contacts"):
        return QCVerdict("fail", ["no contacts found on the label"], m)
    expected = thresholds.expected_mm3(m.get("model"))
    m = {**m, "expected_label_mm3": expected, "volume_ratio": m["label_mm3"] / expected if expected else None}
    reasons = []
    seen = _without_other_metal(m)
    for rule in thresholds.rules:
        if rule.trips(seen):
            text = _reason(rule, seen)
            if text not in reasons:
                reasons.append(text)
    if m.get("model") is None:
        reasons.append("no catalogue model fits the contacts: count and volume not checked")
    other = m.get("other_metal_mm3") or 0.0
    if other and m.get("array_rule") == "tube_length":
        reasons.append(f"no metal in the image is as long and thin as a catalogue array; the most tube-like "
                       f"of {(m.get('n_other_metal') or 0) + 1} pieces was kept: check that it is the array")
    if m.get("array_rule") == "catalogue_disagrees":
        reasons.append(f"another metal chain has an array-long thin path ({m.get('catalogue_path_mm') or 0:.0f} mm) "
                       f"and the kept one does not ({m.get('array_path_mm') or 0:.0f} mm): check that the kept "
                       "one is the array, not a screw or fillings")
    verdict = "review" if reasons else "ok"
    if other:  # information: the kept chain met the catalogue's limits, what else was painted did not
        reasons.append(f"metal other than the array found ({other:.0f} mm^3 in {m.get('n_other_metal')} "
                       f"piece(s): screw, fillings?), dropped")
    return QCVerdict(verdict, reasons, m)


def _without_other_metal(m: dict[str, Any]) -> dict[str, Any]:
    """The measures the calibrated rules read: far fragments less the metal the post-processing
    recognised as not an array (the calibration phantoms had none; it is reported on its own)."""
    far, other = m.get("far_fragments_mm3"), m.get("other_metal_mm3")
    if m.get("array_rule") != "catalogue" or not other or far is None:
        return m
    return {**m, "far_fragments_mm3": max(0.0, float(far) - float(other))}
