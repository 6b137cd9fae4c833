"""Grey values to HU, measured on the image: air and soft tissue are the references.

CBCT units store grey values that are not calibrated HU: no rescale (HU + 1000 or + 1024 as
unsigned values), an arbitrary offset, a gain a few per cent to tens of per cent off. A model
trained on HU then sees bone where metal should be. Every temporal-bone scan shows two materials
whose HU are known: air (mastoid cells, middle ear, canal, outside the head; -1000 HU) and soft
tissue / fluid (brain, muscle, labyrinth; about +30 HU). Their histogram peaks give the scanner's
``grey = gain * HU + offset`` and so its inverse.

Rules, in order:

* exact-value spikes (the field of view's outside fill, the clipped floor and ceiling) are left
  out: they are constants written by the scanner, not material;
* air is the darkest material, so the lowest clear peak of the smoothed histogram is air when a
  peak lies above it at a distance a gain in ``GAIN_RANGE`` allows; the most prominent such peak is
  soft tissue. The lowest peak may also be tissue (a tight crop, or air clipped at the scanner's
  floor) with bone above it: bone's peak is wider (its texture, not just noise), so a partner that
  much wider, with no third, bone-like peak above it, is not tissue, and the lowest peak is taken
  as tissue (a truncated air peak, clipped at the floor, is narrow: the third peak settles it);
  so is a lowest of only two peaks with voxels well below it (air that heavy noise smeared into no
  peak of its own: nothing real is darker than air);
* with both, gain and offset follow; with tissue only, the gain is taken as 1 and only the offset
  is corrected; with no peak (a flat image), nothing is changed.

On an image already in HU this is the identity to within the references' spread (a few HU).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage, signal

from cochseg3d.volume import Volume

log = logging.getLogger(__name__)

#: HU of the two references
AIR_HU = -1000.0
TISSUE_HU = 30.0
#: gains (grey units per HU) that a scanner may plausibly store; low ones are cupped CBCT (the
#: itk-rtk phantoms' air-to-tissue step is about half of 1030 HU)
GAIN_RANGE = (0.3, 2.0)
#: a peak counts when its prominence is at least this fraction of the histogram's highest peak
_MIN_PROMINENCE = 0.02
#: an exact value holding this fraction of the voxels, far above its neighbours, is a written constant
_SPIKE_FRACTION = 0.002
#: a partner peak this many times wider than the lowest one is bone (texture), not tissue: on
#: phantoms tissue/air width ratios were 0.7-1.05, bone/tissue 1.6-2.9
_BONE_WIDTH_RATIO = 1.4
#: more than this fraction of the voxels three noise widths below the lowest of two peaks: that peak
#: is not air (development draw, seeds 993000+: <= 0.0024 below air, >= 0.027 below tissue over
#: air that heavy noise left without a peak)
_DARKER_FRACTION = 0.01
_MAX_SAMPLES = 2_000_000
_BINS = 512


@dataclass(frozen=True)
class GreyLevels:
    """How an image's grey values relate to HU: ``grey = gain * HU + offset``.

    Attributes:
        gain: grey units per HU.
        offset: grey value of 0 HU.
        air: measured air level (grey units), None when no air peak was found.
        tissue: measured soft-tissue level (grey units), None when none was found.
        method: "air+tissue", "tissue" (offset only) or "none" (left as stored).
    """

    gain: float = 1.0
    offset: float = 0.0
    air: float | None = None
    tissue: float | None = None
    method: str = "none"

    def to_hu(self, array: np.ndarray) -> np.ndarray:
        """float32 HU of ``array`` (grey units)."""
        out = np.asarray(array, dtype=np.float32) - np.float32(self.offset)
        if self.gain != 1.0:
            out /= np.float32(self.gain)
        return out

    def from_hu(self, hu: float) -> float:
        """Grey value of ``hu``."""
        return float(self.gain * hu + self.offset)

    def is_identity(self, tol_hu: float = 1.0) -> bool:
        """True when the mapping moves no value in -1000..2000 HU by more than ``tol_hu``."""
        return abs(self.gain - 1.0) * 2000.0 + abs(self.offset) < tol_hu

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def offset_only(self) -> "GreyLevels":
        """The same levels with the gain taken as 1: only the offset is corrected.

        The measured gain is the air-to-tissue step, which CBCT cupping shrinks (the itk-rtk
        phantoms read ~0.66); dividing by it lifts bone towards metal. The tissue level alone
        fixes a stored offset (HU + 1000 without a rescale) and cupping barely moves it.
        """
        if self.tissue is None:
            return self
        return GreyLevels(1.0, self.tissue - TISSUE_HU, self.air, self.tissue, "tissue")


def _sample(array: np.ndarray) -> np.ndarray:
    flat = np.asarray(array).ravel()
    step = max(1, flat.size // _MAX_SAMPLES)
    v = flat[::step].astype(np.float32, copy=False)
    return v[np.isfinite(v)]


def _drop_spikes(v: np.ndarray) -> np.ndarray:
    """``v`` without exact values that hold far more voxels than the values next to them."""
    vals, counts = np.unique(v, return_counts=True)
    if vals.size < 16:
        return v
    spikes = []
    for i in np.flatnonzero(counts >= _SPIKE_FRACTION * v.size):
        nb = counts[max(0, i - 3):i].tolist() + counts[i + 1:i + 4].tolist()
        if not nb or counts[i] > 5 * max(float(np.median(nb)), 1.0):
            spikes.append(vals[i])
    if not spikes:
        return v
    return v[~np.isin(v, np.asarray(spikes, dtype=v.dtype))]


def _peaks(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak positions, prominences and half-maximum widths (grey units) of ``v``'s smoothed histogram."""
    lo, hi = np.percentile(v, [0.05, 99.95])
    if hi <= lo:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    counts, edges = np.histogram(v, bins=_BINS, range=(float(lo), float(hi)))
    width = (hi - lo) / _BINS
    # smooth over ~15 grey units (a typical HU range), at least two bins
    s = ndimage.gaussian_filter1d(counts.astype(float), max(2.0, 15.0 / max(width, 1e-6)))
    idx, props = signal.find_peaks(s, prominence=_MIN_PROMINENCE * s.max())
    if idx.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    centres = 0.5 * (edges[idx] + edges[idx + 1])
    widths = signal.peak_widths(s, idx, rel_height=0.5)[0] * width
    return centres, props["prominences"], widths


def _darker_than(v: np.ndarray, centre: float, width: float) -> float:
    """Fraction of ``v`` more than three standard deviations (of a peak ``width`` wide) below ``centre``."""
    return float((v < centre - 3.0 * width / 2.355).mean())


def _bone_above(centres: np.ndarray, t: int, span: float) -> bool:
    """A peak lies above peak ``t`` at a bone-like distance (air, tissue and bone all seen)."""
    d = centres[t + 1:] - centres[t]
    return bool(np.any((d >= GAIN_RANGE[0] * span) & (d <= 2.5 * GAIN_RANGE[1] * span)))


def measure(volume: Volume | np.ndarray) -> GreyLevels:
    """The scanner's grey-value mapping measured on ``volume`` (see the module docstring).

    Args:
        volume: a CT / CBCT volume or its array, grey units as stored (after any DICOM rescale).

    Returns:
        The :class:`GreyLevels`; ``method == "none"`` when no peak can be found.
    """
    arr = volume.array if isinstance(volume, Volume) else np.asarray(volume)
    v = _sample(arr)
    if v.size < 64 or float(v.min()) == float(v.max()):
        return GreyLevels()
    n = v.size
    v = _drop_spikes(v)
    if v.size < max(64, 0.5 * n):  # mostly exact constants: a drawn image, not a scan; leave it
        return GreyLevels()
    centres, prom, widths = _peaks(v)
    if centres.size == 0:
        return GreyLevels()
    span = TISSUE_HU - AIR_HU
    above = [i for i in range(1, centres.size)
             if GAIN_RANGE[0] * span <= centres[i] - centres[0] <= GAIN_RANGE[1] * span]
    t = max(above, key=lambda i: prom[i]) if above else None
    if t is not None and widths[t] > _BONE_WIDTH_RATIO * widths[0] and not _bone_above(centres, t, span):
        t = None  # the partner is as wide as bone and nothing bone-like lies above it
    if t is not None and centres.size == 2 and _darker_than(v, centres[0], widths[0]) > _DARKER_FRACTION:
        t = None  # material lies below the lowest peak: it is tissue (air smeared by noise), its partner bone
    if t is None:
        # no air (cropped, or clipped at the floor): the lowest peak is tissue when bone lies
        # above it, else the most prominent one
        tissue = float(centres[0] if above else centres[int(np.argmax(prom))])
        return GreyLevels(1.0, tissue - TISSUE_HU, None, tissue, "tissue")
    air, tissue = float(centres[0]), float(centres[t])
    gain = (tissue - air) / span
    return GreyLevels(gain, tissue - gain * TISSUE_HU, air, tissue, "air+tissue")


def to_hu(volume: Volume, levels: GreyLevels | None = None) -> tuple[Volume, GreyLevels]:
    """``volume`` in HU (float32, same grid) and the levels used; the input is not modified."""
    levels = measure(volume) if levels is None else levels
    if levels.method == "none" or levels.is_identity():
        return volume, levels
    log.debug("grey values -> HU: %s", levels.to_dict())
    return volume.with_array(levels.to_hu(volume.array)), levels
