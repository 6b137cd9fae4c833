"""Whole-volume segmentation of one CT: :func:`run_segmentation` predicts electrode probability on the
canonical coronal stack (:mod:`.predict`), thresholds it, post-processes it (:mod:`.postprocess`) and
maps the label back onto exactly the source grid; :func:`load_model` loads the network. The public
entry point is :func:`cochseg3d.segment` (:mod:`.pipeline`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# slice prediction lives in .predict; its names stay importable from here
from cochseg3d.predict import (  # noqa: F401
    _chunk_input,
    _chunk_starts,
    _electrode_probability,
    _inference_roi,
    _is_canonical,
    _network,
    _plane_size,
    _resize_slices,
    _size_multiple,
    _slice_inferer,
    predict_canonical,
    predict_naive,
    stack_context,
)
from cochseg3d.preprocessing import Preprocessing
from cochseg3d.volume import Grid, Volume, canonical, from_canonical

log = logging.getLogger(__name__)

#: the checkpoint shipped inside the package (see scripts/train_default_model.py)
DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "default.pt"
#: a clipped ceiling at or above this HU may hide metal (dense bone reaches ~1900 HU on phantoms)
CEILING_ABOVE_BONE_HU = 1500.0


# --- post-processing: in :mod:`.postprocess`, re-exported for existing imports ----------------
from cochseg3d.postprocess import (  # noqa: E402,F401
    CBCT_BLUR_MM,
    OTHER_METAL_MIN_MM3,
    _array_limits,
    _block_any,
    _longest_path_mm,
    _postprocess_crop,
    postprocess,
)


# --- whole pipeline -----------------------------------------------------------------------------
@dataclass
class SegmentationResult:
    """What :func:`run_segmentation` returns.

    Attributes:
        label: uint8 electrode label (0/1) on the source grid.
        probability: float32 electrode probability on the source grid (None unless asked for).
        canonical_label: the label on the canonical grid (before going back), handy for contacts.
        info: what was run (model, preprocessing, threshold, voxel counts; "qc": what QC reads).
        alternates: the label at other probability thresholds (``cochseg3d.qc.ALTERNATE_P``), on
            the source grid: QC measures how far the contacts move between them.
    """

    label: Volume
    probability: Volume | None = None
    canonical_label: Volume | None = None
    info: dict[str, Any] = field(default_factory=dict)
    alternates: dict[float, Volume] = field(default_factory=dict)


def load_model(
    checkpoint: str | Path | None = None, *, device: str = "cpu"
) -> tuple[torch.nn.Module, Preprocessing, dict[str, Any]]:
    """Load a checkpoint (default: the model shipped in the package) for inference.

    Returns:
        ``(model, preprocessing, checkpoint_info)``; the model is in eval mode on ``device`` and
        also carries its preprocessing as ``model.cochseg3d_preprocessing`` (and the checkpoint's
        ``inference.roi_size``, if any, as ``model.cochseg3d_roi_size``, and its path as
        ``model.cochseg3d_path``) so that ``cochseg3d.segment(volume, model=model)`` needs nothing else.
    """
    from cochseg3d.models import load_checkpoint

    path = Path(checkpoint) if checkpoint is not None else DEFAULT_MODEL
    if not path.is_file():
        hint = " (the default model is built by scripts/train_default_model.py)" if checkpoint is None else ""
        raise FileNotFoundError(f"{path}: no such model checkpoint{hint}")
    model, info = load_checkpoint(path, map_location=device)
    if "preprocessing" not in info:
        raise ValueError(f"{path}: checkpoint has no 'preprocessing' entry; is it a cochseg3d checkpoint?")
    pre = Preprocessing.from_dict(info["preprocessing"])
    model.cochseg3d_preprocessing = pre  # type: ignore[attr-defined]
    # a checkpoint may ask for larger inference windows than its training patches (fully convolutional)
    roi = (info.get("inference") or {}).get("roi_size")
    model.cochseg3d_roi_size = tuple(int(r) for r in roi) if roi else None  # type: ignore[attr-defined]
    info = {**info, "path": str(path)}
    model.cochseg3d_path = str(path)  # type: ignore[attr-defined]
    return model.to(device).eval(), pre, info


def _clipped_at_ceiling(hu: np.ndarray) -> bool:
    """The brightest value is a stored ceiling above dense bone (HU + 1000 stored with a 3071 cap
    clips at 2071 HU): metal may hide under it, so the image cannot be called metal-free."""
    flat = np.asarray(hu).ravel()
    top = float(np.nanmax(flat))
    at_top = int(np.count_nonzero(flat >= top - 0.5))
    return top >= CEILING_ABOVE_BONE_HU and at_top >= max(8, flat.size // 100_000)


def empty_label_reason(hu: Volume) -> str | None:
    """Why an image (grey values in HU) gets an empty label, flat or without metal; None to segment it.

    The network would paint bone where there is no metal; a clipped ceiling may hide metal, so such an
    image is segmented.
    """
    from cochseg3d.qc import image_problem

    problem = image_problem(hu)
    if problem and problem.startswith("no metal") and _clipped_at_ceiling(hu.array):
        log.info("%s: %s, but the brightest voxels are clipped at the stored ceiling; segmenting",
                 hu.meta.get("source") or "image", problem)
        return None
    return problem


def run_segmentation(
    volume: Volume,
    model: torch.nn.Module,
    *,
    preprocessing: Preprocessing | None = None,
    threshold: float = 0.5,
    batch_size: int = 16,
    overlap: float = 0.25,
    device: str = "cpu",
    postprocessing: bool = True,
    min_component_mm3: float = 0.2,
    keep_distance_mm: float = 3.0,
    probabilities: bool = False,
    progress: bool = False,
    roi_size: tuple[int, int] | None = None,
) -> SegmentationResult:
    """Segment the electrode array of one CT volume (the network and post-processing only).

    Args:
        volume: CT on its source grid (any orientation, oblique included), HU or scanner grey values.
        model: the network (e.g. from :func:`load_model`, which attaches its preprocessing).
        preprocessing: the model's input preparation; taken from the model when omitted.
        threshold: probability at or above which a voxel is electrode.
        batch_size, overlap: sliding-window patches per forward pass and their overlap fraction.
        device: "cpu", "cuda", "cuda:1" ...
        postprocessing: drop small components and those far from the array (:func:`postprocess`).
        probabilities: also return the probability map on the source grid (linear resampling for
            oblique series).
        progress: progress bar.
    """
    pre = preprocessing or getattr(model, "cochseg3d_preprocessing", None)
    if pre is None:
        raise ValueError("no preprocessing given and the model carries none; load it with load_model()")
    roi_size = roi_size or getattr(model, "cochseg3d_roi_size", None)
    can = volume if _is_canonical(volume) and "source_grid" in volume.meta else canonical(volume)
    from cochseg3d.qc import segmentation_measures

    prob, problem = _canonical_probability(volume, can, model, pre, batch_size=batch_size, overlap=overlap,
                                           device=device, progress=progress, roi_size=roi_size)
    mask = raw_mask = prob >= float(threshold)
    raw = int(mask.sum())
    chosen: dict[str, Any] = {}
    if postprocessing:
        mask = postprocess(mask, can.spacing_mm, min_component_mm3=min_component_mm3,
                           keep_distance_mm=keep_distance_mm, report=chosen)
    qc = {"image_problem": problem, **chosen, **segmentation_measures(
        prob, raw_mask, mask, can.spacing_mm, keep_distance_mm=keep_distance_mm, min_component_mm3=min_component_mm3)}
    can_label = can.with_array(mask.astype(np.uint8))
    source = Grid.from_dict(can.meta["source_grid"])
    label = from_canonical(can_label, source, is_label=True)
    label.array = label.array.astype(np.uint8, copy=False)
    label.meta = {k: v for k, v in volume.meta.items() if k != "source_grid"}
    alternates = (_alternate_labels(prob, can, source, min_component_mm3=min_component_mm3,
                                    keep_distance_mm=keep_distance_mm) if postprocessing and mask.any() else {})
    prob_vol = _probability_on_source(prob, can, source, label.meta) if probabilities else None
    info = _run_info(volume, label, pre, threshold=threshold, raw=raw, chosen=chosen, qc=qc)
    return SegmentationResult(label=label, probability=prob_vol, canonical_label=can_label, info=info,
                              alternates=alternates)


def _canonical_probability(volume: Volume, can: Volume, model: torch.nn.Module, pre: Preprocessing,
                           **predict: Any) -> tuple[np.ndarray, str | None]:
    """(electrode probability on the canonical grid, why it is left empty or None)."""
    # grey values to HU once, here: the no-metal check reads what the network will see
    hu = pre.hu(can)
    problem = empty_label_reason(hu)
    if problem:
        log.warning("%s: %s; the label is left empty", volume.meta.get("source") or "image", problem)
        return np.zeros(can.array.shape, np.float32), problem
    return predict_canonical(model, hu, dataclasses.replace(pre, grey_levels="as_stored"), **predict), problem


def _alternate_labels(prob: np.ndarray, can: Volume, source: Grid, *, min_component_mm3: float,
                      keep_distance_mm: float) -> dict[float, Volume]:
    """The post-processed label at each of QC's other thresholds, on the source grid."""
    from cochseg3d.qc import ALTERNATE_P

    alternates = {}
    for p_alt in ALTERNATE_P:
        alt = postprocess(prob >= p_alt, can.spacing_mm, min_component_mm3=min_component_mm3,
                          keep_distance_mm=keep_distance_mm)
        alternates[p_alt] = from_canonical(can.with_array(alt.astype(np.uint8)), source, is_label=True)
    return alternates


def _probability_on_source(prob: np.ndarray, can: Volume, source: Grid, meta: dict[str, Any]) -> Volume:
    """The canonical probability map resampled onto the source grid (float32, ``meta`` copied)."""
    prob_vol = from_canonical(can.with_array(prob), source, is_label=False)
    prob_vol.array = prob_vol.array.astype(np.float32, copy=False)
    prob_vol.meta = dict(meta)
    return prob_vol


def _run_info(volume: Volume, label: Volume, pre: Preprocessing, *, threshold: float, raw: int,
              chosen: dict[str, Any], qc: dict[str, Any]) -> dict[str, Any]:
    """``SegmentationResult.info``: what was run and how much was found."""
    voxel_mm3 = float(np.prod(volume.spacing_mm))
    return {
        "threshold": float(threshold),
        "preprocessing": pre.to_dict(),
        "voxels_raw_canonical": raw,
        "voxels": int(label.array.sum()),
        "volume_mm3": round(int(label.array.sum()) * voxel_mm3, 3),
        "other_metal_mm3": chosen.get("other_metal_mm3", 0.0),
        "qc": qc,
    }


#: moved to their own modules; still importable from here for existing scripts
_MOVED = {"segment_path": "cochseg3d.pipeline", "find_inputs": "cochseg3d.inputs", "is_image_path": "cochseg3d.inputs",
          "preview_png": "cochseg3d.export", "write_dicom_seg": "cochseg3d.export",
          "electrode_slab": "cochseg3d.export"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
