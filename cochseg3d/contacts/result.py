"""The contacts found on one array, and their contacts.json record."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


@dataclass
class Contacts:
    """Contacts found on one electrode array.

    Attributes:
        lps_mm: (N, 3) contact centres in LPS mm, apex -> base.
        method: "peaks" (separate intensity peaks), "pitch" (comb of the known pitch), "dips"
            (separate saturated contacts midway between the profile's dips) or "blobs" (separate
            contacts as the CT's bright blobs, where the centreline's peaks failed); "none" for an
            empty label.
        centreline_lps_mm: (M, 3) the array's centreline, apex -> base, every ``step_mm``.
        profile: CT intensity along the centreline (HU), same length.
        pitch_mm: contact spacing used or measured (mm).
        info: extra diagnostics (electrode assumed, peak count, array length mm ...).
    """

    lps_mm: np.ndarray
    method: str
    centreline_lps_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    profile: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pitch_mm: float = math.nan
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ras_mm(self) -> np.ndarray:
        return self.lps_mm * _LPS_TO_RAS

    def to_json(self, **extra: Any) -> dict[str, Any]:
        """The contacts.json record (LPS and RAS mm, apex -> base)."""
        return {
            **extra,
            "n_contacts": int(len(self.lps_mm)),
            "order": "apex_to_base",
            "method": self.method,
            "pitch_mm": None if math.isnan(self.pitch_mm) else round(float(self.pitch_mm), 4),
            "contacts_lps_mm": np.round(self.lps_mm, 4).tolist(),
            "contacts_ras_mm": np.round(self.ras_mm, 4).tolist(),
            "array_length_mm": self.info.get("length_mm"),
            "electrode_assumed": self.info.get("electrode"),
            "model_assumed": self.info.get("model"),
        }
