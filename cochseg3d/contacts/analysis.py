"""What every contact strategy reads: the label and CT around it, the centreline, the profile.

:func:`analyse` does the work once per search; the strategies take the :class:`LabelAnalysis` and
return a :class:`Placement` (contact positions along the centreline) or contact points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from cochseg3d.contacts.blobs import find_blobs
from cochseg3d.contacts.calibration import Calibration
from cochseg3d.contacts.centreline import arc_length, centreline, shift_outward
from cochseg3d.contacts.profile import extended, sample
from cochseg3d.volume import Volume


@dataclass
class LabelAnalysis:
    """The label's centreline and the CT's profile along it (LPS mm; arrays ``[k, j, i]``).

    Attributes:
        image / label: the CT and the label cropped to the label plus 1.5 mm.
        mask: the cropped label as bool.
        smoothed: the cropped CT, Gaussian-smoothed (sigma 0.2 mm, at least half a voxel), float32.
        curve: the array's centreline, apex -> base, every ``step_mm`` (moved outward by the
            model's radial offset where one model was named).
        curve_ext: ``curve`` run on past both ends (:func:`~cochseg3d.contacts.profile.extended`);
            ``n_ext`` of its samples lie before the apex.
        profile / profile_ext: smoothed CT along ``curve`` / ``curve_ext``.
        bloom_mm: the label's half-width near its tip (how far the label reaches past the metal).
        length_mm: the centreline's length.
        step_mm: sampling step along the centreline.
        cal: the calibration the search uses.
    """

    image: Volume
    label: Volume
    mask: np.ndarray
    smoothed: np.ndarray
    curve: np.ndarray
    curve_ext: np.ndarray
    n_ext: int
    profile: np.ndarray
    profile_ext: np.ndarray
    bloom_mm: float
    length_mm: float
    step_mm: float
    cal: Calibration
    _blobs: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def spacing_mm(self) -> np.ndarray:
        return np.asarray(self.image.spacing_mm)

    def blobs(self) -> tuple[np.ndarray, np.ndarray]:
        """The label's bright blobs (:func:`~cochseg3d.contacts.blobs.find_blobs`), found once."""
        if self._blobs is None:
            self._blobs = find_blobs(self.image, self.smoothed, self.mask, self.cal.blob_level)
        return self._blobs

    def points(self, pos: np.ndarray) -> np.ndarray:
        """LPS points (mm) at sample positions ``pos`` along ``curve`` (negative: before the apex)."""
        if not len(pos):
            return np.zeros((0, 3))
        s_idx = np.arange(len(self.curve_ext)) - self.n_ext
        return np.stack([np.interp(pos, s_idx, self.curve_ext[:, c]) for c in range(3)], axis=1)


@dataclass
class Placement:
    """Contacts placed along the centreline by one strategy.

    Attributes:
        pos: sample positions along ``LabelAnalysis.curve``, apex -> base.
        method: "peaks", "pitch" or "dips" (see :class:`~cochseg3d.contacts.result.Contacts`).
        pitch_mm: the spacing measured or used.
        layout: the catalogue layout placed (None: peaks taken as they are).
    """

    pos: np.ndarray
    method: str
    pitch_mm: float
    layout: dict[str, Any] | None = None

    @property
    def radius_mm(self) -> float:
        """How far around a contact its intensity centroid is taken (mm)."""
        return min(0.45 * self.pitch_mm, 0.6)


def bbox(mask: np.ndarray, margin: tuple[int, int, int]) -> tuple[slice, ...]:
    """Slices around the mask's non-zero voxels, ``margin`` voxels wider, inside the array."""
    idx = np.nonzero(mask)
    return tuple(slice(max(0, int(i.min()) - m), min(n, int(i.max()) + m + 1))
                 for i, m, n in zip(idx, margin, mask.shape))


def crop(volume: Volume, box: tuple[slice, ...]) -> Volume:
    """Sub-volume ``volume.array[box]`` with its origin moved so every voxel keeps its position."""
    start = np.array([s.start for s in box][::-1], dtype=float)  # (i, j, k)
    origin = volume.index_to_lps(start)
    return Volume(volume.array[box], volume.spacing_mm, tuple(origin), volume.direction.copy(), dict(volume.meta))


def analyse(label: Volume, image: Volume, layouts: list[dict[str, Any]], step_mm: float,
            cal: Calibration) -> LabelAnalysis:
    """The centreline and profile of a non-empty ``label`` on ``image``'s grid.

    ``layouts``: the layouts named; with exactly one whose model has a calibrated radial offset,
    the centreline is moved outward by it.
    """
    sp = np.asarray(image.spacing_mm)
    mask = np.asarray(label.array) > 0
    box = bbox(mask, tuple(int(math.ceil(1.5 / s)) for s in sp[::-1]))
    img = crop(image, box)
    lab = crop(label, box)
    m = np.asarray(lab.array) > 0
    smoothed = ndimage.gaussian_filter(img.array.astype(np.float32), sigma=np.maximum(0.2 / sp[::-1], 0.5))
    # tracking centres on the label's distance-to-edge ridge: saturated CBCT values are flat there
    edt = ndimage.distance_transform_edt(m, sampling=sp[::-1]).astype(np.float32)
    ridge = ndimage.gaussian_filter(edt, 0.7)
    curve = centreline(lab, m, step_mm, cal, ridge, smoothed)
    offset = cal.radial_offset_mm.get(str(layouts[0].get("model"))) if len(layouts) == 1 else None
    if offset:
        curve = shift_outward(curve, offset, step_mm)
    # the label reaches past the metal by the blooming; at the tip about as far as at the sides,
    # so the label's half-width near the tip estimates how far its tip lies beyond the array's
    bloom_mm = float(np.median(sample(lab, curve[: max(2, int(3.0 / step_mm))], edt)))
    profile = sample(img, curve, smoothed)
    curve_ext, n_ext, n_base = extended(curve, step_mm, cal.apical_extension_mm, cal.basal_extension_mm)
    apical = sample(img, curve_ext[:n_ext], smoothed) if n_ext else np.zeros(0)
    basal = sample(img, curve_ext[len(curve_ext) - n_base:], smoothed) if n_base else np.zeros(0)
    return LabelAnalysis(img, lab, m, smoothed, curve, curve_ext, n_ext, profile,
                         np.concatenate([apical, profile, basal]), bloom_mm, arc_length(curve), step_mm, cal)
