"""How a canonical (coronal-stack) volume is turned into network input; saved in every checkpoint.

Training and inference share this object so a model always sees what it was trained on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from cochseg3d.greylevels import measure, to_hu
from cochseg3d.volume import Volume

#: how grey values become HU before the window (see :class:`Preprocessing`)
GREY_LEVELS = ("measured", "offset", "as_stored")


@dataclass(frozen=True)
class Preprocessing:
    """Network-input preparation.

    Attributes:
        spacing_mm: in-plane pixel size (rows and columns of a coronal slice) the network works at;
            slices are resampled to it (never resized), the slice axis is left alone.
        window_hu: intensities are clipped to this window (HU) and scaled to [0, 1].
        context: 2.5D half-width k; the network sees 2k+1 neighbouring coronal slices as channels
            (0 for the plain 2D model).
        roi_size: patch size (rows, cols) in pixels at ``spacing_mm`` for training and the
            sliding-window inferer.
        grey_levels: "measured": grey values are mapped to HU from the image's own air and
            soft-tissue levels (:mod:`cochseg3d.greylevels`) before the window, so an uncalibrated
            scanner's offset and gain do not reach the network; "offset": only the offset is
            corrected, from the soft-tissue level (the gain, which cupping distorts, is left);
            "as_stored": taken as HU. Checkpoints
            written before this field existed read as "as_stored".
    """

    spacing_mm: float = 0.3
    window_hu: tuple[float, float] = (-1000.0, 4000.0)
    context: int = 0
    roi_size: tuple[int, int] = (128, 128)
    grey_levels: str = "measured"

    def __post_init__(self) -> None:
        if self.grey_levels not in GREY_LEVELS:
            raise ValueError(f"grey_levels must be one of {GREY_LEVELS}, got {self.grey_levels!r}")

    @property
    def in_channels(self) -> int:
        return 2 * self.context + 1

    def normalize(self, array_hu: np.ndarray) -> np.ndarray:
        """HU -> float32 in [0, 1] with the window; works on any shape."""
        lo, hi = self.window_hu
        out = (np.asarray(array_hu, dtype=np.float32) - lo) / float(hi - lo)
        return np.clip(out, 0.0, 1.0, out=out)

    def hu(self, volume: Volume) -> Volume:
        """``volume`` in HU as the network expects it (a whole volume: the levels are measured on it)."""
        if self.grey_levels == "as_stored":
            return volume
        levels = measure(volume)
        return to_hu(volume, levels.offset_only() if self.grey_levels == "offset" else levels)[0]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {sorted(unknown)}")
        kw = {"grey_levels": "as_stored", **d}
        for key in ("window_hu", "roi_size"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)
