"""Characteristic frequency at an angular insertion depth: organ-of-Corti and spiral-ganglion maps.

* Organ of Corti: Greenwood (1990), J Acoust Soc Am 87:2592-2605, human constants
  ``F = A (10^(a x) - k)`` with A = 165.4 Hz, a = 2.1, k = 0.88 and ``x`` the fraction of the
  organ of Corti's length from the apex.
* Place along the organ of Corti at an angle from the round window: Escude et al. (2006), Audiol
  Neurootol 11 Suppl 1:27-33, lateral-wall length ``L(theta) = 2.62 A ln(1 + theta / 235 deg)``;
  as a fraction of the whole length the basal-turn diameter A cancels. The whole duct is taken to
  turn ``OC_TURNS`` = 2.6 turns (assumption: the middle of the 2.2-2.9 turns of Erixon et al.,
  Otol Neurotol 2009;30:14-22).
* Spiral ganglion: Stakhovskaya et al. (2007), J Assoc Res Otolaryngol 8:220-233, which relates
  the spiral ganglion's percentage length ``y`` (from the base) to the organ of Corti's ``x`` by
  the cubic ``y = -5.7e-5 x^3 + 0.0014 x^2 + 1.43 x`` (first derived by Sridhar et al., Audiol
  Neurootol 2006;11:16-20); the ganglion ends after about 1.75 turns (Stakhovskaya et al.
  2007; ``SG_TURNS``), over which its percentage length is taken to grow in proportion to the
  angle (assumption). A contact facing the ganglion at ``theta`` then hears the organ-of-Corti
  frequency of the matching ``x``.
"""

from __future__ import annotations

import numpy as np

GREENWOOD_A_HZ = 165.4
GREENWOOD_a = 2.1
GREENWOOD_k = 0.88
ESCUDE_THETA0_DEG = 235.0
OC_TURNS = 2.6
SG_TURNS = 1.75


def greenwood_hz(fraction_from_apex) -> np.ndarray:
    """Greenwood (1990) human map: frequency (Hz) at a fraction of the organ of Corti from the apex."""
    x = np.clip(np.asarray(fraction_from_apex, float), 0.0, 1.0)
    return GREENWOOD_A_HZ * (10.0 ** (GREENWOOD_a * x) - GREENWOOD_k)


def oc_fraction_from_base(angle_deg) -> np.ndarray:
    """Fraction of the organ of Corti's length from the round window at ``angle_deg`` (Escude 2006)."""
    th = np.clip(np.asarray(angle_deg, float), 0.0, 360.0 * OC_TURNS)
    return np.log1p(th / ESCUDE_THETA0_DEG) / np.log1p(360.0 * OC_TURNS / ESCUDE_THETA0_DEG)


def organ_of_corti_hz(angle_deg) -> np.ndarray:
    """Characteristic frequency (Hz) of the organ of Corti at an angle (deg) from the round window."""
    return greenwood_hz(1.0 - oc_fraction_from_base(angle_deg))


def _oc_percent_of_sg(y: np.ndarray) -> np.ndarray:
    """Inverse of Stakhovskaya's cubic on 0..100 (monotone there): OC % length for SG % length."""
    grid = np.linspace(0.0, 100.0, 2001)
    sg = -5.7e-5 * grid**3 + 0.0014 * grid**2 + 1.43 * grid
    return np.interp(y, sg, grid)


def spiral_ganglion_hz(angle_deg) -> np.ndarray:
    """Characteristic frequency (Hz) of the spiral ganglion at an angle (deg) from the round window."""
    th = np.clip(np.asarray(angle_deg, float), 0.0, 360.0 * SG_TURNS)
    sg_percent = 100.0 * th / (360.0 * SG_TURNS)
    oc_percent = _oc_percent_of_sg(sg_percent)
    return greenwood_hz(1.0 - oc_percent / 100.0)
