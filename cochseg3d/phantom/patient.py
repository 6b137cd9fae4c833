"""The painted patient: the ear frame, the anatomy (bone, air, labyrinth, cochlea) and the implant.

Painting order matters (later wins) and so does the order of the random draws: both are those of
:func:`.generate.generate_patient` and must stay so for phantoms to stay bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import anatomy as an
from . import placement as pm
from .implant import ArrayFields, ArrayPath, array_fields
from .params import LABEL_BAND_MM

def ear_frame(p: dict) -> tuple[np.ndarray, np.ndarray]:
    """(C, E): cochlea centre (LPS) and the ear frame's columns (lateral, anterior, superior) in LPS."""
    lat = np.array([1.0 if p["side"] == "left" else -1.0, 0, 0])
    E = np.stack([lat, [0, -1.0, 0], [0, 0, 1.0]], axis=1)
    yaw, pitch, roll = np.radians(p["head_rotation_deg"])
    R = an.rotation([0, 0, 1], yaw) @ an.rotation([1, 0, 0], pitch) @ an.rotation([0, 1, 0], roll)
    c = np.array(p["cochlea_position_lps_mm"], float)
    c[0] = abs(c[0]) * (1 if p["side"] == "left" else -1)
    return c, R @ E


@dataclass
class EarFrame:
    """The ear frame: cochlea centre ``C`` (LPS mm) and axes ``E`` (columns lateral, anterior, superior)."""

    C: np.ndarray
    E: np.ndarray
    skull_scale: float

    def ear(self, v) -> np.ndarray:
        """LPS point of ear-frame coordinates ``v`` (mm lateral, anterior, superior of the cochlea)."""
        return self.C + self.E @ np.asarray(v, float)

    def far(self, v) -> np.ndarray:
        """As :meth:`ear` for structures away from the labyrinth, which scale with the skull."""
        return self.C + self.E @ (np.asarray(v, float) * self.skull_scale)

    def rows(self, rows) -> np.ndarray:
        """Ear-frame unit vectors (rows) in LPS."""
        return np.asarray(rows, float) @ self.E.T



@dataclass
class Anatomy:
    coch: an.Cochlea
    rw: np.ndarray  # round window (LPS mm)
    u_me: float  # lateral coordinate of the middle ear's centre (ear frame, mm)
    cav: np.ndarray  # mastoid cavity centre (ear frame, mm, before skull scaling)


def paint_anatomy(P: an.Painter, p: dict, f: EarFrame, rng: np.random.Generator) -> Anatomy:
    """Bone, air spaces, labyrinth, vessels and the cochlea, in painting order (later wins)."""
    grid = P.grid
    tex = an.smooth_field(grid.shape, grid.spacing_mm, scale_mm=1.6, rng=rng)
    lumpy = (an.smooth_field(grid.shape, grid.spacing_mm, scale_mm=5.0, rng=rng), 1.5)  # irregular outlines

    def bone(base):
        return lambda sl: np.float32(base) + np.float32(120) * tex[sl]

    _temporal_bone(P, p, f, bone, lumpy)
    _mastoid_cells(P, p, f, tex, rng)
    coch = _cochlea(p, f)
    # otic capsule of the vestibule and canals: dense bone blending into the petrous bone (the
    # cochlea's own capsule follows its canal, below)
    P.ellipsoid(f.ear([1.0, -8.0, 4.5]), f.rows(np.eye(3)), [6.5, 7.5, 7.0], bone(p["hu"]["capsule"]), an.CAPSULE,
                soft_mm=1.5, jitter=(lumpy[0], 0.6), only=(an.BONE, an.SOFT))
    u_prom, u_me, rw = _middle_ear(P, p, f, coch, lumpy)
    cav = _mastoidectomy(P, p, f, u_me)
    _labyrinth(P, p, f, coch)
    _vessels_and_nerve(P, p, f, u_prom)
    an.paint_cochlea(P, coch, fluid_hu=p["hu"]["fluid"], modiolus_hu=p["hu"]["modiolus"],
                     capsule=bone(p["hu"]["capsule"]), capsule_mm=p["capsule_mm"])
    return Anatomy(coch, rw, u_me, cav)


def _temporal_bone(P: an.Painter, p: dict, f: EarFrame, bone, lumpy) -> None:
    """Petrous, squamous and mastoid bone; the middle and posterior cranial fossae, the sigmoid sinus."""
    hu, far, rows_ear, I = p["hu"], f.far, f.rows, np.eye(3)
    pr = an.frame_from_axis([0, 0, 1], np.array([-0.7, 0.7, 0.0]))  # petrous ridge runs antero-medially
    P.ellipsoid(far([-4, 2, -1]), rows_ear(pr), [15, 30, 12], bone(hu["bone"]), an.BONE, jitter=lumpy)
    P.ellipsoid(far([10, -2, 0]), rows_ear(I), [16, 14, 13], bone(hu["bone"]), an.BONE, jitter=lumpy)
    P.ellipsoid(far([13, -14, -3]), rows_ear(I), [15, 15, 17], bone(hu["bone"]), an.BONE, jitter=lumpy)
    P.ellipsoid(far([0, 5, 36]), rows_ear(I), [45, 45, 26], hu["soft"], an.SOFT, jitter=lumpy)
    P.ellipsoid(far([-19, -23, -2]), rows_ear(I), [15, 17, 25], hu["soft"], an.SOFT, jitter=lumpy)
    P.capsule(far([9, -25, 10]), far([3, -15, -15]), 4.0, hu["soft"] + 10, an.SOFT)


def _mastoid_cells(P: an.Painter, p: dict, f: EarFrame, tex, rng: np.random.Generator) -> None:
    """Mastoid air cells: Worley cells (2.5-5 mm) with thin bony septa, a drawn fraction aerated."""
    hu, grid, rows_ear, I = p["hu"], P.grid, f.rows, np.eye(3)
    pc = f.far([12, -12, 0])
    pr_ = np.array([13.0, 13.0, 14.0])
    half_pc = np.sqrt(((pr_[:, None] * rows_ear(I)) ** 2).sum(axis=0)) + 2 * grid.h  # the ellipsoid's own box
    wc = an.worley_cells(grid, pc, half_pc, cell_mm=p["air_cell_mm"], coarse_mm=0.7, rng=rng)
    if wc is not None:
        _, gap, cell = wc
        aerated = rng.random(int(cell.max()) + 1) < p["pneumatisation"]

        def aircells(sl):
            air = aerated[cell] & (gap > np.float32(p["septum_mm"]))
            return np.where(air, np.float32(hu["air"]), np.float32(hu["bone"]) + 150 * tex[sl])

        P.ellipsoid(pc, rows_ear(I), pr_, aircells, an.BONE, only=(an.BONE,))
    P.tissue[(P.tissue == an.BONE) & (P.hu < -300)] = an.AIR


def _cochlea(p: dict, f: EarFrame):
    """The cochlear spiral: modiolar axis ~52 deg from left-right, tilted inferiorly; e1 towards the RW."""
    a = np.radians(p["axis_to_lr_deg"])
    b = np.radians(p["axis_inferior_tilt_deg"])
    axis_ear = np.array([np.cos(a), np.sin(a) * np.cos(b), -np.sin(a) * np.sin(b)])
    rows_c_ear = an.frame_from_axis(axis_ear, np.array([0.35, -0.8, -0.5]))
    sense = 1.0 if rows_c_ear[1][1] >= 0 else -1.0  # the basal turn heads anteriorly from the RW
    return an.cochlea_spiral(f.C, f.rows(rows_c_ear), sense, a_value_mm=p["a_value_mm"], turns=p["turns"],
                             height_mm=p["cochlea_height_mm"], canal_base_mm=p["canal_base_mm"],
                             canal_apex_mm=p["canal_apex_mm"])


def _middle_ear(P: an.Painter, p: dict, f: EarFrame, coch, lumpy) -> tuple[float, float, np.ndarray]:
    """Middle ear, attic, ossicles, external canal, tympanic membrane, round-window niche;
    returns the promontory's and the middle ear's lateral offsets and the round window."""
    hu, ear, rows_ear, C, E, I = p["hu"], f.ear, f.rows, f.C, f.E, np.eye(3)
    # where the lateral wall of the basal turn bulges into the middle ear (promontory)
    th = np.linspace(0, 2 * np.pi, 200)
    lw = (coch.point(th, coch.r_lateral(th)) - C) @ E
    u_prom = float(lw[:, 0].max() + coch.canal_base_mm * 0.2)
    u_me = u_prom + 0.8 + 2.0
    rw = coch.point(0.0, coch.r_lateral(0.0) - coch.canal_base_mm)[0]
    rw_ear = (rw - C) @ E
    P.ellipsoid(ear([u_me, 0.5, 0.5]), rows_ear(I), [p["middle_ear_halfwidth_mm"], 6.5, 7.0], hu["air"], an.AIR,
                jitter=(lumpy[0], 0.5))
    P.ellipsoid(ear([u_me + 0.5, -1.0, 6.0]), rows_ear(I), [3.0, 4.0, 3.0], hu["air"], an.AIR)
    P.ellipsoid(ear([u_me + 1.0, -2.0, 5.5]), rows_ear(I), [1.2, 1.5, 1.5], hu["ossicle"], an.BONE)
    P.ellipsoid(ear([u_me + 1.2, 0.5, 6.0]), rows_ear(I), [1.1, 1.1, 1.6], hu["ossicle"], an.BONE)
    P.capsule(ear([u_me + 1.2, 0.5, 5.0]), ear([u_me + 2.6, 0.8, 0.5]), 0.45, hu["ossicle"], an.BONE)
    P.capsule(ear([u_me + 3.5, 0.5, 0.0]), ear([u_me + 40, 1.5, -2.0]), p["eac_radius_mm"], hu["air"], an.AIR)
    P.ellipsoid(ear([u_me + 3.0, 0.5, 0.0]), rows_ear(an.frame_from_axis([0.3, 0.1, 0.95], [0, 1, 0])),
                [4.5, 4.5, 0.15], hu["soft"], an.SOFT)
    # round-window niche: from the basal turn at theta=0 out to the middle ear
    P.capsule(rw, ear([u_me - 1.0, rw_ear[1] - 0.5, rw_ear[2]]), 0.8, hu["air"], an.AIR)
    return u_prom, u_me, rw


def _mastoidectomy(P: an.Painter, p: dict, f: EarFrame, u_me: float) -> np.ndarray:
    """The mastoid cavity and posterior tympanotomy (when drawn); returns the cavity's centre (ear frame)."""
    hu = p["hu"]
    cav = np.array([13.0, -12.0, 3.0]) + np.asarray(p["lead_jitter_mm"])[1] * 0.5
    if p["mastoidectomy"]:
        fill = hu["air"] if p["cavity_fill"] == "air" else hu["fluid"] + 20
        ftis = an.AIR if p["cavity_fill"] == "air" else an.SOFT
        P.ellipsoid(f.far(cav), f.rows(np.eye(3)), np.array([6.5, 7.5, 6.5]) * p["cavity_scale"], fill, ftis)
        P.capsule(f.ear([u_me + 0.8, -4.5, 0.5]), f.far(cav), 1.5, hu["air"], an.AIR)
    return cav


def _labyrinth(P: an.Painter, p: dict, f: EarFrame, coch) -> None:
    """Labyrinth fluid: vestibule, semicircular canals (~6.5 mm loops, 0.9 mm lumen), internal auditory canal."""
    hu, ear, rows_ear = p["hu"], f.ear, f.rows
    P.ellipsoid(ear([1.5, -5.5, 2.0]), rows_ear(np.eye(3)), [1.6, 2.4, 2.0], hu["fluid"], an.FLUID)
    for centre, normal, ref, major in (([2.5, -8.5, 4.0], [0, 0.5, 0.87], [1, 0, 0], 3.2),
                                       ([-0.5, -6.0, 7.5], [-0.7, 0.7, 0], [0, 0, 1], 3.3),
                                       ([0.5, -10.5, 3.0], [0.7, 0.7, 0], [0, 0, 1], 3.1)):
        P.torus(ear(centre), rows_ear(an.frame_from_axis(normal, ref)), major, 0.45, hu["fluid"], an.FLUID)
    iac0 = f.C - coch.rows[2] * (coch.canal_base_mm + 0.3 + p["iac_radius_mm"])  # fundus below the basal turn
    P.capsule(iac0, iac0 - coch.rows[2] * 10.0, p["iac_radius_mm"], hu["fluid"], an.FLUID)


def _vessels_and_nerve(P: an.Painter, p: dict, f: EarFrame, u_prom: float) -> None:
    """The carotid, the jugular bulb and the facial nerve."""
    hu, ear, far = p["hu"], f.ear, f.far
    P.capsule(far([-3, 7, -16]), far([-5, 9, -3]), 2.6, hu["soft"] + 10, an.SOFT)
    P.capsule(far([-5, 9, -3]), far([-12, 14, -1]), 2.6, hu["soft"] + 10, an.SOFT)
    P.ellipsoid(far([1, -6, -10]), f.rows(np.eye(3)), [4.5, 5.0, 4.0], hu["soft"] + 10, an.SOFT)
    P.capsule(ear([u_prom + 0.6, 3, 4]), ear([u_prom + 0.8, -5, 3.5]), 0.7, hu["soft"], an.SOFT)
    P.capsule(ear([u_prom + 0.8, -5, 3.5]), ear([u_prom + 2.5, -7.5, -14]), 0.75, hu["soft"], an.SOFT)


def place_implant(P: an.Painter, p: dict, f: EarFrame, anat: Anatomy, model,
                   plc: pm.Placement) -> tuple[ArrayPath, ArrayFields]:
    """The array path (AID clipped to the cochlea, stored back in ``p``) and its fields in the volume."""
    hu = p["hu"]
    jit = np.asarray(p["lead_jitter_mm"])
    lead_pts = [f.ear(np.array([anat.u_me + 0.8, -5.0, 0.5]) + jit[0] * 0.3), f.far(anat.cav + jit[1] * 0.6),
                f.far(np.array([30.0, -30.0, 24.0]) + jit[2] * 2)]
    path, p["aid_deg"] = pm.build(plc, anat.coch, model, p["aid_deg"], lead_pts)
    if not p["mastoidectomy"]:  # the lead runs in a drilled groove through the mastoid
        outer = path.points[path.s > path.s_round_window + 3.0][::20]
        for a0, a1 in zip(outer[:-1], outer[1:]):
            P.capsule(a0, a1, 0.9, hu["soft"], an.SOFT)
    P.ellipsoid(anat.rw, f.rows(np.eye(3)), [1.0, 1.0, 1.0], hu["soft"], an.SOFT)  # fascia plug at the RW
    band_mm = float(path.radius.max() + LABEL_BAND_MM + 0.2)
    fld = array_fields(P.grid, path, band_mm=band_mm)
    if len(fld.dist) == 0:  # the array lies outside this field of view: keep one inert voxel
        fld = ArrayFields(np.zeros((1, 3), int), np.full(1, 99.0, np.float32), np.ones(1, np.float32),
                          *(np.zeros(1, np.float32) for _ in range(3)))
    k, j, i = fld.kji.T
    keep = 1.0 - fld.metal - fld.silicone  # metal and carrier displace the tissue
    P.hu[k, j, i] = P.hu[k, j, i] * keep + fld.silicone * np.float32(hu["silicone"])
    P.tissue[k, j, i] = np.where(fld.contact >= 0.5, an.METAL,
                                 np.where(fld.silicone >= 0.5, an.SILICONE, P.tissue[k, j, i]))
    return path, fld
