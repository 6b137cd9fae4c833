"""find_inputs: one patient or many under a path; DICOM told from stray files, with or without
the preamble; named pipes passed over, never read; a broken cohort.json named."""

import json
import os

import numpy as np
import pytest

from cochseg3d.inputs import find_inputs
from cochseg3d.phantom.dicom_write import write_series
from cochseg3d.volume import Volume, write_image

VOL = Volume(np.zeros((3, 4, 5), np.int16), (0.3, 0.3, 0.3))


def test_find_inputs_tells_one_patient_from_many(tmp_path):
    vol = VOL
    # one patient, two series folders
    write_series(vol, tmp_path / "one" / "s1", patient_id="A", study_uid="1.2.3", uid_seed="a1")
    write_series(vol, tmp_path / "one" / "s2", patient_id="A", study_uid="1.2.3", uid_seed="a2", series_number=2)
    assert find_inputs(tmp_path / "one") == [tmp_path / "one"]
    # two patients
    write_series(vol, tmp_path / "many" / "A", patient_id="A", uid_seed="b1")
    write_series(vol, tmp_path / "many" / "B", patient_id="B", uid_seed="b2")
    assert find_inputs(tmp_path / "many") == [tmp_path / "many" / "A", tmp_path / "many" / "B"]
    # DICOM files directly in the folder
    assert find_inputs(tmp_path / "many" / "A") == [tmp_path / "many" / "A"]
    with pytest.raises(FileNotFoundError):
        find_inputs(tmp_path / "nope")


def test_find_inputs_ignores_stray_text_files(tmp_path):
    vol = VOL
    write_image(vol, tmp_path / "batch" / "a.nii.gz")
    write_image(vol, tmp_path / "batch" / "b.nii.gz")
    (tmp_path / "batch" / "README.txt").write_text("cases from the clinic")
    assert find_inputs(tmp_path / "batch") == [tmp_path / "batch" / "a.nii.gz", tmp_path / "batch" / "b.nii.gz"]



def test_dicom_files_without_the_preamble_are_one_patient(tmp_path):
    files = write_series(VOL, tmp_path / "src", patient_id="A", uid_seed="np")
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in files:  # the 128-byte preamble and "DICM" cut off, as some PACS exports write them
        (bare / f.name).write_bytes(f.read_bytes()[132:])
    (bare / "notes.txt").write_text("not DICOM")
    assert find_inputs(bare) == [bare]
    only_text = tmp_path / "text"
    only_text.mkdir()
    (only_text / "notes.txt").write_text("\x08\x00 looks like a group 8 tag but is not DICOM")
    assert find_inputs(only_text) == []


@pytest.mark.timeout(30)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_is_passed_over_not_read(tmp_path):
    write_series(VOL, tmp_path / "pat", patient_id="A", uid_seed="f")
    os.mkfifo(tmp_path / "pat" / "pipe")  # opening it for reading would block forever
    assert find_inputs(tmp_path / "pat") == [tmp_path / "pat"]
    write_image(VOL, tmp_path / "batch" / "a.nii.gz")
    os.mkfifo(tmp_path / "batch" / "b.nii.gz")
    assert find_inputs(tmp_path / "batch") == [tmp_path / "batch" / "a.nii.gz"]
    with pytest.raises(ValueError, match="neither a regular file nor a folder"):
        find_inputs(tmp_path / "pat" / "pipe")


def test_a_broken_cohort_index_is_named(tmp_path):
    (tmp_path / "cohort.json").write_text(json.dumps({"dicom": "p1"}))  # a dict, not a list of entries
    with pytest.raises(ValueError, match="cohort.json"):
        find_inputs(tmp_path)
    (tmp_path / "cohort.json").write_text(json.dumps([{"dicom": "p1/DICOM"}, {"dicom": "p2/DICOM"}]))
    assert find_inputs(tmp_path) == [tmp_path / "p1" / "DICOM", tmp_path / "p2" / "DICOM"]
