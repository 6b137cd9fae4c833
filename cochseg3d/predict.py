"""Slice-wise network prediction: electrode probability for every voxel of a canonical CT.

Each coronal slice is resampled in-plane to the model's pixel size, windowed, stacked with its
neighbours as 2.5D channels and run through MONAI's ``SliceInferer`` (:func:`predict_canonical`);
:func:`predict_naive` is its one-slice-at-a-time reference. :mod:`.inference` thresholds,
post-processes and maps the result back to the source grid.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cochseg3d.preprocessing import Preprocessing
from cochseg3d.volume import CANONICAL_DIRECTION, Volume, canonical


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
