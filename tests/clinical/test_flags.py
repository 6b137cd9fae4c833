"""Fold-over / out-of-order / kink flags on synthetic contact lists, and the contact numbering."""

from __future__ import annotations

import numpy as np

from cochseg3d.clinical import measure_arrays
from cochseg3d.clinical.measures import contact_names
from cochseg3d.contacts import Contacts


def _arrays(case, pts):
    c = case.contacts
    return measure_arrays(Contacts(np.asarray(pts), "truth", np.asarray(c["electrode_path_lps_mm"]),
                                   info={"model": c["model"]}))["arrays"][0]


def _flags(a):
    return {k: v["value"] for k, v in a["flags"].items()}


def test_array_as_intended_raises_no_flag(flex_case):
    a = _arrays(flex_case, flex_case.contacts["contacts_lps_mm"])
    assert _flags(a) == {"fold_over": False, "kink": False, "out_of_order": False}
    assert all(v["evidence"] for v in a["flags"].values())


def test_reversed_list_is_out_of_order_not_folded(flex_case):
    a = _arrays(flex_case, np.asarray(flex_case.contacts["contacts_lps_mm"])[::-1])
    assert _flags(a)["out_of_order"] and not _flags(a)["fold_over"]
    assert "base -> apex" in a["flags"]["out_of_order"]["evidence"]


def test_swapped_neighbours_are_out_of_order(flex_case):
    pts = np.asarray(flex_case.contacts["contacts_lps_mm"]).copy()
    pts[[5, 6]] = pts[[6, 5]]
    a = _arrays(flex_case, pts)
    assert _flags(a)["out_of_order"] and not _flags(a)["fold_over"]
    assert "E6" in a["flags"]["out_of_order"]["evidence"] or "E7" in a["flags"]["out_of_order"]["evidence"]


def test_tip_folded_back_is_a_fold_over(flex_case):
    """The three apical contacts folded back along the array, 0.5 mm towards the modiolus."""
    c = flex_case.contacts
    path = np.asarray(c["electrode_path_lps_mm"])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    pts = np.asarray(c["contacts_lps_mm"]).copy()
    s_c = np.array([s[np.argmin(np.linalg.norm(path - p, axis=1))] for p in pts])
    f = c["cochlear_frame"]
    axis_o, z = np.asarray(f["origin_lps_mm"]), np.asarray(f["z_lps"])
    for i in range(3):
        s_new = 2 * s_c[3] - s_c[i]
        p = np.array([np.interp(s_new, s, path[:, d]) for d in range(3)])
        radial = (p - axis_o) - ((p - axis_o) @ z) * z
        pts[i] = p - 0.5 * radial / np.linalg.norm(radial)
    a = _arrays(flex_case, pts)
    assert _flags(a)["fold_over"], a["flags"]["fold_over"]["evidence"]
    assert "E4" in a["flags"]["fold_over"]["evidence"]
    assert a["insertion_angle_deg"] == max(k["angle_deg"] for k in a["contacts"])


def test_vendor_numbering():
    assert contact_names(3, "MED-EL") == ["E1", "E2", "E3"]
    assert contact_names(3, "AB") == ["E1", "E2", "E3"]
    assert contact_names(22, "Cochlear")[:2] == ["E22", "E21"] and contact_names(22, "Cochlear")[-1] == "E1"


def test_sharp_bend_is_a_kink(flex_case):
    """The basal part turned 70 deg further about E8 than the spiral turns: a bend it cannot explain."""
    from cochseg3d.phantom.anatomy import rotation

    pts = np.asarray(flex_case.contacts["contacts_lps_mm"]).copy()
    f = flex_case.contacts["cochlear_frame"]
    R = rotation(np.asarray(f["z_lps"]), -f["turn_sense"] * np.radians(70.0))  # with the turn (apex -> base): ~105 deg
    pts[8:] = (pts[8:] - pts[7]) @ R.T + pts[7]
    a = _arrays(flex_case, pts)
    assert _flags(a)["kink"], a["flags"]["kink"]["evidence"]
    assert "E8" in a["flags"]["kink"]["evidence"] and not _flags(a)["fold_over"]
