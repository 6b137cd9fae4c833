"""The fitted physical array (issue 13): contacts 1..N apex first, carrier N + 1, on the label's grid."""

from __future__ import annotations

import numpy as np

from cochseg3d.clinical.array_label import colour_table, fit_array_label
from cochseg3d.contacts import Contacts
from cochseg3d.electrodes import find_model
from cochseg3d.export import output_path, write_outputs
from cochseg3d.volume import Volume

MODEL = find_model("FLEX20")


def _spiral_case(spacing: float = 0.1):
    """A flat spiral array (tip inside) with its true contacts, centreline and visible-metal label."""
    theta = np.linspace(8.0, 0.0, 8000)  # apex -> base
    r = 1.5 + 0.45 * (8.0 - theta)
    path = np.stack([r * np.cos(theta), r * np.sin(theta), 0.2 * theta], axis=1)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    s_c = 1.0 + MODEL.pitch_mm * np.arange(MODEL.n_contacts)
    contacts = np.stack([np.interp(s_c, s, path[:, d]) for d in range(3)], axis=1)
    lo = path.min(0) - 1.0
    shape = tuple(int(v) for v in np.ceil((path.max(0) + 1.0 - lo) / spacing))[::-1]
    grid = Volume(np.zeros(shape, np.uint8), (spacing,) * 3, tuple(lo))
    ijk = np.rint(grid.lps_to_index(path)).astype(int)
    visible = grid.array.copy()
    visible[ijk[:, 2], ijk[:, 1], ijk[:, 0]] = 1
    return Contacts(contacts, "truth", path[s >= s_c[0] - 0.5], info={"model": MODEL.model}), grid.with_array(visible)


def test_each_contact_sits_at_its_true_place_with_the_catalogue_volume():
    contacts, visible = _spiral_case()
    a = fit_array_label(contacts, visible)
    lab = a.label.array
    assert lab.shape == visible.array.shape and np.allclose(a.label.affine_lps(), visible.affine_lps())
    n = MODEL.n_contacts
    assert set(np.unique(lab)) == set(range(n + 2))
    vox = np.prod(visible.spacing_mm)
    cyl = np.pi * min(MODEL.contact_radius_mm, MODEL.diameter_tip_mm / 2) ** 2 * MODEL.contact_len_mm
    for v in range(1, n + 1):
        k = np.argwhere(lab == v)
        centroid = visible.index_to_lps(k[:, ::-1].mean(0))
        assert np.linalg.norm(centroid - contacts.lps_mm[v - 1]) < 0.2, v  # apex first: value 1 = contact 0
        assert abs(len(k) * vox - cyl) < 0.25 * cyl, (v, len(k) * vox, cyl)
    assert a.names[0] == "E1" and a.names[-1] == "carrier" and len(a.names) == n + 1
    # the carrier reaches no further basally than the visible metal
    far = np.argwhere(lab == n + 1)
    assert (far[:, 0] >= 0).all() and a.info["centreline_length_mm"] < 1.0 + MODEL.pitch_mm * (n - 1) + 12.0


def test_cochlear_contacts_are_named_base_first_in_the_colour_table():
    contacts, visible = _spiral_case(0.2)
    c = Contacts(contacts.lps_mm[:4], "truth", contacts.centreline_lps_mm, info={"model": "CI612 Contour Advance"})
    a = fit_array_label(c, visible)
    assert a.names == ["E4", "E3", "E2", "E1", "carrier"]
    table = colour_table(a.names).splitlines()
    assert table[2].startswith("0 background") and table[3].startswith("1 E4 ") and table[-1].startswith("5 carrier ")


def test_one_contact_or_none_writes_no_array_label_and_says_why(tmp_path):
    contacts, visible = _spiral_case(0.4)
    for pts in (contacts.lps_mm[:1], np.zeros((0, 3))):
        a = fit_array_label(Contacts(pts, "peaks", info={"model": MODEL.model}), visible)
        assert a.label is None and "contact" in a.reason
        assert a.to_json() == {"written": False, "reason": a.reason}
    stale = output_path(tmp_path, "p1", "array")
    stale.write_bytes(b"old")
    record = {"n_contacts": 1, "arrays": []}
    files = write_outputs(tmp_path, "p1", image=visible, label=visible, record=record, png=False, array=a)
    assert "array" not in files and not stale.exists()


def test_write_outputs_writes_the_array_and_its_colour_table(tmp_path):
    from cochseg3d.volume import read_image

    contacts, visible = _spiral_case(0.4)
    a = fit_array_label(contacts, visible)
    files = write_outputs(tmp_path, "p2", image=visible, label=visible, record={"n_contacts": 12}, png=False, array=a)
    assert files["array"] == output_path(tmp_path, "p2", "array") and files["array_colors"].is_file()
    back = read_image(files["array"])
    assert np.array_equal(back.array, a.label.array) and np.allclose(back.affine_lps(), visible.affine_lps())


def test_colour_table_reads_back_and_a_broken_line_is_named():
    import pytest

    from cochseg3d.clinical.array_label import read_colour_table

    table = read_colour_table(colour_table(["E1", "E2", "carrier"]))
    assert sorted(table) == [0, 1, 2, 3] and table[3] == ("carrier", (200, 200, 200, 255))
    assert table[0][1][3] == 0 and table[1][0] == "E1"
    with pytest.raises(ValueError, match="line 2"):
        read_colour_table("# ok\n1 E1 255 0\n")
