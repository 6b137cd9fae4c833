"""X-ray physics of the itk-rtk CBCT model (:mod:`.rtk`): spectra, material attenuation, water calibration.

Mass attenuation coefficients (cm^2/g, total with coherent scattering) are approximate values of the
NIST XCOM / NIST Standard Reference Database 126 tables (Hubbell & Seltzer, NISTIR 5632):
water; cortical bone (ICRU-44, 1.92 g/cm^3); aluminium and copper (tube filtration); platinum, whose
K edge (78.4 keV) is kept as a step. The platinum-iridium of the contacts (Pt90Ir10, 21.55 g/cm^3) is
treated as platinum at that density (iridium's 76.1 keV edge is merged into platinum's; an
approximation of a few per cent between 76 and 78 keV). Between table energies: log-log interpolation.
Metal other than the array (issue 12's hard conditions): titanium (4.51 g/cm^3, a bone-anchored
fixture) and dental amalgam (11.6 g/cm^3; by mass Hg 0.50, Ag 0.35, Sn 0.10, Cu 0.05, mixed from the
elements' XCOM values, mercury's 83.1 keV K edge kept as a step).

Spectrum: Kramers' bremsstrahlung photon fluence ``(kVp - E) / E`` (unfiltered), hardened by the tube's
aluminium and copper filtration, detected by an energy-integrating flat panel (weight ``E``), summed
into a few energy bins. Characteristic tungsten lines (~58-69 keV) are left out (approximation).
"""

from __future__ import annotations

import numpy as np

_E_KEV = np.array([20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0])
#: mass attenuation coefficients (cm^2/g) at _E_KEV, approximate NIST XCOM values
_MASS_ATT = {
    "water": np.array([0.8096, 0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707, 0.1505]),
    "bone": np.array([4.001, 1.331, 0.6655, 0.4242, 0.3148, 0.2229, 0.1855, 0.1480]),
    "aluminium": np.array([3.441, 1.128, 0.5685, 0.3681, 0.2778, 0.2018, 0.1704, 0.1378]),
    "copper": np.array([33.79, 10.92, 4.862, 2.613, 1.593, 0.7630, 0.4584, 0.2217]),
}
_PT_E = np.array([20.0, 30.0, 40.0, 50.0, 60.0, 78.39, 78.40, 80.0, 100.0, 150.0])
_PT = np.array([75.6, 27.0, 12.8, 6.97, 4.35, 2.20, 9.00, 8.60, 4.99, 1.86])
_MASS_ATT["titanium"] = np.array([15.85, 4.972, 2.214, 1.213, 0.7661, 0.4052, 0.2721, 0.1649])
_EDGED = {"platinum_iridium": (_PT_E, _PT),
          "amalgam": (np.array([20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 83.09, 83.11, 100.0, 150.0]),
                      np.array([49.5, 26.3, 12.25, 6.82, 4.19, 1.98, 1.78, 4.58, 2.94, 1.10]))}
DENSITY_G_CM3 = {"water": 1.0, "bone": 1.92, "aluminium": 2.699, "copper": 8.96, "platinum_iridium": 21.55,
                 "titanium": 4.51, "amalgam": 11.6}

#: true HU of the phantom's anatomy are taken at this energy (keV) for the material decomposition
E_REF_KEV = 60.0
#: HU below which a voxel is water-like tissue of density 1 + HU/1000; above, a water/bone mixture
BONE_ONSET_HU = 300.0


def mu_per_mm(material: str, e_kev) -> np.ndarray:
    """Linear attenuation (/mm) of ``material`` at the nominal density, energies ``e_kev``."""
    le = np.log(np.asarray(e_kev, float))
    if material in _EDGED:
        e_tab, m_tab = _EDGED[material]
        mass = np.exp(np.interp(le, np.log(e_tab), np.log(m_tab)))
    else:
        mass = np.exp(np.interp(le, np.log(_E_KEV), np.log(_MASS_ATT[material])))
    return mass * DENSITY_G_CM3[material] / 10.0


def bone_hu() -> float:
    """HU of cortical bone at :data:`E_REF_KEV` (~1930 HU)."""
    return float(1000.0 * (mu_per_mm("bone", E_REF_KEV) / mu_per_mm("water", E_REF_KEV) - 1.0))


def decompose(hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(water-equivalent density, cortical-bone fraction) of true HU, both float32 of ``hu``'s shape.

    HU <= 300: tissue of density ``1 + HU/1000`` (air 0). Above: a mixture of 1.3 g/cm^3 water-like
    tissue and cortical bone whose HU at 60 keV is ``hu`` (bone fraction may pass 1 for HU > ~1930).
    """
    hu = np.asarray(hu, np.float32)
    b = np.maximum(hu - np.float32(BONE_ONSET_HU), 0) / np.float32(bone_hu() - BONE_ONSET_HU)
    rho = np.where(hu <= BONE_ONSET_HU, np.maximum(1.0 + hu / np.float32(1000.0), 0),
                   np.float32(1.0 + BONE_ONSET_HU / 1000.0) * np.maximum(1 - b, 0))
    return rho.astype(np.float32), b.astype(np.float32)


def spectrum(kvp: float, al_mm: float, cu_mm: float, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Energy bins of the detected spectrum: (mean energy keV, detected-energy weight summing to 1)."""
    e = np.arange(15.5, kvp, 1.0)
    fluence = (kvp - e) / e * np.exp(-mu_per_mm("aluminium", e) * al_mm - mu_per_mm("copper", e) * cu_mm)
    signal = fluence * e  # energy-integrating detector
    edges = np.linspace(20.0, kvp, n_bins + 1)
    e_bin, w_bin = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (e >= lo) & (e < hi) if hi < kvp else (e >= lo)
        sel |= (lo == edges[0]) & (e < lo)  # the few photons below 20 keV join the first bin
        e_bin.append(float(np.sum(signal[sel] * e[sel]) / np.sum(signal[sel])))
        w_bin.append(float(np.sum(signal[sel])))
    w = np.array(w_bin)
    return np.array(e_bin), w / w.sum()


def poly_log(e_bin: np.ndarray, w_bin: np.ndarray, water_mm: np.ndarray) -> np.ndarray:
    """Polychromatic ``-log`` transmission through ``water_mm`` of water."""
    mu = mu_per_mm("water", e_bin)
    t = np.exp(-np.multiply.outer(np.asarray(water_mm, float), mu)) @ w_bin
    return -np.log(t)


class WaterCorrection:
    """The scanner's water pre-correction: polychromatic ``-log`` -> water-equivalent path (mm).

    A lookup table from the spectrum, applied with ``strength`` (1 = full; below 1 the rest is a
    linear scaling by water's effective attenuation at ``ref_mm``, which leaves cupping).
    """

    def __init__(self, e_bin: np.ndarray, w_bin: np.ndarray, *, strength: float, ref_mm: float = 150.0) -> None:
        self.L = np.concatenate([np.linspace(0, 40, 81), np.linspace(41, 2000, 400)])
        self.p = poly_log(e_bin, w_bin, self.L)
        self.mu_eff = float(poly_log(e_bin, w_bin, np.array([ref_mm]))[0] / ref_mm)
        self.strength = float(strength)
        self.slope_end = float((self.L[-1] - self.L[-2]) / (self.p[-1] - self.p[-2]))

    def __call__(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, np.float32)
        lut = np.interp(p, self.p, self.L).astype(np.float32)
        over = p > self.p[-1]
        if np.any(over):
            lut[over] = self.L[-1] + (p[over] - self.p[-1]) * self.slope_end
        if self.strength >= 1.0:
            return lut
        return np.float32(self.strength) * lut + np.float32((1 - self.strength) / self.mu_eff) * p

    def hu_of(self, mu_per_mm_: float) -> float:
        """HU a material of (effective) attenuation ``mu_per_mm_`` shows after this calibration."""
        return 1000.0 * (mu_per_mm_ / self.mu_eff - 1.0)
