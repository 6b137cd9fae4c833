"""The round window measured on the image: where the bone around the array ends.

Inside the cochlea the array lies in a scala walled by the otic capsule, so a shell 1.2-2 mm
around it is bone nearly all round; through the round window it passes into the middle ear (air,
a soft-tissue seal, the drilled facial recess), and the shell's bone fraction falls. The entry is
the point of the track where that fraction falls most over a window either side: a measurement on
the scan, where the curvature rule of :mod:`.frame` reads only the shape of the track (and a
perimodiolar array's straight stretch, or a lead that keeps curving, moves it by millimetres).

Bone is taken as denser than ``BONE_HU``, mapped to the scan's own grey values by the air and
soft-tissue levels (:mod:`cochseg3d.greylevels`), so uncalibrated scans read the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cochseg3d.contacts.centreline import cumulative_arc

SHELL_MM = (1.2, 1.6, 2.0)  # outside the metal's bloom, inside the otic capsule's wall
SHELL_DIRECTIONS = 16
BONE_HU = 500.0  # between soft tissue (~30) and the otic capsule (1000-2000)
WINDOW_MM = 1.5
#: the fall that counts as leaving the bone: half the shell, from a shell that was mostly bone
MIN_FALL = 0.3
MIN_INSIDE = 0.7
#: how far a track that ends inside the bone is continued along its spiral to find the bone's end
#: (a label that stops at its last contact ends up to ~8 mm short of the round window; 5, 8 and 11
#: were tried on development model contacts, seeds 989800+)
EXTEND_MM = 11.0


@dataclass(frozen=True)
class BoneEntry:
    """The track index where the bone ends (None: no clear fall), its fall and the profile."""

    index: int | None
    fall: float
    inside: float
    profile: np.ndarray

    @property
    def evidence(self) -> str:
        if self.index is None:
            return f"no clear end of the bone around the array (largest fall {self.fall:.2f})"
        return (f"the bone around the array falls from {self.inside:.0%} to {self.inside - self.fall:.0%} "
                f"of a {SHELL_MM[0]}-{SHELL_MM[-1]} mm shell")


def _normals(track: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.gradient(track, axis=0)
    t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-12
    ref = np.where(np.abs(t[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    u = np.cross(t, ref)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u, np.cross(t, u)


def bone_profile(image, track: np.ndarray, bone_grey: float) -> np.ndarray:
    """Per track sample, the fraction of its shell denser than ``bone_grey`` (the image's units)."""
    u, v = _normals(track)
    ang = np.linspace(0.0, 2 * np.pi, SHELL_DIRECTIONS, endpoint=False)
    ring = np.cos(ang)[None, :, None] * u[:, None] + np.sin(ang)[None, :, None] * v[:, None]
    pts = np.concatenate([track[:, None] + r * ring for r in SHELL_MM], axis=1)
    kji = image.lps_to_index(pts.reshape(-1, 3))[:, ::-1].T
    vals = ndimage.map_coordinates(np.asarray(image.array, np.float32), kji, order=1, mode="nearest")
    return (vals.reshape(pts.shape[:2]) > bone_grey).mean(axis=1)


def bone_entry(image, track: np.ndarray, levels=None, before: int | None = None) -> BoneEntry:
    """Where the bone around ``track`` (apex -> base, LPS mm, ~0.1 mm steps) ends.

    Args:
        image: the scan (:class:`cochseg3d.Volume`, HU or grey values as stored).
        track: the array's dense centreline, apex -> base, running on out of the cochlea.
        levels: the image's :class:`cochseg3d.greylevels.GreyLevels` (measured when None).
        before: the fall sought is the last one that starts apical of this index (the entry the
            track's shape gives): further out the lead crosses the mastoid's bone and air, and
            near the apex the shell can reach into the next turn's fluid. None: the first fall.
    """
    from cochseg3d.greylevels import measure

    levels = measure(image) if levels is None else levels
    b = bone_profile(image, track, levels.from_hu(BONE_HU))
    s = cumulative_arc(track)
    c = np.concatenate([[0.0], np.cumsum(0.5 * (b[1:] + b[:-1]) * np.diff(s))])  # integral of b along s

    def mean_over(a, z):
        return (np.interp(z, s, c) - np.interp(a, s, c)) / np.maximum(z - a, 1e-9)

    ok = (s >= s[0] + WINDOW_MM) & (s <= s[-1] - WINDOW_MM)
    before_mean, after_mean = mean_over(s - WINDOW_MM, s), mean_over(s, s + WINDOW_MM)
    fall = np.where(ok, before_mean - after_mean, -np.inf)
    clear = ok & (fall >= MIN_FALL) & (before_mean >= MIN_INSIDE)
    starts = np.flatnonzero(clear & ~np.concatenate([[False], clear[:-1]]))
    if before is not None:
        starts = starts[starts < before]
    if not starts.size:
        j = int(np.argmax(fall)) if ok.any() else 0
        return BoneEntry(None, float(max(fall[j], 0.0)), float(before_mean[j]), b)
    start = int(starts[0] if before is None else starts[-1])
    stop = start + int(np.argmin(clear[start:])) if not clear[start:].all() else len(clear)
    j = start + int(np.argmax(fall[start:stop]))
    return BoneEntry(j, float(fall[j]), float(before_mean[j]), b)


def tangent_line(point: np.ndarray, direction: np.ndarray, mm: float = WINDOW_MM, step_mm: float = 0.1) -> np.ndarray:
    """Points ``step_mm`` apart running ``mm`` on from ``point`` along the unit ``direction``."""
    return point + np.outer(np.arange(1, int(round(mm / step_mm)) + 1) * step_mm, direction)


def exit_fall(image, spiral: np.ndarray, bone_grey: float, start: int) -> BoneEntry:
    """Where, past ``start``, leaving ``spiral`` (apex -> base, 0.1 mm steps) along its tangent leaves
    the bone: the largest fall in the first clear run; ``index`` None when none is clear.

    Before each candidate exit the shell is read along the spiral, after it along the tangent: the
    array runs on straight out of the cochlea, where the spiral would curve on into its wall.
    """
    b = bone_profile(image, spiral, bone_grey)
    s = cumulative_arc(spiral)
    best, best_fall, best_inside, run = None, 0.0, 0.0, False
    for k in range(max(start, 1), len(spiral)):
        t = spiral[k] - spiral[k - 1]
        t /= np.linalg.norm(t) + 1e-12
        inside = float(b[(s > s[k] - WINDOW_MM) & (s <= s[k])].mean())
        fall = inside - float(bone_profile(image, tangent_line(spiral[k], t), bone_grey).mean())
        clear = fall >= MIN_FALL and inside >= MIN_INSIDE
        if clear and fall > best_fall:
            best, best_fall, best_inside = k, fall, inside
        if run and not clear:
            break  # further on, the spiral is no longer the array's
        run = run or clear
    return BoneEntry(best, best_fall, best_inside, b)
