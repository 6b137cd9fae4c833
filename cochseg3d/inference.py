"""Whole-volume segmentation: slice-wise sliding-window inference over the coronal stack.

The pipeline is ``canonical`` -> :func:`predict_canonical` (in-plane resampling to the model's pixel
size, HU window, 2.5D channel stacking, MONAI ``SliceInferer``) -> threshold -> :func:`postprocess`
(:mod:`.postprocess`: small and far-away components dropped) -> ``from_canonical`` onto exactly the source grid.
Only the network and its post-processing live here: :func:`cochseg3d.segment` (:mod:`.pipeline`)
is the public entry point, :mod:`.inputs` finds the patients, :mod:`.export` writes the results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cochseg3d.preprocessing import Preprocessing
from cochseg3d.volume import CANONICAL_DIRECTION, Grid, Volume, canonical, from_canonical

log = logging.getLogger(__name__)

#: the checkpoint shipped inside the package (see scripts/train_default_model.py)
DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "default.pt"
#: a clipped ceiling at or above this HU may hide metal (dense bone reaches ~1900 HU on phantoms)
CEILING_ABOVE_BONE_HU = 1500.0


# --- network input ------------------------------------------------------------------------------
def _is_canonical(volume: Volume) -> bool:
    return bool(np.allclose(volume.direction, CANONICAL_DIRECTION, atol=1e-4))


def _plane_size(shape_rc: tuple[int, int], spacing_rc_mm: tuple[float, float], target_mm: float) -> tuple[int, int]:
    """Rows/cols of a slice resampled to ``target_mm`` pixels (same field of view, edge to edge)."""
    return tuple(max(1, int(round(n * s / target_mm))) for n, s in zip(shape_rc, spacing_rc_mm))  # type: ignore[return-value]


def _resize_slices(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample ``x`` (N, C, rows, cols) to ``size`` keeping the field of view (pixel-centre exact).

    ``align_corners=False`` maps the outer pixel edges onto each other, which is what keeps a voxel's
    physical position when the pixel size changes; antialiasing avoids losing thin wires when
    shrinking fine (0.1 mm) scans.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def stack_context(slices: torch.Tensor, context: int, start: int, stop: int) -> torch.Tensor:
    """2.5D input for slices ``start:stop`` of ``slices`` (K, rows, cols): (stop-start, 2k+1, rows, cols).

    Channel ``c`` holds slice ``index + c - context``; indices past either end repeat the edge slice
    (the same rule training uses, so border slices look like what the network has seen).
    """
    n = slices.shape[0]
    idx = torch.arange(start, stop)[:, None] + torch.arange(-context, context + 1)[None, :]
    return slices[idx.clamp_(0, n - 1)]


def _size_multiple(model: torch.nn.Module) -> int:
    """Input sizes the network accepts are multiples of this (product of a MONAI UNet's strides)."""
    strides = getattr(model, "strides", None)
    if strides:
        return int(np.prod([int(np.max(s)) for s in strides]))
    return 16


def _electrode_probability(logits: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) network output -> (N, 1, H, W) electrode probability (softmax or sigmoid)."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits.float())
    return torch.softmax(logits.float(), dim=1)[:, 1:2]


def predict_canonical(
    model: torch.nn.Module,
    volume: Volume,
    preprocessing: Preprocessing,
    *,
    batch_size: int = 16,
    overlap: float = 0.25,
    device: str | torch.device = "cpu",
    progress: bool = False,
    chunk_slices: int = 32,
    roi_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Electrode probability for every voxel of the canonical (coronal-stack) volume.

    Each coronal slice is resampled in-plane to ``preprocessing.spacing_mm``, windowed to [0, 1],
    stacked with its ``preprocessing.context`` neighbours on each side as channels, and run through
    MONAI's ``SliceInferer`` (patches of ``preprocessing.roi_size`` with ``overlap``, ``batch_size``
    patches per forward pass; float16 autocast on CUDA). Probabilities are resampled back to the
    slice's own pixel grid. The volume is processed ``chunk_slices`` coronal slices at a time, which
    bounds memory to a few copies of one chunk.

    Args:
        model: 2D network, input (B, 2k+1, rows, cols), output logits (B, 2, rows, cols) (background,
            electrode) or (B, 1, rows, cols).
        volume: CT in HU, any orientation; reoriented with :func:`cochseg3d.volume.canonical` unless
            already canonical.
        preprocessing: the model's input preparation (from its checkpoint).
        batch_size: patches per forward pass.
        overlap: sliding-window overlap fraction in [0, 1).
        device: where the network runs ("cpu", "cuda", "cuda:1" ...).
        progress: show a progress bar over chunks of slices.
        chunk_slices: coronal slices per SliceInferer call.
        roi_size: sliding-window patch (rows, cols) at ``spacing_mm``; default
            ``preprocessing.roi_size``. A patch as large as the slice means one window per slice.

    Returns:
        float32 array shaped like ``canonical(volume).array`` ([posterior, inferior, left]) with the
        electrode probability in [0, 1].
    """
    can = preprocessing.hu(volume if _is_canonical(volume) else canonical(volume))
    n_slices, rows, cols = can.array.shape
    # canonical spacing is (i=cols, j=rows, k=slices)
    spacing_rc = (can.spacing_mm[1], can.spacing_mm[0])
    net_size = _plane_size((rows, cols), spacing_rc, preprocessing.spacing_mm)
    device = torch.device(device)
    model = model.to(device).eval()
    inferer = _slice_inferer(_inference_roi(model, roi_size or preprocessing.roi_size, net_size),
                             batch_size=batch_size, overlap=overlap)
    network = _network(model, device)
    k = int(preprocessing.context)
    out = np.empty((n_slices, rows, cols), dtype=np.float32)
    chunk = max(1, int(chunk_slices))
    with torch.inference_mode():
        for start in _chunk_starts(n_slices, chunk, progress):
            stop = min(n_slices, start + chunk)
            x = _chunk_input(can.array, start, stop, k, net_size, preprocessing).to(device)
            prob = inferer(x, network)  # (1, 1, n, H, W)
            prob = prob[0, 0].float().unsqueeze(1)  # (n, 1, H, W)
            prob = _resize_slices(prob, (rows, cols)) if (rows, cols) != net_size else prob
            out[start:stop] = prob[:, 0].clamp_(0.0, 1.0).cpu().numpy()
    return out


def _inference_roi(model: torch.nn.Module, roi_size: tuple[int, int], net_size: tuple[int, int]) -> tuple[int, ...]:
    """The sliding-window patch: ``roi_size`` shrunk to the slice, rounded up to the U-Net's multiple."""
    # a slice smaller than the roi is padded by MONAI: shrink the roi to the slice, rounded up to
    # what the U-Net's downsampling needs
    multiple = _size_multiple(model)
    return tuple(min(int(r), int(math.ceil(n / multiple) * multiple)) for r, n in zip(roi_size, net_size))


def _slice_inferer(roi: tuple[int, ...], *, batch_size: int, overlap: float) -> Any:
    """MONAI ``SliceInferer`` sliding ``roi`` patches over every slice of axis 0 (gaussian blend)."""
    from monai.inferers import SliceInferer

    return SliceInferer(
        spatial_dim=0,
        roi_size=roi,
        sw_batch_size=int(batch_size),
        overlap=float(overlap),
        mode="gaussian" if overlap > 0 else "constant",
        padding_mode="replicate",
        progress=False,
    )


def _network(model: torch.nn.Module, device: torch.device) -> Any:
    """``model`` as a function of its input returning electrode probability (float16 on CUDA)."""
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.float16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )

    def network(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            return _electrode_probability(model(x))

    return network


def _chunk_starts(n_slices: int, chunk: int, progress: bool) -> Any:
    """First slice of each chunk of ``chunk`` slices, behind a progress bar on request."""
    starts = range(0, n_slices, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="segment", unit="chunk", leave=False)
    return starts


def _chunk_input(hu_array: np.ndarray, start: int, stop: int, k: int, net_size: tuple[int, int],
                 preprocessing: Preprocessing) -> torch.Tensor:
    """Network input for slices ``start:stop``: resampled, windowed, 2.5D-stacked, (1, C, n, H, W)."""
    n_slices = hu_array.shape[0]
    lo, hi = max(0, start - k), min(n_slices, stop + k)
    # the chunk plus k context slices each side, resampled and windowed
    hu = torch.from_numpy(np.ascontiguousarray(hu_array[lo:hi], dtype=np.float32))
    small = _resize_slices(hu[:, None], net_size)[:, 0]
    small = torch.from_numpy(preprocessing.normalize(small.numpy()))
    stacked = stack_context(small, k, start - lo, stop - lo)  # (n, C, H, W)
    # SliceInferer wants (1, C, D, H, W) and slides over D
    return stacked.permute(1, 0, 2, 3).unsqueeze(0)


def predict_naive(
    model: torch.nn.Module, volume: Volume, preprocessing: Preprocessing, *, device: str = "cpu"
) -> np.ndarray:
    """Reference implementation: one whole slice per forward pass, no patches, no batching.

    Used by the benchmark as the peer of :func:`predict_canonical` and by tests as its oracle.
    """
    can = preprocessing.hu(volume if _is_canonical(volume) else canonical(volume))
    n_slices, rows, cols = can.array.shape
    net_size = _plane_size((rows, cols), (can.spacing_mm[1], can.spacing_mm[0]), preprocessing.spacing_mm)
    hu = torch.from_numpy(np.ascontiguousarray(can.array, dtype=np.float32))
    small = torch.from_numpy(preprocessing.normalize(_resize_slices(hu[:, None], net_size)[:, 0].numpy()))
    # pad to a multiple of 16 centred, as MONAI's sliding window pads a short slice
    pad = [(-n) % _size_multiple(model) for n in net_size]
    pad_lrtb = (pad[1] // 2, pad[1] - pad[1] // 2, pad[0] // 2, pad[0] - pad[0] // 2)
    out = np.empty((n_slices, rows, cols), dtype=np.float32)
    model = model.to(device).eval()
    with torch.inference_mode():
        for s in range(n_slices):
            x = stack_context(small, int(preprocessing.context), s, s + 1).to(device)
            x = F.pad(x, pad_lrtb, mode="replicate")
            p = _electrode_probability(model(x))
            p = p[..., pad_lrtb[2] : pad_lrtb[2] + net_size[0], pad_lrtb[0] : pad_lrtb[0] + net_size[1]]
            out[s] = _resize_slices(p, (rows, cols))[0, 0].clamp(0.0, 1.0).cpu().numpy()
    return out


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
