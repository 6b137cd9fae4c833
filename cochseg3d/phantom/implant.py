"""The implanted array: its centre-line path, contacts, wires, carrier and the metal fraction field.

Geometry model (mm):

* inside the cochlea the array follows the spiral at a radial position set by its design
  (lateral wall: touching the lateral wall; perimodiolar: touching the modiolar wall; mid-scala:
  the canal centre), in the lower (scala tympani) half of the canal;
* the angular insertion depth (AID) of the most apical contact is drawn from the model's
  distribution (:mod:`cochseg3d.electrodes`); contacts sit at ``tip_offset + i * pitch`` from the tip, so a
  shallow insertion leaves basal contacts outside the round window (``inside_cochlea`` false);
* outside the cochlea the lead runs back through the round-window niche, the posterior tympanotomy
  and the mastoid cavity and leaves the field of view postero-superiorly (a cubic spline);
* contacts are solid platinum cylinders ``contact_len_mm`` long of radius ``contact_radius_mm``
  on the carrier's axis, holding the ~0.04-0.06 mm^3 of platinum of a real pad / half-band / ring
  (a simplification; assumption); each contact has a
  15 um platinum-iridium wire running to the base (assumption), spread over the carrier and wound
  helically in the lead (factor 2.5, assumption), which gives the faint line between contacts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import interpolate
from scipy.spatial import cKDTree

from cochseg3d.electrodes import ElectrodeModel

from .anatomy import Cochlea, ScanGrid

WIRE_DIAMETER_MM = 0.015
LEAD_HELIX_FACTOR = 2.5
PATH_STEP_MM = 0.05


@dataclass
class ArrayPath:
    """Centre line sampled every 0.05 mm from the tip (s = 0) to the end of the lead."""

    points: np.ndarray  # (N, 3) LPS mm
    s: np.ndarray  # (N,) arc length from the tip, mm
    radius: np.ndarray  # (N,) carrier / lead radius, mm
    s_round_window: float
    contacts_s: np.ndarray  # arc length of contact centres, apex -> base
    contact_len_mm: float
    contact_radius_mm: float
    wire_fraction: np.ndarray  # (N,) metal volume fraction of the wires inside the carrier

    @property
    def contacts_lps(self) -> np.ndarray:
        return np.stack([np.interp(self.contacts_s, self.s, self.points[:, d]) for d in range(3)], axis=1)

    @property
    def inside_cochlea(self) -> np.ndarray:
        return self.contacts_s <= self.s_round_window


def _resample(points: np.ndarray, step: float) -> np.ndarray:
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    s_new = np.arange(0.0, s[-1], step)
    return np.stack([np.interp(s_new, s, points[:, d]) for d in range(3)], axis=1)


def spiral_track(c: Cochlea, model: ElectrodeModel, theta: np.ndarray) -> np.ndarray:
    """LPS points of the array centre at angles ``theta`` inside the canal, by radial design."""
    rc = c.canal_radius(theta)
    rl = c.r_lateral(theta)
    rad = 0.5 * (model.diameter_tip_mm + 0.4 * (model.diameter_base_mm - model.diameter_tip_mm))
    if model.position == "lateral":
        r = rl - np.minimum(rad + 0.08, rc)
    elif model.position == "perimodiolar":
        r = rl - 2 * rc + np.minimum(rad + 0.08, rc)
    else:
        r = rl - rc
    dz = -np.clip(rc - rad, 0, None) * 0.45  # scala tympani: the lower half of the canal
    return c.point(theta, r, dz)


def track_table(c: Cochlea, model: ElectrodeModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(theta, points, arc length from the round window) of the array's track over the whole spiral."""
    theta = np.linspace(0.0, c.theta_max, 6000)
    track = spiral_track(c, model, theta)
    return theta, track, np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(track, axis=0), axis=1))])


def insertion_length(c: Cochlea, model: ElectrodeModel, aid_deg: float, theta: np.ndarray,
                     s_rw: np.ndarray) -> tuple[float, float]:
    """(tip's arc length from the round window, AID used) for an apical-contact AID of ``aid_deg``,
    clipped so the tip stays 20 deg short of the helicotrema."""
    th_tip_max = c.theta_max - np.radians(20)
    s_tip_max = np.interp(th_tip_max, theta, s_rw)
    s_contact = np.interp(np.radians(aid_deg), theta, s_rw)
    if s_contact + model.tip_offset_mm > s_tip_max:
        s_contact = s_tip_max - model.tip_offset_mm
        aid_deg = float(np.degrees(np.interp(s_contact, s_rw, theta)))
    return float(s_contact + model.tip_offset_mm), float(aid_deg)


def build_path(c: Cochlea, model: ElectrodeModel, aid_deg: float,
               lead_points: list[np.ndarray]) -> tuple[ArrayPath, float]:
    """Array path for an apical-contact AID of ``aid_deg``; returns the path and the AID used.

    The AID is clipped so the tip stays 20 deg short of the helicotrema.
    """
    theta, _, s_rw = track_table(c, model)
    s_tip, aid_deg = insertion_length(c, model, aid_deg, theta, s_rw)
    th_tip = np.interp(s_tip, s_rw, theta)
    th_in = np.linspace(th_tip, 0.0, max(int(s_tip / PATH_STEP_MM * 2), 8))
    return assemble_path(spiral_track(c, model, th_in), model, float(s_tip), lead_points), float(aid_deg)


def assemble_path(inner: np.ndarray, model: ElectrodeModel, s_tip: float, lead_points: list[np.ndarray]) -> ArrayPath:
    """The whole path from the intracochlear track ``inner`` (dense, tip -> round window), ``s_tip``
    mm long, and the lead's control points; carrier radius and wires follow the arc length."""
    # outward tangent at the round window continues smoothly into the lead
    t_out = inner[-1] - inner[-2]
    t_out /= np.linalg.norm(t_out)
    ctrl = [inner[-1], inner[-1] + 1.2 * t_out, inner[-1] + 2.5 * t_out, *lead_points]
    ctrl = np.asarray(ctrl)
    u = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ctrl, axis=0), axis=1))])
    spl = interpolate.make_interp_spline(u, ctrl, k=3)
    outer = spl(np.linspace(0, u[-1], int(u[-1] / PATH_STEP_MM * 2)))
    pts = _resample(np.concatenate([inner, outer[1:]]), PATH_STEP_MM)
    s = np.arange(len(pts)) * PATH_STEP_MM
    contacts_s = model.tip_offset_mm + model.pitch_mm * np.arange(model.n_contacts)
    radius = model.carrier_radius_mm(s)
    # one wire per contact runs from the contact to the base
    n_wires = np.searchsorted(contacts_s, s, side="right")
    wire_area = np.pi * (WIRE_DIAMETER_MM / 2) ** 2
    helix = np.where(s > model.length_mm, LEAD_HELIX_FACTOR, 1.3)
    wire_fraction = np.clip(n_wires * wire_area * helix / (np.pi * radius**2), 0, 0.5)
    return ArrayPath(pts, s, radius, float(s_tip), contacts_s, model.contact_len_mm, model.contact_radius_mm,
                     wire_fraction)


def band_voxels(grid: ScanGrid, points: np.ndarray, radius_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxels within ``radius_mm`` of the sampled curve ``points``.

    Returns ``(kji, dist, nearest)``: voxel indices (M, 3) in ``[k, j, i]`` order, their distance
    (mm) to the curve and the index of the nearest curve sample. Candidates come from 4^3 blocks
    touched by the dilated curve, so the cost follows the curve's length, not the volume.
    """
    sp = np.asarray(grid.spacing_mm)
    org = np.asarray(grid.origin_mm)
    shape_ijk = np.array(grid.shape[::-1])
    B = 4
    ijk = np.round((points - org) / sp).astype(int)
    blocks = np.unique(ijk // B, axis=0)
    reach = int(np.ceil(radius_mm / (B * sp.min()))) + 1
    rng_ = np.arange(-reach, reach + 1)
    off = np.stack(np.meshgrid(rng_, rng_, rng_, indexing="ij"), -1).reshape(-1, 3)
    off = off[np.sum((np.maximum(np.abs(off) - 1, 0) * B * sp.min()) ** 2, axis=1) <= radius_mm**2]
    nb = np.ceil(shape_ijk / B).astype(int)
    cand = (blocks[:, None, :] + off[None]).reshape(-1, 3)
    cand = cand[np.all((cand >= 0) & (cand < nb), axis=1)]
    keys = np.unique(np.ravel_multi_index(cand.T, nb))
    cand = np.stack(np.unravel_index(keys, nb), axis=1)
    inner = np.stack(np.meshgrid(*(np.arange(B),) * 3, indexing="ij"), -1).reshape(-1, 3)
    vox = (cand[:, None, :] * B + inner[None]).reshape(-1, 3)
    vox = vox[np.all(vox < shape_ijk, axis=1)]
    xyz = org + vox * sp
    dist, nearest = cKDTree(points).query(xyz, distance_upper_bound=radius_mm)
    keep = np.isfinite(dist)
    return vox[keep][:, ::-1], dist[keep].astype(np.float32), nearest[keep]


@dataclass
class ArrayFields:
    """Sparse fields on the band voxels ``kji`` around the array (fractions are 0..1)."""

    kji: np.ndarray
    dist: np.ndarray  # distance to the centre line, mm
    radius: np.ndarray  # carrier radius at the nearest centre-line point, mm
    contact: np.ndarray  # platinum fraction of contacts
    metal: np.ndarray  # platinum fraction of contacts and wires
    silicone: np.ndarray  # carrier fraction not taken by metal


def array_fields(grid: ScanGrid, path: ArrayPath, *, band_mm: float) -> ArrayFields:
    """Partial-volume fractions of contacts, wires and silicone around the array.

    Fractions use a one-voxel linear ramp of the signed distance, so a voxel is at least half
    platinum exactly when its centre lies inside a contact.
    """
    kji, dist, near = band_voxels(grid, path.points, band_mm)
    h = grid.h
    s = path.s[near]
    R = path.radius[near].astype(np.float32)
    j = np.clip(np.searchsorted(path.contacts_s, s), 1, len(path.contacts_s) - 1)
    ds = np.minimum(np.abs(s - path.contacts_s[j - 1]), np.abs(s - path.contacts_s[j]))
    d_ax = (ds - path.contact_len_mm / 2).astype(np.float32)
    d_rad = dist - np.minimum(R, np.float32(path.contact_radius_mm))
    outside = np.sqrt(np.maximum(d_ax, 0) ** 2 + np.maximum(d_rad, 0) ** 2)
    sdf = np.minimum(np.maximum(d_ax, d_rad), 0) + outside
    contact = np.clip(0.5 - sdf / h, 0, 1).astype(np.float32)
    carrier = np.clip(0.5 - (dist - R) / h, 0, 1).astype(np.float32)
    wires = path.wire_fraction[near].astype(np.float32) * carrier
    metal = contact + wires * (1 - contact)
    silicone = np.clip(carrier - metal, 0, 1)
    return ArrayFields(kji, dist, R, contact, metal, silicone)
