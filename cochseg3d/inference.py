"""Whole-volume segmentation: slice-wise sliding-window inference over the coronal stack.

The pipeline is ``canonical`` -> :func:`predict_canonical` (in-plane resampling to the model's pixel
size, HU window, 2.5D channel stacking, MONAI ``SliceInferer``) -> threshold -> :func:`postprocess`
(small and far-away components dropped) -> ``from_canonical`` onto exactly the source grid.
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
from scipy import ndimage

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
def _array_limits() -> tuple[float, float]:
    """(longest radius, shortest path) a painted electrode array can show, from the catalogue.

    Radius: the thickest carrier's half diameter plus the CBCT blur that paints past the metal (a
    PSF FWHM of up to 0.8 mm). Path: the shortest active length (first to last contact) less the
    thickest diameter, which the skeleton loses at the two ends.
    """
    from cochseg3d.electrodes import CATALOGUE

    widest = max(max(m.diameter_base_mm, m.diameter_tip_mm) for m in CATALOGUE)
    return widest / 2.0 + CBCT_BLUR_MM, min(m.active_length_mm for m in CATALOGUE) - widest


#: how far past the metal CBCT blur paints (PSF FWHM, mm): widens a painted array's radius
CBCT_BLUR_MM = 0.8
#: dropped chains smaller than this (mm^3) are noise, not metal worth reporting
OTHER_METAL_MIN_MM3 = 1.0


def postprocess(
    mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    *,
    min_component_mm3: float = 0.2,
    keep_distance_mm: float = 3.0,
    max_tube_radius_mm: float | None = None,
    report: dict[str, Any] | None = None,
) -> np.ndarray:
    """Keep the electrode array: its main component and the pieces near it.

    Components smaller than ``min_component_mm3`` are dropped. The rest are grouped into chains whose
    gaps are at most ``keep_distance_mm`` (an array broken into pieces by partial-volume effects,
    or separate contacts blooming into blobs, stays whole). The array is the chain holding the
    longest thin path: a piece no deeper than a catalogue array can be painted
    (``max_tube_radius_mm``, default from :func:`_array_limits`) whose skeleton's longest path is at
    least the shortest catalogue array's. Chains without such a piece (a bone-anchored screw,
    dental fillings: short or thick) are dropped. When no chain qualifies, the chain with the most
    tube-like length (volume / inner radius^2 of its thin pieces) is kept instead: a spiral of
    separate contacts has no long piece.

    Args:
        mask: boolean array [k, j, i].
        spacing_mm: voxel size in ITK order (i, j, k), mm.
        report: filled with ``array_rule`` ("catalogue": the kept, most tube-like chain meets the
            catalogue array's limits; "catalogue_disagrees": another chain does and this one does not;
            "tube_length": none does), ``array_path_mm`` (the kept chain's longest thin path),
            ``catalogue_path_mm`` (that of the chain the catalogue's limits would pick) and
            ``other_metal_mm3`` / ``n_other_metal`` (dropped chains of at least
            ``OTHER_METAL_MIN_MM3``).

    Returns:
        The cleaned boolean mask, same shape.
    """
    mask = np.asarray(mask, dtype=bool)
    report = {} if report is None else report
    report.update(array_rule=None, array_path_mm=0.0, other_metal_mm3=0.0, n_other_metal=0)
    if not mask.any():
        return mask.copy()
    radius, path = _array_limits()
    sampling = tuple(float(s) for s in spacing_mm[::-1])  # numpy axis order
    # work inside the mask's bounding box (plus the joining distance): memory stays ~ the array's size
    idx = np.nonzero(mask.any(axis=(1, 2))), np.nonzero(mask.any(axis=(0, 2))), np.nonzero(mask.any(axis=(0, 1)))
    box = tuple(slice(max(0, int(i[0].min()) - m), int(i[0].max()) + m + 1)
                for i, m in zip(idx, (int(math.ceil(keep_distance_mm / s)) + 1 for s in sampling)))
    out = np.zeros_like(mask)
    out[box] = _postprocess_crop(mask[box], sampling, min_component_mm3=min_component_mm3,
                                 keep_distance_mm=keep_distance_mm,
                                 max_tube_radius_mm=radius if max_tube_radius_mm is None else max_tube_radius_mm,
                                 min_path_mm=path, report=report)
    return out


def _longest_path_mm(piece: np.ndarray, sampling: tuple[float, ...]) -> float:
    """Length of the longest path along the 3D skeleton of one connected piece (mm)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components, dijkstra
    from scipy.spatial import cKDTree
    from skimage.morphology import skeletonize

    pts = np.argwhere(skeletonize(np.pad(piece, 1))) * np.asarray(sampling)
    if len(pts) < 2:  # thinning can erase an even-width bar: its principal extent instead
        vox = np.argwhere(piece) * np.asarray(sampling)
        axis = np.linalg.svd(vox - vox.mean(0), full_matrices=False)[2][0]
        return float(np.ptp(vox @ axis)) if len(vox) > 1 else 0.0
    pairs = cKDTree(pts).query_pairs(float(np.linalg.norm(sampling)) * 1.01, output_type="ndarray")
    if not len(pairs):
        return 0.0
    d = np.linalg.norm(pts[pairs[:, 0]] - pts[pairs[:, 1]], axis=1)
    graph = coo_matrix((d, (pairs[:, 0], pairs[:, 1])), shape=(len(pts),) * 2).tocsr()
    _, part = connected_components(graph, directed=False)
    best = 0.0
    for k in np.unique(part):  # two sweeps: exact on a tree, close on a skeleton's few loops
        nodes = np.nonzero(part == k)[0]
        far = nodes[np.argmax(dijkstra(graph, directed=False, indices=nodes[0])[nodes])]
        best = max(best, float(dijkstra(graph, directed=False, indices=far)[nodes].max()))
    return best


def _postprocess_crop(mask: np.ndarray, sampling: tuple[float, ...], *, min_component_mm3: float,
                      keep_distance_mm: float, max_tube_radius_mm: float, min_path_mm: float,
                      report: dict[str, Any]) -> np.ndarray:
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return mask
    voxel_mm3 = float(np.prod(sampling))
    sizes = np.bincount(labels.ravel())[1:] * voxel_mm3
    candidates = [c for c in range(1, n + 1) if sizes[c - 1] >= min_component_mm3]
    if not candidates:
        return np.zeros_like(mask)
    boxes = ndimage.find_objects(labels)
    thickness, path = {}, {}
    for c in candidates:
        sl = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in boxes[c - 1])
        comp = np.pad(labels[sl] == c, 1)
        thickness[c] = float(ndimage.distance_transform_edt(comp, sampling=sampling).max())
        # a piece too small to hold the shortest array's path at one voxel's width is not measured
        thin = thickness[c] <= max_tube_radius_mm and sizes[c - 1] >= min_path_mm * min(sampling) ** 2
        path[c] = _longest_path_mm(labels[boxes[c - 1]] == c, sampling) if thin else 0.0
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
    chain: dict[int, list[int]] = {}
    for c in candidates:
        sl = boxes[c - 1]
        first = np.argwhere(labels[sl] == c)[0] + np.array([x.start for x in sl])
        chain.setdefault(int(grown_labels[tuple(first // np.array(block))]), []).append(c)
    longest = {g: max(path[c] for c in cs) for g, cs in chain.items()}
    arrays = [g for g in chain if longest[g] >= min_path_mm]
    # the most thin length in it: one long tube, or separate contacts blooming into blobs, a lead
    # whose last stretch is faint
    group_length = {g: sum(length.get(c, 0.0) for c in cs) for g, cs in chain.items()}
    kept = max(group_length, key=group_length.get)
    # the catalogue's pick (a chain holding an array-long thin piece) is reported, not kept: on held-out
    # phantoms it rescued arrays beside dental fillings but lost a clean array painted as separate
    # contacts (BENCHMARKS.md, hard conditions), so where the two disagree QC asks for review
    catalogue = max(arrays, key=longest.get) if arrays else None
    dropped = [sum(sizes[c - 1] for c in cs) for g, cs in chain.items() if g != kept]
    dropped = [v for v in dropped if v >= OTHER_METAL_MIN_MM3]
    rule = "tube_length" if catalogue is None else "catalogue" if catalogue == kept else "catalogue_disagrees"
    report.update(array_rule=rule, array_path_mm=round(longest[kept], 2),
                  catalogue_path_mm=round(longest[catalogue], 2) if catalogue is not None else 0.0,
                  other_metal_mm3=round(float(sum(dropped)), 2), n_other_metal=len(dropped))
    fine = np.repeat(np.repeat(np.repeat(grown_labels == kept, block[0], 0), block[1], 1), block[2], 2)
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
    from cochseg3d.qc import ALTERNATE_P, segmentation_measures

    # grey values to HU once, here: the no-metal check reads what the network will see
    hu = pre.hu(can)
    problem = empty_label_reason(hu)
    if problem:
        log.warning("%s: %s; the label is left empty", volume.meta.get("source") or "image", problem)
        prob = np.zeros(can.array.shape, np.float32)
    else:
        prob = predict_canonical(model, hu, dataclasses.replace(pre, grey_levels="as_stored"),
                                 batch_size=batch_size, overlap=overlap, device=device, progress=progress,
                                 roi_size=roi_size)
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
        "other_metal_mm3": chosen.get("other_metal_mm3", 0.0),
        "qc": qc,
    }
    return SegmentationResult(label=label, probability=prob_vol, canonical_label=can_label, info=info,
                              alternates=alternates)



#: moved to their own modules; still importable from here for existing scripts
_MOVED = {"segment_path": "cochseg3d.pipeline", "find_inputs": "cochseg3d.inputs", "is_image_path": "cochseg3d.inputs",
          "preview_png": "cochseg3d.export", "write_dicom_seg": "cochseg3d.export",
          "electrode_slab": "cochseg3d.export"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
