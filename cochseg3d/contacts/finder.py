"""find_contacts: which strategy places the contacts, tried in order."""

from __future__ import annotations

import numpy as np

from cochseg3d.contacts.analysis import analyse
from cochseg3d.contacts.blobs import complete_from_blobs
from cochseg3d.contacts.calibration import Calibration
from cochseg3d.contacts.comb import place_comb
from cochseg3d.contacts.layouts import blind_layouts, requested_layouts
from cochseg3d.contacts.orient import base_first
from cochseg3d.contacts.peaks import read_peaks, saturated_dips
from cochseg3d.contacts.refine import refine_contacts
from cochseg3d.contacts.result import Contacts
from cochseg3d.volume import Volume


def find_contacts(label: Volume, image: Volume, *, electrode: str | None = None, n_contacts: int | None = None,
                  pitch_mm: float | None = None, tip_to_first_mm: float | None = None, step_mm: float = 0.05,
                  refine: bool = True, calibration: Calibration | None = None) -> Contacts:
    """Contact centres of the electrode array in ``label`` (LPS mm, apex -> base).

    Args:
        label: electrode mask (non-zero = electrode) on the same grid as ``image``.
        image: the CT in HU.
        electrode: a vendor ("MED-EL", "Cochlear", "AB") or catalogue model name (e.g.
            "CI612 Contour Advance"); its contact count and pitch check the peaks and place the
            contacts where they merge. None: the layout is assumed from the image.
        n_contacts: contact count (overrides the electrode's; needs ``pitch_mm``).
        pitch_mm: centre-to-centre contact spacing in mm.
        tip_to_first_mm: apical tip to first contact centre, mm (default: half a pitch).
        step_mm: centreline sampling step in mm.
        refine: move contacts to the intensity centroid around them.
        calibration: tables and tuned numbers (default: the file shipped with the package).

    Returns:
        :class:`Contacts`; empty when the label is empty.

    Raises:
        ValueError: unknown electrode, or label and image on different grids.
    """
    cal = calibration if calibration is not None else Calibration.load()
    if not label.grid.allclose(image.grid):
        raise ValueError("label and image must share one grid (size, spacing, origin, direction)")
    if not (np.asarray(label.array) > 0).any():
        return Contacts(np.zeros((0, 3)), "none", info={"reason": "empty label"})
    layouts = requested_layouts(electrode, n_contacts, pitch_mm, tip_to_first_mm)
    a = analyse(label, image, layouts, step_mm, cal)
    info = {"length_mm": round(a.length_mm, 3), "electrode": electrode, "bloom_mm": round(a.bloom_mm, 3)}
    # 1. separate contacts are the profile's peaks, where they look like an array's
    reading = read_peaks(a, layouts, info)
    placed = reading.placement
    if placed is None:
        if not layouts:
            # 2. none named: the peaks' spacing, the gaps between contacts, alike blobs or the band's length
            layouts, info["electrode"], rerun = blind_layouts(a, reading.pitch_guess)
            if rerun is not None:
                # a perimodiolar layout's centreline lies inside its spiral: again, named, moved out
                found = find_contacts(label, image, electrode=rerun, step_mm=step_mm, refine=refine, calibration=cal)
                found.info["electrode"] = info["electrode"]
                return found
        # 3. the layouts' combs (merged: between the band's ends), the best one
        placed = place_comb(a, layouts, info)
        # 4. separate contacts saturated flat: midway between the dips
        placed = saturated_dips(a, placed, info)
    if placed.layout is not None:
        info["model"] = placed.layout.get("model")
    pts = a.points(placed.pos)
    # 5. each contact to its intensity centroid, where that places it better than the comb
    if refine:
        pts = refine_contacts(a, pts, placed, assumed=electrode is None and not (n_contacts and pitch_mm))
    # 6. separate contacts the centreline missed, or a failed comb replaced, from the label's blobs
    pts, method = complete_from_blobs(a, pts, placed, refine=refine, info=info)
    curve, profile = a.curve, a.profile.astype(np.float32)
    # 7. the apex is the end inside the spiral: a chain that came out base first is turned round
    if base_first(pts, cal.apex_inside_ratio):
        pts, curve, profile = pts[::-1].copy(), curve[::-1].copy(), profile[::-1].copy()
        info["turned_apex_first"] = True
    return Contacts(pts, method, curve, profile, placed.pitch_mm, info)
