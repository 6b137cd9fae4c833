"""The contact finder's calibration: measured tables, switches and tuned numbers, as data.

The shipped file (``calibration.json`` beside this module) was measured on calibration phantoms
(seeds 800000-800239, never used for training or the held-out tests) segmented by the shipped
model; ``scripts/calibrate_contacts.py --out FILE`` measures the tables again (on other phantoms
or on scans of your scanner with known contacts) and ``cochseg3d segment --calibration FILE``
uses the result. The file::

    {"version": 1, "source": {...},
     "band_to_first_mm": {name: mm}, "band_to_last_mm": {name: mm}, "radial_offset_mm": {model: mm},
     "bloom": {"slope_first", "slope_last", "ref_mm"}, "switches": {name: bool}, "constants": {name: number}}

What every entry means, and the evidence it was chosen on, is in :class:`Calibration`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1
#: the file's entries that group others
_GROUPS = ("bloom", "switches", "constants")
DEFAULT_PATH = Path(__file__).with_name("calibration.json")


class CalibrationError(ValueError):
    """A calibration file that cannot be read (the message names the file and the problem)."""


def _entry(key: str, kind: type, default: Any = None):
    """A field read from the file's entry at dotted ``key`` (e.g. ``"bloom.ref_mm"``); an entry
    added after files were written has a ``default`` for the files that lack it."""
    return field(metadata={"key": key, "kind": kind, "default": default})


@dataclass(frozen=True)
class Calibration:
    """Everything the contact finder tunes. Lengths in mm along the array's centreline.

    Tables (by model, else vendor, else ``"default"``), measured by scripts/calibrate_contacts.py:

    Attributes:
        band_to_first_mm: band start -> first contact centre at the reference bloom; medians over
            the calibration phantoms, per model where it had 4 or more cases with a measurable end
            (median absolute deviation 0.05-0.17 mm). They depend on the scanner's blur and the
            contacts' length. Of MED-EL's arrays only FLEX20 (1.4 mm pitch) merges.
        band_to_last_mm: last contact centre -> band end (the band runs on along its wires).
        radial_offset_mm: how far the label's centreline runs inside the array's spiral, by model
            (the modiolar wall beside a perimodiolar array blooms into the label; kept where 0.02
            mm or more; negative: outside). The centreline is moved out by it first.
        bloom_slope_first / bloom_slope_last: growth of the two band-end distances per mm of
            bloom (the label's half-width at the apex) above ``bloom_ref_mm``; pooled over models
            (split-half, out of sample: 0.148 -> 0.146 mm).

    Switches (each one a strategy; on in the shipped file):
        refine_pitch: move a comb's contacts to their intensity centroid (pitch >=
            ``refine_pitch_min_mm`` or a layout assumed, not named).
        anchor_to_band: place a merged array's first contact from where its band begins (else
            from the label's tip).
        blob_completion: add separate contacts the centreline missed from the label's blobs.
        saturated_dips: separate contacts whose saturated tops give no peaks are placed between
            the profile's dips (held-out FLEX24 case 0.234 -> 0.132 mm).
        blind_blobs: no electrode named, no peaks nor gaps: about 12 alike blobs a MED-EL pitch
            apart name MED-EL (calibration phantoms: 2 arrays found, recall 0.0 / 0.42 -> 1.0).
        apex_turn: the centreline's apical extension turns as its last ``turn_mm`` turned (a
            straight one cut across perimodiolar apices; 0.155 -> 0.151 mm).
        apex_track: track on past the skeleton's bright run by up to ``apex_track_mm`` (split
            half: 0.156 -> 0.149 mm; longer tracks overshoot tight apical curls).
        chain_order: contacts taken from blobs more than half a pitch off the centreline extend the
            chain at its nearer end instead of going by their nearest centreline sample (which lies
            across the spiral beyond a cut-short centreline's apex: every later contact is named
            wrong). Shipped off: on the decision sets it helped cross_fast (named arrays with every
            contact right 12 -> 15) and hurt cross_rtk (misnamed 0.21 -> 0.26); with
            ``apex_inside_ratio`` 0.85 it helped all three but hurt final_rtk out of sample
            (BENCHMARKS "Arrays named from the wrong end").

    Constants (chosen on the calibration phantoms):
        comb_window: how far (fraction of a pitch) a comb may shift to follow the profile.
        anchored_comb_window: the same around a band-anchored place: none (saturation leaves no
            ripple to phase on; searching made the held-out error worse).
        curve_smooth_mm: the centreline spline's smoothing length.
        refine_separate_iterations: centroid steps for separate contacts (a mean shift: MED-EL
            0.113 -> 0.106 mm); merged ones once (neighbours' blur pulls further each step).
        refine_pitch_min_mm: smallest comb pitch whose contacts are refined.
        bright_fraction: skeleton points this far from its dim to its bright level are contacts.
        apical_extension_mm / basal_extension_mm: the profile sampled on past the label's ends
            (a label ending just past the last contact would otherwise never show the band's end).
        band_head_mm: the profile's first stretch whose minimum is the band's low level.
        band_level: fraction of the way from that low level to the plateau marking the band.
        band_ends_mm: band start -> first plus last contact -> band end, about.
        band_gap_mm: a dip below the band's level shorter than this is a gap inside the band.
        pitch_scale_range: how far (fraction) the array's centreline length may differ from the
            datasheet's.
        blind_length_fit: no electrode named: how closely (fraction) a layout's length must match
            the band's (Cochlear called AB loses 6 of 22 contacts; 15 truth-label phantoms: recall
            0.93 at 0.02, 1.00 at 0.08).
        blind_dips: no electrode named: a layout of >= 1 mm pitch is taken from the gaps between
            contacts whose spacings average within this fraction of its pitch (0: off;
            0.172 -> 0.168 mm blind).
        separate_pitch_mm: pitch from which contacts show separately at CBCT resolution.
        max_separate_contacts: most contacts a blind search adds (MED-EL's 12).
        blob_level: blob threshold, fraction from the label's 10th to its 99.5th percentile.
        curl_mm: arc length over which an end's curl is measured.
        apex_track_mm: see ``apex_track``.
        turn_mm: see ``apex_turn``.
        apex_extend_mm: longest apical extension inside the label.
        apex_inside_ratio: the found contacts are turned round (last first) when their last lies
            nearer their centroid than this fraction of the first's distance: the apex is the end
            inside the spiral (0: never; shipped off). 0.85, chosen on the decision sets
            (held_out_final, cross_fast, cross_rtk; shipped model), took all-right named arrays
            28 -> 30, 15 -> 16, 6 -> 7 there, but out of sample it helped the fast CT model's
            final_fast and held_out_confirm and hurt itk-rtk's final_rtk (one array turned the
            wrong way round): a rule for one simulator only, so off (BENCHMARKS "Arrays named from
            the wrong end").
        source: where the file came from (seeds, model, date); not used by the finder.
        version: the file format's version.
    """

    band_to_first_mm: Mapping[str, float] = _entry("band_to_first_mm", dict)
    band_to_last_mm: Mapping[str, float] = _entry("band_to_last_mm", dict)
    radial_offset_mm: Mapping[str, float] = _entry("radial_offset_mm", dict)
    bloom_slope_first: float = _entry("bloom.slope_first", float)
    bloom_slope_last: float = _entry("bloom.slope_last", float)
    bloom_ref_mm: float = _entry("bloom.ref_mm", float)
    refine_pitch: bool = _entry("switches.refine_pitch", bool)
    anchor_to_band: bool = _entry("switches.anchor_to_band", bool)
    blob_completion: bool = _entry("switches.blob_completion", bool)
    saturated_dips: bool = _entry("switches.saturated_dips", bool)
    blind_blobs: bool = _entry("switches.blind_blobs", bool)
    apex_turn: bool = _entry("switches.apex_turn", bool)
    apex_track: bool = _entry("switches.apex_track", bool)
    chain_order: bool = _entry("switches.chain_order", bool, default=False)
    comb_window: float = _entry("constants.comb_window", float)
    anchored_comb_window: float = _entry("constants.anchored_comb_window", float)
    curve_smooth_mm: float = _entry("constants.curve_smooth_mm", float)
    refine_separate_iterations: int = _entry("constants.refine_separate_iterations", int)
    refine_pitch_min_mm: float = _entry("constants.refine_pitch_min_mm", float)
    bright_fraction: float = _entry("constants.bright_fraction", float)
    apical_extension_mm: float = _entry("constants.apical_extension_mm", float)
    basal_extension_mm: float = _entry("constants.basal_extension_mm", float)
    band_head_mm: float = _entry("constants.band_head_mm", float)
    band_level: float = _entry("constants.band_level", float)
    band_ends_mm: float = _entry("constants.band_ends_mm", float)
    band_gap_mm: float = _entry("constants.band_gap_mm", float)
    pitch_scale_range: float = _entry("constants.pitch_scale_range", float)
    blind_length_fit: float = _entry("constants.blind_length_fit", float)
    blind_dips: float = _entry("constants.blind_dips", float)
    separate_pitch_mm: float = _entry("constants.separate_pitch_mm", float)
    max_separate_contacts: int = _entry("constants.max_separate_contacts", int)
    blob_level: float = _entry("constants.blob_level", float)
    curl_mm: float = _entry("constants.curl_mm", float)
    apex_track_mm: float = _entry("constants.apex_track_mm", float)
    turn_mm: float = _entry("constants.turn_mm", float)
    apex_extend_mm: float = _entry("constants.apex_extend_mm", float)
    apex_inside_ratio: float = _entry("constants.apex_inside_ratio", float, default=0.0)
    source: Mapping[str, Any] = field(default_factory=dict, compare=False)
    version: int = VERSION

    def __post_init__(self) -> None:
        # tables read-only, like the rest of a frozen calibration
        for name in ("band_to_first_mm", "band_to_last_mm", "radial_offset_mm", "source"):
            object.__setattr__(self, name, types.MappingProxyType(dict(getattr(self, name))))

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Calibration":
        """The calibration in ``path`` (default: the file shipped with the package).

        Raises:
            CalibrationError: missing or unreadable file, not JSON, wrong version, a missing,
                unknown or mistyped entry; the message names the file.
        """
        if path is None:
            return _shipped()
        return cls._read(Path(path))

    @classmethod
    def _read(cls, path: Path) -> "Calibration":
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise CalibrationError(f"calibration {path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CalibrationError(f"calibration {path}: cannot be read ({exc})") from None
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"calibration {path}: not JSON ({exc})") from None
        try:
            return cls.from_dict(doc)
        except CalibrationError as exc:
            raise CalibrationError(f"calibration {path}: {exc}") from None

    @classmethod
    def from_dict(cls, doc: Any) -> "Calibration":
        """A calibration from the file's JSON content (see the module's docstring).

        Raises:
            CalibrationError: wrong version, a missing, unknown or mistyped entry.
        """
        if not isinstance(doc, dict):
            raise CalibrationError("not a JSON object")
        if doc.get("version") != VERSION:
            raise CalibrationError(f"version {doc.get('version')!r}; this cochseg3d reads version {VERSION}")
        values: dict[str, Any] = {"source": doc.get("source") or {}}
        keys = {"version", "source"}
        for f in dataclasses.fields(cls):
            if "key" in f.metadata:
                values[f.name] = _typed(_lookup(doc, f.metadata["key"], f.metadata["default"]), f.metadata["kind"],
                                        f.metadata["key"])
                keys.add(f.metadata["key"])
        present = {f"{k}.{sub}" if isinstance(v, dict) and k in _GROUPS else k
                   for k, v in doc.items() for sub in (v if isinstance(v, dict) and k in _GROUPS else [None])}
        unknown = present - keys
        if unknown:
            raise CalibrationError(f"unknown entr{'ies' if len(unknown) > 1 else 'y'} {', '.join(sorted(unknown))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON content (:meth:`from_dict` reads it back)."""
        doc: dict[str, Any] = {"version": self.version, "source": dict(self.source)}
        for f in dataclasses.fields(self):
            if "key" in f.metadata:
                value = getattr(self, f.name)
                *groups, name = f.metadata["key"].split(".")
                node = doc
                for g in groups:
                    node = node.setdefault(g, {})
                node[name] = dict(value) if isinstance(value, Mapping) else value
        return doc

    def replace(self, **changes: Any) -> "Calibration":
        """A copy with some entries changed (e.g. ``radial_offset_mm={}``)."""
        return dataclasses.replace(self, **changes)


def _lookup(doc: dict, key: str, default: Any = None) -> Any:
    node: Any = doc
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not None:
                return default
            raise CalibrationError(f"missing {key!r}")
        node = node[part]
    return node


def _typed(value: Any, kind: type, key: str) -> Any:
    if kind is dict:
        ok = isinstance(value, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values())
        if not ok:
            raise CalibrationError(f"{key!r} must map names to mm, got {value!r}")
        return {str(k): float(v) for k, v in value.items()}
    if kind is bool:
        if not isinstance(value, bool):
            raise CalibrationError(f"{key!r} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise CalibrationError(f"{key!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return kind(value)


@functools.lru_cache(maxsize=1)
def _shipped() -> Calibration:
    return Calibration._read(DEFAULT_PATH)
