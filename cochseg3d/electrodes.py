"""Electrode-array catalogue and insertion-depth distributions.

Every model lists where its figures come from. ``datasheet`` marks figures taken from the
manufacturers' public product literature (MED-EL electrode-array brochure, Cochlear Nucleus and
Advanced Bionics HiFocus product sheets), quoted from memory to about 0.1 mm and not re-checked
against current sheets here; ``assumption`` marks figures chosen here to be plausible because no
public number was at hand. The platinum volume per contact (``contact_radius_mm``), the wire
diameter and the lead diameter are assumptions for every model. Angular insertion depths (AID) are
the angle of the most apical contact from the round window, as in the consensus of Verbist et al.
(Otol Neurotol 2010;31:722-730).

Published AID figures used (as quoted in the project's issue 2 from post-operative CT series):

* MED-EL FLEX28: median ~575 deg.
* MED-EL FLEX24: median ~408 deg.
* Advanced Bionics HiFocus SlimJ: 401 +/- 41 deg.

All other AID means and every spread are assumptions inside the range that reviews of lateral-wall
and perimodiolar arrays report (about 350-650 deg; e.g. Dhanasingh & Jolly, Hear Res 2017;356:93-103).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

VENDORS = ("MED-EL", "Cochlear", "AB")


@dataclass(frozen=True)
class ElectrodeModel:
    """One electrode array. Lengths in mm, angles in degrees.

    Attributes:
        vendor: "MED-EL", "Cochlear" or "AB".
        model: product name.
        n_contacts: stimulation sites (MED-EL contact pairs count as one site).
        pitch_mm: centre-to-centre distance of neighbouring contacts along the array.
        contact_len_mm: contact extent along the array.
        length_mm: insertion length, tip to the stopper / insertion marker.
        tip_offset_mm: tip to the centre of the most apical contact.
        diameter_tip_mm / diameter_base_mm: carrier diameter at the tip and at the basal end.
        lead_diameter_mm: diameter of the lead outside the cochlea.
        position: "lateral", "mid" or "perimodiolar" (radial position in the scala tympani).
        contact_radius_mm: radius of the solid platinum cylinder standing in for one contact; it
            sets the contact's metal volume (~0.04-0.06 mm^3: thin pads, half-bands and rings hold
            little platinum; assumption), which with the PSF sets the blooming.
        aid_mean_deg / aid_sd_deg: angular insertion depth distribution (normal, clipped).
        sources: which figures are datasheet and which assumptions.
    """

    vendor: str
    model: str
    n_contacts: int
    pitch_mm: float
    contact_len_mm: float
    length_mm: float
    tip_offset_mm: float
    diameter_tip_mm: float
    diameter_base_mm: float
    lead_diameter_mm: float
    position: str
    aid_mean_deg: float
    aid_sd_deg: float
    sources: str
    contact_radius_mm: float = 0.2

    @property
    def active_length_mm(self) -> float:
        """First to last contact centre."""
        return (self.n_contacts - 1) * self.pitch_mm

    def carrier_radius_mm(self, s_mm: np.ndarray) -> np.ndarray:
        """Radius (mm) at arc length ``s_mm`` from the tip: the carrier tapers linearly from the tip
        diameter to the base diameter over its length, the lead's beyond."""
        s = np.asarray(s_mm, float)
        frac = np.clip(s / self.length_mm, 0.0, 1.0)
        r = 0.5 * (self.diameter_tip_mm + frac * (self.diameter_base_mm - self.diameter_tip_mm))
        return np.where(s > self.length_mm, 0.5 * self.lead_diameter_mm, r)

    def to_dict(self) -> dict:
        return asdict(self)


_MEDEL_SRC = (
    "datasheet: 12 sites, pitch (active range / 11), length, tip/base diameter; "
    "assumption: contact length 0.5 mm and metal volume, tip offset, lead diameter, AID spread"
)
_COCH_SRC = (
    "datasheet: 22 half-band contacts, approximate active length and diameters; "
    "assumption: uniform pitch (active length / 21), contact width 0.3 mm and metal volume, AID mean and spread"
)
_AB_SRC = (
    "datasheet: 16 contacts, length and approximate active length; "
    "assumption: uniform pitch, contact length 0.4 mm and metal volume, diameters, AID spread "
    "(SlimJ AID published)"
)

CATALOGUE: tuple[ElectrodeModel, ...] = (
    # MED-EL: active stimulation ranges 23.1 / 20.9 / 26.4 / 15.4 mm over 12 sites
    ElectrodeModel("MED-EL", "FLEX28", 12, 2.1, 0.5, 28.0, 0.6, 0.45, 0.8, 1.0, "lateral", 575.0, 55.0, _MEDEL_SRC),
    ElectrodeModel("MED-EL", "FLEX24", 12, 1.9, 0.5, 24.0, 0.6, 0.45, 0.8, 1.0, "lateral", 408.0, 45.0, _MEDEL_SRC),
    ElectrodeModel("MED-EL", "FLEXSOFT", 12, 2.4, 0.5, 31.5, 0.6, 0.45, 1.3, 1.0, "lateral", 620.0, 60.0, _MEDEL_SRC),
    ElectrodeModel("MED-EL", "FLEX20", 12, 1.4, 0.5, 20.0, 0.6, 0.45, 0.8, 1.0, "lateral", 360.0, 40.0, _MEDEL_SRC),
    # Cochlear Nucleus: 22 contacts at < 1 mm pitch, blooming merges them into one band
    ElectrodeModel("Cochlear", "CI622 Slim Straight", 22, 0.9, 0.3, 25.0, 0.3, 0.35, 0.6, 1.0, "lateral", 390.0, 55.0, _COCH_SRC),
    ElectrodeModel("Cochlear", "CI612 Contour Advance", 22, 0.72, 0.3, 19.0, 0.3, 0.5, 0.8, 1.0, "perimodiolar", 400.0, 40.0, _COCH_SRC),
    ElectrodeModel("Cochlear", "CI632 Slim Modiolar", 22, 0.67, 0.3, 18.0, 0.3, 0.4, 0.5, 1.0, "perimodiolar", 380.0, 40.0, _COCH_SRC),
    # Advanced Bionics HiFocus: 16 contacts
    ElectrodeModel("AB", "HiFocus SlimJ", 16, 1.3, 0.4, 23.0, 0.4, 0.25, 0.6, 1.0, "lateral", 401.0, 41.0, _AB_SRC),
    ElectrodeModel("AB", "HiFocus Mid-Scala", 16, 1.0, 0.4, 18.5, 0.4, 0.5, 0.7, 1.0, "mid", 430.0, 45.0, _AB_SRC),
    ElectrodeModel("AB", "HiFocus 1J", 16, 1.1, 0.4, 25.0, 0.4, 0.4, 0.8, 1.0, "lateral", 450.0, 55.0, _AB_SRC),
)


def models_of(vendor: str) -> list[ElectrodeModel]:
    """Catalogue entries of ``vendor`` (case-insensitive, "MED-EL" / "Cochlear" / "AB")."""
    key = vendor.replace("-", "").replace(" ", "").lower()
    aliases = {"advancedbionics": "ab"}
    key = aliases.get(key, key)
    found = [m for m in CATALOGUE if m.vendor.replace("-", "").lower() == key]
    if not found:
        raise ValueError(f"unknown electrode vendor {vendor!r}; use one of {', '.join(VENDORS)}")
    return found


def find_model(name: str) -> ElectrodeModel:
    """A catalogue entry by model name (case-insensitive)."""
    for m in CATALOGUE:
        if m.model.lower() == name.lower():
            return m
    raise ValueError(f"unknown electrode model {name!r}; known: {', '.join(m.model for m in CATALOGUE)}")
