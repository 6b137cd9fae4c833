"""Whole-volume segmentation: slice-wise sliding-window inference over the coronal stack.

The pipeline is ``canonical`` -> :func:`predict_canonical` (in-plane resampling to the model's pixel
size, HU window, 2.5D channel stacking, MONAI ``SliceInferer``) -> threshold -> :func:`postprocess`
(small and far-away components dropped) -> ``from_canonical`` onto exactly the source grid.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cochseg3d.preprocessing import Preprocessing
from cochseg3d.volume import CANONICAL_DIRECTION, Grid, Volume, canonical, from_canonical

log = logging.getLogger(__name__)

#: the checkpoint shipped inside the package (see scripts/train_default_model.py)
DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "default.pt"


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
    from monai.inferers import SliceInferer

    can = preprocessing.hu(volume if _is_canonical(volume) else canonical(volume))
    n_slices, rows, cols = can.array.shape
    # canonical spacing is (i=cols, j=rows, k=slices)
    spacing_rc = (can.spacing_mm[1], can.spacing_mm[0])
    net_size = _plane_size((rows, cols), spacing_rc, preprocessing.spacing_mm)
    device = torch.device(device)
    model = model.to(device).eval()
    # a slice smaller than the roi is padded by MONAI: shrink the roi to the slice, rounded up to
    # what the U-Net's downsampling needs
    multiple = _size_multiple(model)
    roi = tuple(min(int(r), int(math.ceil(n / multiple) * multiple))
                for r, n in zip(roi_size or preprocessing.roi_size, net_size))
    inferer = SliceInferer(
        spatial_dim=0,
        roi_size=roi,
        sw_batch_size=int(batch_size),
        overlap=float(overlap),
        mode="gaussian" if overlap > 0 else "constant",
        padding_mode="replicate",
        progress=False,
    )
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.float16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )

    def network(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            return _electrode_probability(model(x))

    k = int(preprocessing.context)
    out = np.empty((n_slices, rows, cols), dtype=np.float32)
    starts = range(0, n_slices, max(1, int(chunk_slices)))
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="segment", unit="chunk", leave=False)
    with torch.inference_mode():
        for start in starts:
            stop = min(n_slices, start + max(1, int(chunk_slices)))
            lo, hi = max(0, start - k), min(n_slices, stop + k)
            # the chunk plus k context slices each side, resampled and windowed
            hu = torch.from_numpy(np.ascontiguousarray(can.array[lo:hi], dtype=np.float32))
            small = _resize_slices(hu[:, None], net_size)[:, 0]
            small = torch.from_numpy(preprocessing.normalize(small.numpy()))
            stacked = stack_context(small, k, start - lo, stop - lo)  # (n, C, H, W)
            # SliceInferer wants (1, C, D, H, W) and slides over D
            x = stacked.permute(1, 0, 2, 3).unsqueeze(0).to(device)
            prob = inferer(x, network)  # (1, 1, n, H, W)
            prob = prob[0, 0].float().unsqueeze(1)  # (n, 1, H, W)
            prob = _resize_slices(prob, (rows, cols)) if (rows, cols) != net_size else prob
            out[start:stop] = prob[:, 0].clamp_(0.0, 1.0).cpu().numpy()
    return out


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


# --- post-processing ----------------------------------------------------------------------------
def postprocess(
    mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    *,
    min_component_mm3: float = 0.2,
    keep_distance_mm: float = 3.0,
    max_tube_radius_mm: float = 1.5,
) -> np.ndarray:
    """Keep the electrode array: its main component and the pieces near it.

    Components smaller than ``min_component_mm3`` are dropped. The rest are grouped into chains whose
    gaps are at most ``keep_distance_mm`` (an array broken into pieces by partial-volume effects,
    or separate contacts blooming into blobs, stays whole), and the chain with the most tube-like
    length is kept: length ~ volume / inner radius^2 over its components no deeper than
    ``max_tube_radius_mm`` inside (bone and streak blobs are thicker and shorter). One long lead
    does not outweigh a spiral of separate contacts when the stretch joining them is missing.

    Args:
        mask: boolean array [k, j, i].
        spacing_mm: voxel size in ITK order (i, j, k), mm.

    Returns:
        The cleaned boolean mask, same shape.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    sampling = tuple(float(s) for s in spacing_mm[::-1])  # numpy axis order
    # work inside the mask's bounding box (plus the joining distance): memory stays ~ the array's size
    idx = np.nonzero(mask.any(axis=(1, 2))), np.nonzero(mask.any(axis=(0, 2))), np.nonzero(mask.any(axis=(0, 1)))
    box = tuple(slice(max(0, int(i[0].min()) - m), int(i[0].max()) + m + 1)
                for i, m in zip(idx, (int(math.ceil(keep_distance_mm / s)) + 1 for s in sampling)))
    out = np.zeros_like(mask)
    out[box] = _postprocess_crop(mask[box], sampling, min_component_mm3=min_component_mm3,
                                 keep_distance_mm=keep_distance_mm, max_tube_radius_mm=max_tube_radius_mm)
    return out


def _postprocess_crop(mask: np.ndarray, sampling: tuple[float, ...], *, min_component_mm3: float,
                      keep_distance_mm: float, max_tube_radius_mm: float) -> np.ndarray:
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return mask
    voxel_mm3 = float(np.prod(sampling))
    sizes = np.bincount(labels.ravel())[1:] * voxel_mm3
    candidates = [c for c in range(1, n + 1) if sizes[c - 1] >= min_component_mm3]
    if not candidates:
        return np.zeros_like(mask)
    boxes = ndimage.find_objects(labels)
    thickness = {}
    for c in candidates:
        sl = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in boxes[c - 1])
        comp = np.pad(labels[sl] == c, 1)
        thickness[c] = float(ndimage.distance_transform_edt(comp, sampling=sampling).max())
    tubes = [c for c in candidates if thickness[c] <= max_tube_radius_mm] or candidates
    # volume / radius^2 ~ a tube's length
    length = {c: sizes[c - 1] / max(thickness[c], 1e-3) ** 2 for c in tubes}
    # pieces within keep_distance_mm of each other touch once each grows by half that distance, so
    # each component of the grown mask collects one chain of nearby pieces. Growing is done on a
    # grid of ~0.5 mm blocks (max-pooled): distances stay right to a block while the distance
    # transform's memory shrinks by the block volume.
    kept_mask = np.isin(labels, candidates)
    block = tuple(max(1, int(0.5 / s)) for s in sampling)
    coarse = _block_any(kept_mask, block)
    csampling = tuple(s * b for s, b in zip(sampling, block))
    grown = ndimage.distance_transform_edt(~coarse, sampling=csampling) <= keep_distance_mm / 2.0
    grown_labels, _ = ndimage.label(grown, structure=np.ones((3, 3, 3), bool))
    # the array is the chain of pieces with the most thin length in it: one long tube, or (separate
    # contacts blooming into blobs, a lead whose last stretch is faint) many short ones together
    group_length: dict[int, float] = {}
    for c in tubes:
        sl = boxes[c - 1]
        first = np.argwhere(labels[sl] == c)[0] + np.array([x.start for x in sl])
        g = int(grown_labels[tuple(first // np.array(block))])
        group_length[g] = group_length.get(g, 0.0) + length[c]
    group_coarse = grown_labels == max(group_length, key=group_length.get)
    fine = np.repeat(np.repeat(np.repeat(group_coarse, block[0], 0), block[1], 1), block[2], 2)
    return kept_mask & fine[: mask.shape[0], : mask.shape[1], : mask.shape[2]]


def _block_any(mask: np.ndarray, block: tuple[int, ...]) -> np.ndarray:
    """True where any voxel of a ``block``-sized tile is set (the array padded up to whole tiles)."""
    pad = [(0, (-n) % b) for n, b in zip(mask.shape, block)]
    m = np.pad(mask, pad)
    shape = [m.shape[0] // block[0], block[0], m.shape[1] // block[1], block[1], m.shape[2] // block[2], block[2]]
    return m.reshape(shape).any(axis=(1, 3, 5))


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
        ``inference.roi_size``, if any, as ``model.cochseg3d_roi_size``) so that
        ``segment(volume, model)`` needs nothing else.
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
    return model.to(device).eval(), pre, info


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
    """Segment the electrode array of one CT volume; see :func:`segment` for the arguments.

    Args:
        probabilities: also return the probability map on the source grid (linear resampling for
            oblique series).
    """
    pre = preprocessing or getattr(model, "cochseg3d_preprocessing", None)
    if pre is None:
        raise ValueError("no preprocessing given and the model carries none; load it with load_model()")
    roi_size = roi_size or getattr(model, "cochseg3d_roi_size", None)
    can = volume if _is_canonical(volume) and "source_grid" in volume.meta else canonical(volume)
    from cochseg3d.qc import ALTERNATE_P, image_problem, segmentation_measures

    # a flat image or one without metal gets an empty label: the network would paint bone there
    problem = image_problem(can)
    if problem:
        log.warning("%s: %s; the label is left empty", volume.meta.get("source") or "image", problem)
        prob = np.zeros(can.array.shape, np.float32)
    else:
        prob = predict_canonical(model, can, pre, batch_size=batch_size, overlap=overlap, device=device,
                                 progress=progress, roi_size=roi_size)
    mask = raw_mask = prob >= float(threshold)
    raw = int(mask.sum())
    if postprocessing:
        mask = postprocess(mask, can.spacing_mm, min_component_mm3=min_component_mm3,
                           keep_distance_mm=keep_distance_mm)
    qc = {"image_problem": problem, **segmentation_measures(
        prob, raw_mask, mask, can.spacing_mm, keep_distance_mm=keep_distance_mm, min_component_mm3=min_component_mm3)}
    can_label = can.with_array(mask.astype(np.uint8))
    source = Grid.from_dict(can.meta["source_grid"])
    label = from_canonical(can_label, source, is_label=True)
    label.array = label.array.astype(np.uint8, copy=False)
    label.meta = {k: v for k, v in volume.meta.items() if k != "source_grid"}
    alternates = {}
    for p_alt in ALTERNATE_P if postprocessing and mask.any() else ():
        alt = postprocess(prob >= p_alt, can.spacing_mm, min_component_mm3=min_component_mm3,
                          keep_distance_mm=keep_distance_mm)
        alternates[p_alt] = from_canonical(can.with_array(alt.astype(np.uint8)), source, is_label=True)
    prob_vol = None
    if probabilities:
        prob_vol = from_canonical(can.with_array(prob), source, is_label=False)
        prob_vol.array = prob_vol.array.astype(np.float32, copy=False)
        prob_vol.meta = dict(label.meta)
    voxel_mm3 = float(np.prod(volume.spacing_mm))
    info = {
        "threshold": float(threshold),
        "preprocessing": pre.to_dict(),
        "voxels_raw_canonical": raw,
        "voxels": int(label.array.sum()),
        "volume_mm3": round(int(label.array.sum()) * voxel_mm3, 3),
        "qc": qc,
    }
    return SegmentationResult(label=label, probability=prob_vol, canonical_label=can_label, info=info,
                              alternates=alternates)


def segment(
    volume: Volume,
    model: torch.nn.Module,
    *,
    preprocessing: Preprocessing | None = None,
    threshold: float = 0.5,
    batch_size: int = 16,
    overlap: float = 0.25,
    device: str = "cpu",
    postprocessing: bool = True,
    progress: bool = False,
) -> Volume:
    """Electrode label of ``volume`` on exactly its own grid (size, spacing, origin, direction).

    Args:
        volume: CT in HU on its source grid (any orientation, oblique included).
        model: the network (e.g. from :func:`load_model`, which attaches its preprocessing).
        preprocessing: the model's input preparation; taken from the model when omitted.
        threshold: probability at or above which a voxel is electrode.
        batch_size: sliding-window patches per forward pass.
        overlap: sliding-window overlap fraction.
        device: "cpu" or "cuda".
        postprocessing: drop small components and those far from the array (:func:`postprocess`).
        progress: progress bar.

    Returns:
        uint8 Volume (0 background, 1 electrode) on the source grid, ready for NIfTI.
    """
    return run_segmentation(
        volume, model, preprocessing=preprocessing, threshold=threshold, batch_size=batch_size,
        overlap=overlap, device=device, postprocessing=postprocessing, progress=progress,
    ).label


# --- outputs ------------------------------------------------------------------------------------
def electrode_slab(mask: np.ndarray, *, slice_spacing_mm: float, pad_mm: float = 1.0) -> tuple[int, int]:
    """Coronal slices ``[k0, k1)`` spanning a canonical mask plus ``pad_mm`` (the middle one if empty)."""
    ks = np.flatnonzero(np.asarray(mask).any(axis=(1, 2)))
    if not ks.size:
        k0 = mask.shape[0] // 2
        return k0, k0 + 1
    pad = int(math.ceil(pad_mm / slice_spacing_mm))
    return max(0, int(ks.min()) - pad), min(mask.shape[0], int(ks.max()) + pad + 1)


def preview_png(
    image: Volume,
    label: Volume,
    path: str | Path,
    *,
    contacts_lps_mm: np.ndarray | None = None,
    title: str = "",
    window_hu: tuple[float, float] = (-500.0, 3000.0),
) -> Path:
    """Coronal slab MIP through the electrode with the label outline (and contacts), as PNG.

    The slab spans the label's anterior-posterior extent plus 1 mm; the left panel shows the whole
    coronal field, the right one zooms onto the array. Axes are in mm (patient right on the left of
    the image, superior up, as a radiologist reads a coronal view).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    can = canonical(image)
    lab = canonical(label, is_label=True).array > 0
    sx, sy, sz = can.spacing_mm  # cols (R->L), rows (S->I), slices (A->P)
    k0, k1 = electrode_slab(lab, slice_spacing_mm=sz)
    mip = can.array[k0:k1].max(axis=0).astype(np.float32)
    lab_mip = lab[k0:k1].any(axis=0)
    extent = (-0.5 * sx, (mip.shape[1] - 0.5) * sx, (mip.shape[0] - 0.5) * sy, -0.5 * sy)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), dpi=100)
    for n, ax in enumerate(axes):
        ax.imshow(mip, cmap="gray", vmin=window_hu[0], vmax=window_hu[1], extent=extent, interpolation="nearest")
        if lab_mip.any():
            ax.contour(np.arange(mip.shape[1]) * sx, np.arange(mip.shape[0]) * sy, lab_mip.astype(float),
                       levels=[0.5], colors="red", linewidths=0.8)
        if contacts_lps_mm is not None and len(contacts_lps_mm):
            ijk = can.lps_to_index(np.asarray(contacts_lps_mm))
            ax.plot(ijk[:, 0] * sx, ijk[:, 1] * sy, "o", ms=3 if n else 1.5, mfc="none", mec="yellow", mew=0.8)
            ax.plot(ijk[0, 0] * sx, ijk[0, 1] * sy, "o", ms=5 if n else 2.5, mfc="none", mec="cyan", mew=1.0)
        ax.set_xlabel("mm (patient right -> left)")
        ax.set_ylabel("mm (superior -> inferior)")
    if lab_mip.any():
        rows, cols = np.nonzero(lab_mip)
        m = 3.0
        axes[1].set_xlim(cols.min() * sx - m, cols.max() * sx + m)
        axes[1].set_ylim(rows.max() * sy + m, rows.min() * sy - m)
        axes[1].set_title("electrode (cyan: most apical contact)")
    axes[0].set_title(title or f"coronal MIP, slices {k0}-{k1 - 1}")
    fig.tight_layout()
    out = Path(path)
    from cochseg3d.volume import atomic_write

    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return out


def write_dicom_seg(label: Volume, source_folder: str | Path, series_uid: str, path: str | Path) -> Path:
    """DICOM SEG (binary, highdicom) of ``label`` referencing the source series' images.

    Each source image is matched to the label's slice at its ImagePositionPatient, so the SEG is
    only written when the label lies on the series' own grid (as :func:`segment` delivers it).

    Raises:
        ValueError: the series is not found in ``source_folder`` or its slices do not fall on the
            label's grid.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from cochseg3d import __version__
    from cochseg3d.dicom import discover

    logging.getLogger("highdicom").setLevel(max(logging.WARNING, logging.getLogger("highdicom").level))
    found = [s for s in discover(source_folder) if s.series_uid == series_uid]
    if not found:
        raise ValueError(f"{source_folder}: series {series_uid} not found; cannot reference it in a DICOM SEG")
    headers = [h for s in found for h in s.slices]
    datasets = [pydicom.dcmread(h.path) for h in headers]
    frames = np.zeros((len(datasets), *label.array.shape[1:]), dtype=np.uint8)
    for n, ds in enumerate(datasets):
        ijk = label.lps_to_index(np.asarray(ds.ImagePositionPatient, dtype=float))
        k = int(round(float(ijk[2])))
        if np.abs(ijk - [0, 0, k]).max() > 1e-2 or not 0 <= k < label.array.shape[0]:
            raise ValueError(f"{headers[n].path}: slice not on the label's grid; DICOM SEG needs the source grid")
        if (int(ds.Rows), int(ds.Columns)) != label.array.shape[1:]:
            raise ValueError(f"{headers[n].path}: {ds.Rows}x{ds.Columns} differs from the label's slice size")
        frames[n] = label.array[k] > 0
    algo = hd.AlgorithmIdentificationSequence(
        name="cochseg3d", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="electrode array",
        segmented_property_category=hd.sr.CodedConcept("260787004", "SCT", "Physical object"),
        segmented_property_type=hd.sr.CodedConcept("43252007", "SCT", "Cochlear prosthesis"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo,
    )
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=hd.UID(),
        series_number=9901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="cochseg3d",
        manufacturer_model_name="cochseg3d segment",
        software_versions=__version__,
        device_serial_number="none",
        series_description="cochseg3d electrode",
        omit_empty_frames=False,
    )
    from cochseg3d.volume import atomic_write

    return atomic_write(Path(path), lambda tmp: seg.save_as(tmp))


def _first_dicom_header(folder: Path) -> tuple[str, str] | None:
    """(PatientID, StudyInstanceUID) of the first readable DICOM file under ``folder``."""
    import pydicom

    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and not is_image_path(p):
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["PatientID", "StudyInstanceUID"])
            except Exception:  # not DICOM: keep looking
                continue
            return str(ds.get("PatientID", "")), str(ds.get("StudyInstanceUID", ""))
    return None


def _is_dicom_file(path: Path) -> bool:
    """True for a DICOM Part 10 file (or a readable preamble-less one); README.txt etc. are not."""
    import pydicom

    try:
        with open(path, "rb") as f:
            head = f.read(132)
        if head[128:132] == b"DICM":
            return True
        pydicom.dcmread(path, stop_before_pixels=True)
        return True
    except Exception:  # anything unreadable as DICOM is not a patient's image
        return False


def is_image_path(path: Path) -> bool:
    from cochseg3d.volume import is_image_file

    return is_image_file(path)


def find_inputs(path: str | Path) -> list[Path]:
    """The patients under ``path``: one image file, one DICOM folder, or a folder of many.

    A folder is one patient when it holds DICOM files itself, or when all its sub-folders belong to
    one patient and study (series folders). Otherwise every image file and every sub-folder in it
    is a patient. A phantom cohort folder (``cohort.json``) lists its patients' DICOM folders.
    """
    import json

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    cohort = path / "cohort.json"
    if cohort.is_file():
        entries = json.loads(cohort.read_text())
        return [path / e["dicom"] for e in entries]
    children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    files = [p for p in children if p.is_file()]
    if any(_is_dicom_file(p) for p in files if not is_image_path(p)):
        return [path]  # DICOM files right here: one patient
    images = [p for p in files if is_image_path(p)]
    folders = [p for p in children if p.is_dir()]
    if folders and not images:
        ids = {h for h in (_first_dicom_header(f) for f in folders) if h is not None}
        if len({pid for pid, _ in ids}) <= 1 and len({st for _, st in ids}) <= 1:
            return [path]  # series sub-folders of one patient
    return images + folders


def segment_path(
    source: str | Path,
    out_dir: str | Path,
    model: torch.nn.Module,
    *,
    preprocessing: Preprocessing | None = None,
    device: str = "cpu",
    threshold: float = 0.5,
    batch_size: int = 16,
    overlap: float = 0.25,
    probabilities: bool = False,
    seg_dicom: bool = False,
    png: bool = True,
    electrode: str | None = None,
    case_id: str | None = None,
    model_info: dict[str, Any] | None = None,
    qc_thresholds: Any | None = None,
    calibration: str | Path | None = None,
) -> dict[str, Any]:
    """Segment one patient (DICOM folder or image file) and write its outputs into ``out_dir``.

    Writes ``<case>.nii.gz`` (label, source grid), ``<case>.contacts.json``, ``<case>.png`` and on
    request ``<case>.prob.nii.gz`` and ``<case>.seg.dcm``. ``electrode`` is a vendor ("MED-EL",
    "Cochlear", "AB") or a catalogue model name giving the contact count and pitch.
    ``calibration``: the contact finder's calibration file (default: the one shipped).

    Returns:
        A summary record (case id, series, voxel count, volume mm^3, contacts found, QC verdict, files).

    Raises:
        cochseg3d.contacts.CalibrationError: a bad calibration file (the message names it).
    """
    import json
    import time

    from cochseg3d.contacts import Calibration, electrode_spec, find_contacts
    from cochseg3d.dicom import load_input
    from cochseg3d.utils import sanitize_case_id
    from cochseg3d.volume import atomic_write, write_image

    t0 = time.perf_counter()
    cal = Calibration.load(calibration)  # a bad file fails before the network runs
    source = Path(source)
    volume = load_input(source)
    case = sanitize_case_id(case_id or volume.meta.get("case_id") or source.name)
    out_dir = Path(out_dir)
    res = run_segmentation(volume, model, preprocessing=preprocessing, device=device, threshold=threshold,
                           batch_size=batch_size, overlap=overlap, probabilities=probabilities)
    files = {"label": write_image(res.label, out_dir / f"{case}.nii.gz")}
    if res.probability is not None:
        files["probability"] = write_image(res.probability, out_dir / f"{case}.prob.nii.gz")
    spec = electrode_spec(electrode) if electrode else {}
    contacts = find_contacts(res.label, volume, **spec, calibration=cal)
    series = {k: volume.meta.get(k) for k in ("series_uid", "series_number", "series_description", "modality")}
    record = contacts.to_json(
        case_id=case,
        source=str(source),
        series=series,
        coordinate_systems={"lps": "DICOM/ITK patient LPS, mm", "ras": "NIfTI/3D Slicer RAS, mm"},
        electrode_hint=electrode,
        label_volume_mm3=res.info["volume_mm3"],
        model=(model_info or {}).get("path"),
    )
    from cochseg3d.qc import assess

    # the verdict on the result (qc_thresholds: a cochseg3d.qc.QCThresholds; default the shipped file)
    moved = [find_contacts(alt, volume, **spec, calibration=cal) for alt in res.alternates.values()]
    record["qc"] = assess(res.label, contacts, info=res.info, electrode=electrode, thresholds=qc_thresholds,
                          alternate_contacts=moved).to_json()
    files["contacts"] = atomic_write(out_dir / f"{case}.contacts.json",
                                     lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
    if png:
        title = f"{case}: {series.get('series_description') or source.name} ({record['n_contacts']} contacts)"
        files["png"] = preview_png(volume, res.label, out_dir / f"{case}.png", contacts_lps_mm=contacts.lps_mm,
                                   title=title)
    if seg_dicom:
        if not series.get("series_uid"):
            log.warning("%s: not a DICOM series; no DICOM SEG written", source)
        else:
            files["seg"] = write_dicom_seg(res.label, volume.meta.get("source") or source, series["series_uid"],
                                           out_dir / f"{case}.seg.dcm")
    log.info("%s: %d electrode voxels (%.1f mm^3), %d contacts (%s) in %.1f s", case, res.info["voxels"],
             res.info["volume_mm3"], record["n_contacts"], contacts.method, time.perf_counter() - t0)
    return {"case_id": case, "source": str(source), "series_uid": series.get("series_uid"),
            "series_description": series.get("series_description"), "voxels": res.info["voxels"],
            "volume_mm3": res.info["volume_mm3"], "n_contacts": record["n_contacts"],
            "contacts_method": contacts.method, "seconds": round(time.perf_counter() - t0, 2),
            "qc": record["qc"], "files": {k: str(v) for k, v in files.items()}}
