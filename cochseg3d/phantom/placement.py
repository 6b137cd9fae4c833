"""Abnormal array placements: a tip fold-over, a partial insertion and a kinked (buckled) array.

``array_kind`` of :func:`cochseg3d.phantom.generate_patient`:

* ``"normal"``: the array follows the spiral (:func:`.implant.build_path`), unchanged.
* ``"fold_over"``: the surgeon pushes the array in as far as the drawn AID would take it, but the
  apical 2.5-6 mm fold back on themselves: the array reaches its deepest point at the fold, turns
  through 180 deg (bend radius half the carrier's offset) and runs back towards the base beside
  itself, one carrier diameter towards the canal's centre (towards the modiolus for lateral-wall
  and mid-scala arrays, the lateral wall for perimodiolar ones), the tip pointing to the base.
* ``"partial"``: the array stops short: the 2-5 most basal contacts (at most a third) lie beyond
  the round window, in the niche and the middle ear (extracochlear).
* ``"kink"``: the array buckles in the basal turn (45-180 deg from the round window): over
  1.2-2.4 mm of its length it is pushed 0.6-1.2 mm up towards the scala vestibuli (tilted up to
  60 deg towards the modiolus) in a sharp V, bends of about 50-130 deg at the apex of the V; the
  excess length comes off the insertion depth (the push is the drawn AID's, as for a fold-over).

The shapes are simplifications (assumption): corners are sharp at the path's 0.05 mm sampling
except the fold's half-turn, and the bony walls do not push back. Draws come from a generator of
their own (``[seed, 17]``), drawn whatever the kind, so ``"normal"`` is bit-identical to a phantom
made before placements existed and a kind changes no other draw. Truth: per-contact
``inside_cochlea`` (past the round window along the array), ``extracochlear_contacts`` and the
``flags`` a reader should raise (``out_of_order`` is never true: truth lists contacts in order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cochseg3d.electrodes import ElectrodeModel

from .anatomy import Cochlea
from .implant import PATH_STEP_MM, ArrayPath, assemble_path, build_path, insertion_length, spiral_track, track_table

ARRAY_KINDS = ("normal", "fold_over", "partial", "kink")
RANDOM = "random"


@dataclass
class Placement:
    kind: str
    u: np.ndarray  # uniform draws for the shape, in a fixed order
    record: dict = field(default_factory=dict)


def resolve(seed: int, array_kind: str) -> Placement:
    """The placement kind (``"random"``: one of :data:`ARRAY_KINDS`, equally likely) and its draws."""
    u = np.random.default_rng([int(seed), 17]).random(8)
    if array_kind == RANDOM:
        array_kind = ARRAY_KINDS[min(int(u[0] * len(ARRAY_KINDS)), len(ARRAY_KINDS) - 1)]
    if array_kind not in ARRAY_KINDS:
        raise ValueError(f"unknown array_kind {array_kind!r}; use one of {', '.join(ARRAY_KINDS)} or random")
    return Placement(array_kind, u[1:], {"kind": array_kind})


def build(pl: Placement, c: Cochlea, model: ElectrodeModel, aid_deg: float,
          lead_points: list[np.ndarray]) -> tuple[ArrayPath, float]:
    """The array's path for placement ``pl`` and the AID it was pushed to (see :func:`.implant.build_path`)."""
    if pl.kind == "normal":
        return build_path(c, model, aid_deg, lead_points)
    if pl.kind == "partial":
        return _partial(pl, c, model, lead_points)
    theta, track, s_rw = track_table(c, model)
    s_push, aid_deg = insertion_length(c, model, aid_deg, theta, s_rw)
    make = _fold_over if pl.kind == "fold_over" else _kink
    inner = make(pl, c, model, theta, track, s_rw, s_push)
    s_tip = float(np.linalg.norm(np.diff(inner, axis=0), axis=1).sum())
    return assemble_path(inner, model, s_tip, lead_points), aid_deg


def _partial(pl: Placement, c: Cochlea, model: ElectrodeModel, lead_points) -> tuple[ArrayPath, float]:
    n, pitch = model.n_contacts, model.pitch_mm
    n_max = max(2, min(5, n // 3))
    n_out = 2 + min(int(pl.u[0] * (n_max - 1)), n_max - 2)
    cs = model.tip_offset_mm + pitch * np.arange(n)
    s_tip = cs[n - n_out - 1] + (0.25 + 0.5 * pl.u[1]) * pitch  # the round window between two contacts
    theta, _, s_rw = track_table(c, model)
    aid = float(np.degrees(np.interp(s_tip - model.tip_offset_mm, s_rw, theta)))
    path, aid = build_path(c, model, aid, lead_points)
    pl.record.update(extracochlear_planned=int(n_out), aid_deg=round(aid, 3))
    return path, aid


def _radial(c: Cochlea, theta) -> np.ndarray:
    """Unit vectors (LPS) from the modiolar axis outwards at angles ``theta``, in the turn's plane."""
    th = np.atleast_1d(np.asarray(theta, float))
    return np.cos(c.sense * th)[:, None] * c.rows[0] + np.sin(c.sense * th)[:, None] * c.rows[1]


def _dense(c, model, th0: float, th1: float) -> np.ndarray:
    """The track from ``th0`` to ``th1`` sampled twice per path step."""
    length = abs(th1 - th0) * max(c.r0, 1.0)
    return spiral_track(c, model, np.linspace(th0, th1, max(int(length / PATH_STEP_MM * 2), 8)))


def _fold_over(pl: Placement, c: Cochlea, model: ElectrodeModel, theta, track, s_rw, s_push) -> np.ndarray:
    """Tip -> round window: the folded-back arm, the half-turn, the spiral from the fold to the RW."""
    lo = model.tip_offset_mm + model.pitch_mm + 0.3  # at least one contact on the folded arm
    hi = max(lo, 0.4 * model.pitch_mm * (model.n_contacts - 1))
    fold_len = float(np.clip(2.5 + 3.5 * pl.u[2], lo, hi))
    frac = min(fold_len / model.length_mm, 1.0)
    offset = model.diameter_tip_mm + frac * (model.diameter_base_mm - model.diameter_tip_mm) + 0.05
    s_fold = s_push - fold_len - np.pi * offset / 2
    th_fold = float(np.clip(np.interp(s_fold, s_rw, theta), np.radians(200.0), c.theta_max - np.radians(20.0)))
    main = _dense(c, model, 0.0, th_fold)  # RW -> fold
    t = main[-1] - main[-2]
    t /= np.linalg.norm(t)
    side = 1.0 if model.position == "perimodiolar" else -1.0  # towards the canal's free side
    d = side * _radial(c, th_fold)[0]
    d -= (d @ t) * t
    d /= np.linalg.norm(d)
    a = np.linspace(0.0, np.pi, 41)
    centre = main[-1] + 0.5 * offset * d
    turn = centre - 0.5 * offset * np.cos(a)[:, None] * d + 0.5 * offset * np.sin(a)[:, None] * t
    th_arm = np.linspace(th_fold, max(th_fold - 4.0, 0.05), 8000)
    arm = spiral_track(c, model, th_arm) + offset * side * _radial(c, th_arm)
    s_arm = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(arm, axis=0), axis=1))])
    arm = arm[s_arm <= fold_len]
    pl.record.update(fold_length_mm=round(fold_len, 3), fold_offset_mm=round(float(offset), 3),
                     fold_angle_deg=round(float(np.degrees(th_fold)), 2), fold_lps_mm=np.round(main[-1], 3).tolist())
    return np.concatenate([arm[::-1], turn[::-1][1:], main[::-1][1:]])


def _kink(pl: Placement, c: Cochlea, model: ElectrodeModel, theta, track, s_rw, s_push) -> np.ndarray:
    """Tip -> round window: the spiral with a V-shaped buckle in the basal turn."""
    th_k = np.radians(45.0 + 135.0 * pl.u[3])
    half = 0.6 + 0.6 * pl.u[4]  # mm of array on either side of the V's apex
    height = 0.6 + 0.6 * pl.u[5]
    tilt = np.radians(60.0 * pl.u[6])
    s_k = float(np.interp(th_k, theta, s_rw))
    n = np.cos(tilt) * c.rows[2] - np.sin(tilt) * _radial(c, th_k)[0]
    bump = height * np.clip(1.0 - np.abs(s_rw - s_k) / half, 0.0, None)
    bent = track + bump[:, None] * n
    s_bent = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(bent, axis=0), axis=1))])
    s_max = float(np.interp(c.theta_max - np.radians(20.0), theta, s_bent))
    s_tip = float(np.clip(s_push, np.interp(s_k + half, s_rw, s_bent) + 3.0, s_max))  # the tip beyond the V
    keep = s_bent < s_tip
    tip = np.array([np.interp(s_tip, s_bent, bent[:, k]) for k in range(3)])
    inner = np.concatenate([bent[keep], tip[None]])[::-1]
    i_k, i_a, i_b = (int(np.argmin(np.abs(s_rw - s))) for s in (s_k, s_k - half, s_k + half))
    a, b = bent[i_k] - bent[i_a], bent[i_b] - bent[i_k]
    bend = float(np.degrees(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1))))
    pl.record.update(kink_angle_deg=round(float(np.degrees(th_k)), 2), kink_half_length_mm=round(half, 3),
                     kink_height_mm=round(height, 3), kink_tilt_deg=round(float(np.degrees(tilt)), 1),
                     kink_bend_deg=round(bend, 1), kink_lps_mm=np.round(bent[i_k], 3).tolist(),
                     tip_angle_deg=round(float(np.degrees(np.interp(s_tip, s_bent, theta))), 2))
    return inner


def truth(pl: Placement, path: ArrayPath, angles_deg: list[float]) -> dict:
    """The truth contacts.json gains: the kind, the flags a reader should raise, extracochlear contacts."""
    out = {"array_kind": pl.kind,
           "flags": {"fold_over": pl.kind == "fold_over", "kink": pl.kind == "kink", "out_of_order": False},
           "extracochlear_contacts": int((~path.inside_cochlea).sum())}
    if pl.kind != "normal":  # the deepest contact, which a fold-over's tip is not
        out["insertion_angle_deg"] = round(float(np.max(angles_deg)), 3)
    return out
