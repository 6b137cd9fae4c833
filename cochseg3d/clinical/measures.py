"""Per-contact and per-array measures in the cochlear frame (issue 13), and the ``arrays`` record.

Per contact: the angular insertion depth (deg, cumulative from the round window towards the apex
about the modiolar axis, Verbist et al. 2010), the linear depth along the array from the round
window (mm), the distance to the modiolar axis (mm), inside the cochlea (past the round window and
within the fitted spiral's envelope), the characteristic frequency (:mod:`.frequency`). Per array:
the insertion angle (the deepest contact), extracochlear contacts, and flags (fold-over, kink,
out of order), each with its evidence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cochseg3d.clinical.flags import array_flags
from cochseg3d.clinical.frame import CochlearFrame, _r, angles_and_depths, estimate_frame
from cochseg3d.clinical.frequency import organ_of_corti_hz, spiral_ganglion_hz
from cochseg3d.contacts.centreline import cumulative_arc

ENVELOPE_MM = 1.0  # how far outside the fitted spiral a contact still counts as in the scala
_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
#: vendors whose contact 1 is the most basal one (Cochlear Nucleus); MED-EL and AB count from the apex
_BASE_FIRST = ("cochlear",)


def contact_names(n: int, vendor: str | None) -> list[str]:
    """E1..EN in the vendor's numbering for contacts listed apex -> base.

    MED-EL and Advanced Bionics number from the apex (E1 most apical), Cochlear Nucleus from the
    base (E1 most basal, E22 at the tip); an unknown vendor is numbered from the apex.
    """
    if vendor and vendor.replace("-", "").lower() in _BASE_FIRST:
        return [f"E{n - i}" for i in range(n)]
    return [f"E{i + 1}" for i in range(n)]


def vendor_of(info: dict) -> tuple[str | None, str | None]:
    """(vendor, model) from a :class:`Contacts` info dict (the named or assumed electrode)."""
    from cochseg3d.electrodes import VENDORS, find_model

    for key in ("model", "electrode"):
        name = info.get(key)
        if not name:
            continue
        try:
            m = find_model(str(name))
            return m.vendor, m.model
        except ValueError:
            pass
        for v in VENDORS:
            if str(name).replace("-", "").lower() == v.replace("-", "").lower():
                return v, info.get("model")
    return None, info.get("model")


def side_of(frame: CochlearFrame) -> tuple[str | None, str]:
    """Patient side from where the lead runs: it leaves the cochlea laterally (LPS x > 0 is left)."""
    tr, rw = frame.track, frame.round_window_index
    if rw is None or len(tr) - rw < 10:
        return None, "no lead beyond the round window to tell the side"
    s = cumulative_arc(tr[rw:])
    if s[-1] < 2.0:
        return None, "no lead beyond the round window to tell the side"
    dx = float(tr[-1, 0] - tr[rw, 0])
    return ("left" if dx > 0 else "right"), f"the lead runs {abs(dx):.1f} mm to patient {'left' if dx > 0 else 'right'}"


def contact_measures(frame: CochlearFrame, lps_mm: np.ndarray) -> dict[str, np.ndarray]:
    """Angle (deg), depth (mm), distance to the modiolar axis (mm) and inside-the-cochlea per contact."""
    ang, dep = angles_and_depths(frame, lps_mm)
    q = frame.to_local(lps_mm)
    dist = np.hypot(q[:, 0], q[:, 1])
    fit = frame.spiral
    rho, _, w = fit.local(lps_mm)
    # psi of each contact on the fit's scale: the frame's angle plus the round window's psi
    psi_rw = float(fit.psi(frame.track[: frame.round_window_index + 1][::-1])[0])
    psi = np.radians(ang) + psi_rw
    within = (rho <= fit.radius(psi) + ENVELOPE_MM) & (np.abs(w - fit.height(psi)) <= ENVELOPE_MM)
    inside = (dep >= 0.0) & (ang >= 0.0) & within
    return {"angle_deg": ang, "depth_mm": dep, "modiolus_distance_mm": dist, "inside_cochlea": inside}


def measure_array(contacts: Any, image: Any = None, levels: Any = None) -> dict:
    """The issue-13 record of one array from a :class:`cochseg3d.contacts.Contacts`.

    With ``image`` (the scan) the round window is also measured on it, where the bone around the
    array ends (:mod:`.round_window`); ``levels`` are its grey levels (measured when None). Without
    a frame (too few contacts, a straight array) the measures are absent and ``reason`` says why.
    """
    pts = np.asarray(contacts.lps_mm, float).reshape(-1, 3)
    info = dict(getattr(contacts, "info", {}) or {})
    vendor, model = vendor_of(info)
    names = contact_names(len(pts), vendor)
    out: dict[str, Any] = {"side": None, "vendor": vendor, "model": model, "n_contacts": int(len(pts))}
    if len(pts) == 0:
        out.update(reason=info.get("reason", "no contacts found"), cochlear_frame={"confidence": 0.0,
                                                                                  "reason": "no contacts"})
        return out
    frame = estimate_frame(pts, getattr(contacts, "centreline_lps_mm", None), image=image, levels=levels)
    out["cochlear_frame"] = frame.to_json()
    records = [{"name": nm, "lps_mm": _r(p, 3), "ras_mm": _r(p * _LPS_TO_RAS, 3)} for nm, p in zip(names, pts)]
    if not frame.ok:
        out.update(reason=frame.reason, contacts=records, flags=array_flags(pts, names, None))
        return out
    out["side"], out["side_evidence"] = side_of(frame)
    m = contact_measures(frame, pts)
    f_oc, f_sg = organ_of_corti_hz(m["angle_deg"]), spiral_ganglion_hz(m["angle_deg"])
    for i, rec in enumerate(records):
        inside = bool(m["inside_cochlea"][i])
        rec.update(angle_deg=round(float(m["angle_deg"][i]), 1), depth_mm=round(float(m["depth_mm"][i]), 2),
                   modiolus_distance_mm=round(float(m["modiolus_distance_mm"][i]), 2), inside_cochlea=inside,
                   frequency_hz={"organ_of_corti_greenwood1990": round(float(f_oc[i])) if inside else None,
                                 "spiral_ganglion_stakhovskaya2007": round(float(f_sg[i])) if inside else None})
    out["insertion_angle_deg"] = round(float(np.max(m["angle_deg"])), 1)
    out["insertion_depth_mm"] = round(float(np.max(m["depth_mm"])), 2)
    out["extracochlear_contacts"] = int((~m["inside_cochlea"]).sum())
    out["flags"] = array_flags(pts, names, m["angle_deg"], m["modiolus_distance_mm"])
    out["contacts"] = records
    return out


def measure_arrays(contacts: Any, image: Any = None) -> dict:
    """``{"arrays": [...]}``: the issue-13 record of every array (one :class:`Contacts` or a list)."""
    from cochseg3d.greylevels import measure

    items = contacts if isinstance(contacts, (list, tuple)) else [contacts]
    levels = None if image is None else measure(image)
    return {"arrays": [measure_array(c, image, levels) for c in items]}
