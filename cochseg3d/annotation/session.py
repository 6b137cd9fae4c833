"""Review of a model prediction and the annotation session, the state behind the napari widget."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from cochseg3d.annotation.masks import export_pngs, read_slice_masks
from cochseg3d.annotation.prefill import Box, SliceRange, as_canonical, prefill_region, roi_mask
from cochseg3d.annotation.store import Annotation, case_id_for, load_annotation, load_image, record_paths, save_annotation
from cochseg3d.metal import auto_threshold_hu
from cochseg3d.utils import sanitize_case_id
from cochseg3d.volume import Grid, Volume

# --- review of a model prediction --------------------------------------------------------------
def prediction_slices(prediction: np.ndarray, *, threshold: float = 0.5, min_pixels: int = 1) -> list[int]:
    """Canonical coronal indices where a prediction (probability or 0/1) shows electrode."""
    counts = (np.asarray(prediction) >= threshold).reshape(prediction.shape[0], -1).sum(axis=1)
    return [int(k) for k in np.flatnonzero(counts >= max(1, min_pixels))]


def accept_prediction(
    label: np.ndarray, prediction: np.ndarray, *, slices: Iterable[int], threshold: float = 0.5
) -> list[int]:
    """Copy the prediction into ``label`` (in place) on ``slices``; returns the slices written."""
    if label.shape != prediction.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from the label's {label.shape}")
    done = []
    for k in sorted({int(s) for s in slices}):
        label[k] = (np.asarray(prediction[k]) >= threshold).astype(label.dtype)
        done.append(k)
    return done


# --- session: the state behind the napari widget -----------------------------------------------
class Autosaver:
    """Calls ``save()`` when there are unsaved edits and ``interval_s`` has passed since the last save."""

    def __init__(self, save: Callable[[], Any], *, interval_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._save, self.interval_s, self._clock = save, float(interval_s), clock
        self.dirty = False
        self.last_save = clock()

    def mark_dirty(self) -> None:
        self.dirty = True

    def mark_saved(self) -> None:
        self.dirty, self.last_save = False, self._clock()

    def maybe_save(self) -> bool:
        """Save if due; returns whether it saved."""
        if not self.dirty or self._clock() - self.last_save < self.interval_s:
            return False
        self._save()
        self.mark_saved()
        return True


class AnnotationSession:
    """One case being annotated: the canonical image, its label stack and the annotated slices.

    ``label`` is the array a napari Labels layer paints into (``[k, row, col]``, uint8).
    """

    def __init__(self, image: Volume, *, store: str | os.PathLike | None = None,
                 case_id: str | None = None, image_path: str | os.PathLike | None = None) -> None:
        self.image = as_canonical(image)
        self.image_path = Path(image_path) if image_path else (
            Path(image.meta.get("source") or image.meta.get("source_path")) if
            (image.meta.get("source") or image.meta.get("source_path")) else None)
        self.case_id = sanitize_case_id(case_id) if case_id else case_id_for(image, self.image_path)
        self.store = Path(store) if store else None
        self.label = np.zeros(self.image.array.shape, np.uint8)
        self.annotated: set[int] = set()
        self.threshold_hu: float | None = None
        self._auto: float | None = None

    @classmethod
    def open(cls, path: str | os.PathLike, *, store: str | os.PathLike | None = None) -> "AnnotationSession":
        """Open a DICOM folder or image file; reload its annotation from ``store`` if one exists."""
        image = load_image(path)
        s = cls(image, store=store, image_path=path)
        if s.store is not None and s.json_path.exists():
            s.load()
        return s

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(x) for x in self.label.shape)  # type: ignore[return-value]

    @property
    def json_path(self) -> Path:
        if self.store is None:
            raise ValueError("no annotation store set")
        return record_paths(self.store, self.case_id)[1]

    def auto_threshold(self) -> float:
        """The automatic metal threshold of the image (HU), computed once."""
        if self._auto is None:
            self._auto = float(auto_threshold_hu(self.image))
        return self._auto

    def prefill_region(self, *, threshold_hu: float | str | None = "auto", slices: int | SliceRange | None = None,
                       roi: Box | np.ndarray | None = None, min_size_voxels: int = 4
                       ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """Pre-fill block for a scope (not yet applied); records the threshold used."""
        thr = self.auto_threshold() if threshold_hu in (None, "auto") else float(threshold_hu)
        self.threshold_hu = thr
        return prefill_region(self.image.array, threshold_hu=thr, slices=slices, roi=roi,
                              min_size_voxels=min_size_voxels)

    def prefill(self, **kwargs: Any) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """Apply :meth:`prefill_region` to ``label``, replacing the scope (inside the ROI, if one is given)."""
        region, block = self.prefill_region(**kwargs)
        within = roi_mask(kwargs.get("roi"), self.shape[1:])
        if within is None:
            self.label[region] = block
        else:
            view = self.label[region]
            view[:, within] = block[:, within] if within.ndim == 2 else block[within]
        return region, block

    def mark(self, k: int, annotated: bool = True) -> None:
        if not 0 <= int(k) < self.shape[0]:
            raise ValueError(f"slice {k} lies outside the volume's 0..{self.shape[0] - 1} coronal slices")
        (self.annotated.add if annotated else self.annotated.discard)(int(k))

    def save(self, *, autosave: bool = False) -> Path:
        if self.store is None:
            raise ValueError("no annotation store set; choose a folder first")
        return save_annotation(self.label, image=self.image, store=self.store,
                               annotated_slices=self.annotated, case_id=self.case_id,
                               image_path=self.image_path, threshold_hu=self.threshold_hu, autosave=autosave)

    def load(self, json_path: str | os.PathLike | None = None) -> Annotation:
        """Replace ``label`` (in place) and the annotated slices with a stored annotation."""
        ann = load_annotation(json_path or self.json_path)
        src = Grid.from_dict(self.image.meta["source_grid"])
        if not ann.label.grid.allclose(src):
            raise ValueError(f"{ann.json_path}: its label grid differs from this image's grid")
        lab = ann.canonical_label()
        if lab.shape != self.shape:
            raise ValueError(f"{ann.json_path}: label shape {lab.shape} differs from the image's {self.shape}")
        self.label[...] = lab
        self.annotated = set(ann.annotated_slices)
        self.threshold_hu = ann.threshold_hu
        return ann

    def import_masks(self, paths: Iterable[str | os.PathLike], *, any_case: bool = False) -> list[int]:
        """Write PNG / labelme masks into ``label`` and mark their slices; returns the slices."""
        masks = read_slice_masks(paths, shape=self.shape, case_id=None if any_case else self.case_id)
        for k, m in masks.items():
            self.label[k] = m.astype(np.uint8)
            self.annotated.add(k)
        return sorted(masks)

    def export_pngs(self, out_dir: str | os.PathLike, *, image_dir: str | os.PathLike | None = None) -> list[Path]:
        if not self.annotated:
            raise ValueError("no slice is marked annotated; mark slices before exporting")
        return export_pngs(self.label, slices=self.annotated, out_dir=out_dir, case_id=self.case_id,
                           image=self.image.array if image_dir else None, image_dir=image_dir)
