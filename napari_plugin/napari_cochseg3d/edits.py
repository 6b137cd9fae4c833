"""What the dock does to layers, without Qt: undoable label writes, the ROI box, the threshold preview,
slice stepping and a prediction read onto the image's stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cochseg3d.metal import remove_small_components
from cochseg3d.volume import CANONICAL_DIRECTION, Volume
from napari_cochseg3d.layers import META_KEY, world_transform


def volume_of(layer) -> Volume:
    """The canonical Volume behind an image layer (from our reader, or rebuilt from its scale)."""
    meta = layer.metadata.get(META_KEY, {}) if isinstance(layer.metadata, dict) else {}
    if isinstance(meta.get("volume"), Volume):
        return meta["volume"]
    sk, sr, sc = (float(s) for s in layer.scale[-3:])
    tk, tr, tc = (float(t) for t in layer.translate[-3:])
    vol = Volume(np.asarray(layer.data), (sc, sr, sk), (tc, tk, -tr), CANONICAL_DIRECTION, {"case_id": layer.name})
    vol.meta["source_grid"] = vol.grid.to_dict()
    return vol


def clear_undo(layer) -> None:
    """Forget a Labels layer's undo steps (a reloaded annotation is not undone into the old one).

    napari (0.9) has only ``undo``/``redo``/``block_history`` in public (toggling ``editable`` also
    clears them, but as an undocumented side effect that leaves the layer in pan/zoom mode); this is
    the plugin's one private call.
    """
    layer._reset_history()


def apply_block(layer, region: tuple[slice, slice, slice], block: np.ndarray, *, add: bool = False,
                within: np.ndarray | None = None) -> int:
    """Write ``block`` into the Labels ``layer`` at ``region`` as one undoable step; returns the voxels changed.

    ``add`` keeps what is painted; ``within`` (an in-plane bool mask) limits the change to it.
    Only voxels set in ``block`` or in the layer can change, so the work follows the (sparse)
    electrode, not the volume.
    """
    old = layer.data[region]  # basic slicing: a view, no copy
    cand = np.flatnonzero(block)
    if not add:
        cand = np.union1d(cand, np.flatnonzero(old))
    if within is not None and cand.size:
        _, r, c = np.unravel_index(cand, block.shape)
        cand = cand[within[r, c]]
    if not cand.size:
        return 0
    old_v = old.reshape(-1)[cand] if old.flags.c_contiguous else np.asarray(old).ravel()[cand]
    new_v = np.where(block.reshape(-1)[cand] > 0, 1, old_v if add else 0).astype(old.dtype)
    keep = new_v != old_v
    cand, new_v = cand[keep], new_v[keep]
    if not cand.size:
        return 0
    starts = [r.start or 0 for r in region]
    indices = tuple(i + s0 for i, s0 in zip(np.unravel_index(cand, block.shape), starts))
    with layer.block_history():
        layer.data_setitem(indices, new_v)
    return int(cand.size)


def slices_block(layer_data: np.ndarray, planes: dict[int, np.ndarray]) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """``(region, block)``: the layer's slices from the first to the last of ``planes``, with ``planes`` put in."""
    ks = sorted(planes)
    region = (slice(ks[0], ks[-1] + 1), slice(None), slice(None))
    block = np.asarray(layer_data[region]).copy()
    for k, m in planes.items():
        block[k - ks[0]] = m
    return region, block


def rectangle_box(shapes, image_layer) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)`` of the pixels of ``image_layer`` whose centres lie inside the
    last shape of the Shapes layer ``shapes``."""
    verts = np.asarray(shapes.data[-1])
    data = np.array([image_layer.world_to_data(shapes.data_to_world(v)) for v in verts])
    r, c = data[:, -2], data[:, -1]
    lo = lambda x: int(np.ceil(x.min() - 1e-6))  # noqa: E731
    hi = lambda x: int(np.floor(x.max() + 1e-6)) + 1  # noqa: E731
    return lo(r), hi(r), lo(c), hi(c)


def preview_plane(image: Volume, k: int, threshold_hu: float, min_size_voxels: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The voxels of slice ``k`` a pre-fill at ``threshold_hu`` would paint, and the layer transform that
    puts that one-slice stack on slice ``k``."""
    plane = image.array[k:k + 1] >= threshold_hu
    mask = remove_small_components(plane, min_size_voxels=min_size_voxels).astype(np.uint8)
    wt = world_transform(image)
    wt["translate"] = (wt["translate"][0] + k * wt["scale"][0], *wt["translate"][1:])
    return mask, wt


def step_target(ks: list[int], k: int, direction: int) -> int:
    """The next (``direction`` > 0) or previous slice of ``ks`` from ``k``, wrapping round at the ends."""
    nxt = [x for x in ks if x > k] if direction > 0 else [x for x in ks if x < k]
    if nxt:
        return min(nxt) if direction > 0 else max(nxt)
    return ks[0] if direction > 0 else ks[-1]


def prediction_array(source: str | Path | np.ndarray, image: Volume) -> np.ndarray:
    """A prediction as float32 on the canonical stack of ``image``: a canonical array as is, or a file
    (resampled nearest/linear onto the image's source grid when its grid differs)."""
    if isinstance(source, np.ndarray):
        pred = np.asarray(source, dtype=np.float32)
    else:
        from cochseg3d.annotation import load_image
        from cochseg3d.volume import Grid, canonical, resample_to_grid

        vol = load_image(source)
        src = Grid.from_dict(image.meta["source_grid"])
        if not vol.grid.allclose(src):
            vol = resample_to_grid(vol, src, is_label=not np.issubdtype(vol.array.dtype, np.floating))
        pred = canonical(vol, is_label=True).array.astype(np.float32)
    if pred.shape != image.array.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from the image's {image.array.shape}")
    return pred
