"""cochseg3d.export: the files of one patient, their names, and what a record leaves out."""

import json
import logging

import numpy as np

from cochseg3d.contacts import Contacts
from cochseg3d.export import contacts_record, electrode_slab, write_outputs
from cochseg3d.volume import Volume, read_image


def _case():
    image = Volume(np.full((12, 14, 16), 40.0, np.float32), (0.3, 0.3, 0.4))
    image.array[5:7, 6:8, 3:12] = 3000.0
    image.meta.update(source="/data/Doe_John/scan.nii.gz", series_uid="", series_description="")
    label = image.with_array((image.array > 2000).astype(np.uint8))
    contacts = Contacts(image.index_to_lps(np.array([[4.0, 7.0, 6.0], [10.0, 7.0, 6.0]])), "peaks")
    return image, label, contacts


def test_write_outputs_names_files_by_case_and_skips_seg_for_a_non_dicom_image(tmp_path, caplog):
    image, label, contacts = _case()
    record = contacts_record(contacts, case_id="P1", series={"series_uid": ""}, electrode=None,
                             label_volume_mm3=1.0, model=None, qc={"verdict": "ok", "reasons": []})
    with caplog.at_level(logging.WARNING, logger="cochseg3d.export"):
        files = write_outputs(tmp_path, "P1", image=image, label=label, record=record,
                              contacts_lps_mm=contacts.lps_mm, png=True, dicom_seg=True)
    assert set(files) == {"label", "contacts", "markups", "contacts_csv", "png"} and "not a DICOM series" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P1.contacts.csv", "P1.contacts.json", "P1.contacts.mrk.json",
                                                          "P1.nii.gz", "P1.png"]
    assert read_image(files["label"]).grid.allclose(image.grid)
    text = files["contacts"].read_text()
    assert json.loads(text)["n_contacts"] == 2 and json.loads(text)["qc"]["verdict"] == "ok"
    assert "Doe_John" not in text
    assert files["png"].stat().st_size > 1000


def test_electrode_slab_spans_the_label_plus_the_margin():
    mask = np.zeros((20, 4, 4), bool)
    mask[8:11] = True
    assert electrode_slab(mask, slice_spacing_mm=0.5, pad_mm=1.0) == (6, 13)
    assert electrode_slab(np.zeros((20, 4, 4), bool), slice_spacing_mm=0.5) == (10, 11)


def test_a_spiral_array_gets_its_cochlear_measures_markups_and_table(tmp_path):
    from cochseg3d.phantom import generate_patient

    case = generate_patient(31, model="FLEX28")
    c = case.contacts
    contacts = Contacts(np.asarray(c["contacts_lps_mm"]), "peaks", np.asarray(c["electrode_path_lps_mm"]),
                        info={"model": c["model"]})
    record = contacts_record(contacts, case_id="P2", series={}, electrode="FLEX28", label_volume_mm3=1.0,
                             model=None, qc=None)
    files = write_outputs(tmp_path, "P2", image=case.image, label=case.label, record=record, png=False)
    (array,) = json.loads(files["contacts"].read_text())["arrays"]
    assert array["model"] == "FLEX28" and len(array["contacts"]) == 12
    frame = array["cochlear_frame"]
    assert abs(float(np.dot(frame["z_lps"], c["cochlear_frame"]["z_lps"]))) > np.cos(np.radians(5))
    assert 300 < array["insertion_angle_deg"] < 900  # a FLEX28 reaches well past one turn
    mrk = json.loads(files["markups"].read_text())
    labels = [p["label"] for p in mrk["markups"][0]["controlPoints"]]
    assert labels == [f"E{i}" for i in range(1, 13)] and mrk["markups"][0]["coordinateSystem"] == "LPS"
    assert len(files["contacts_csv"].read_text().strip().splitlines()) == 13  # header + one row per contact
