"""Writing phantoms: DICOM round trip through SimpleITK, truth on the series grid, clutter, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from cochseg3d.phantom import generate_patient, write_patient
from cochseg3d.volume import read_image

IOP = {"axial": [1, 0, 0, 0, 1, 0], "coronal": [1, 0, 0, 0, 0, -1], "sagittal": [0, 1, 0, 0, 0, -1]}


def _series(folder: Path) -> dict[str, list[str]]:
    return {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))}


@pytest.mark.parametrize("orientation", ["axial", "coronal", "sagittal", "oblique"])
def test_dicom_round_trip_is_bit_identical_and_truth_shares_the_grid(tmp_path, orientation):
    case = generate_patient(13, orientation=orientation, shape=(40, 36, 32))
    root = write_patient(case, tmp_path, clutter=True)
    dicom = root / "DICOM"
    series = _series(dicom)
    assert len(series) == 2, "image series + localizer"
    main_uid = max(series, key=lambda u: len(series[u]))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series[main_uid])
    img = reader.Execute()
    assert np.array_equal(sitk.GetArrayFromImage(img), case.image.array)
    for name in ("label", "metal"):
        truth = read_image(root / "truth" / f"{name}.nii.gz")
        assert truth.size == img.GetSize()
        # NIfTI keeps the affine in float32: equal to that precision (origins are exact, 1/1024 mm)
        assert truth.spacing_mm == pytest.approx(img.GetSpacing(), abs=1e-6)
        assert truth.origin_mm == pytest.approx(img.GetOrigin(), abs=1e-5)
        assert truth.direction.ravel() == pytest.approx(img.GetDirection(), abs=1e-6)
        if orientation != "oblique":
            assert truth.origin_mm == img.GetOrigin()
        assert np.array_equal(truth.array, getattr(case, name).array)
    ds = pydicom.dcmread(series[main_uid][0])
    assert ds.Modality == "CT" and ds.BitsAllocated == 16 and ds.PixelRepresentation == 1
    assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == -1024.0
    assert ds.PatientID == case.case_id and str(ds.PatientName) == "ANONYMOUS^"
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
                "ImagePositionPatient", "PixelSpacing", "SliceThickness"):
        assert key in ds
    iop = [float(v) for v in ds.ImageOrientationPatient]
    if orientation in IOP:
        assert iop == pytest.approx(IOP[orientation], abs=1e-9)
    else:
        assert not np.allclose(np.abs(iop), np.round(np.abs(iop)), atol=1e-3)
    # clutter: a 1-3 slice localizer with its own series UID, a macOS "._" file and a README
    loc = [u for u in series if u != main_uid][0]
    assert len(series[loc]) in (1, 2, 3)
    assert "LOCALIZER" in pydicom.dcmread(series[loc][0]).ImageType
    assert any(p.name.startswith("._") for p in dicom.iterdir())
    assert (dicom / "README.txt").is_file()
    contacts = json.loads((root / "truth" / "contacts.json").read_text())
    params = json.loads((root / "truth" / "params.json").read_text())
    assert contacts == json.loads(json.dumps(case.contacts)) and params["orientation"] == orientation


def test_rewrite_without_clutter_leaves_only_the_image_series(tmp_path):
    case = generate_patient(2, shape=24)
    write_patient(case, tmp_path, clutter=True)
    root = write_patient(case, tmp_path, clutter=False, preview=True)
    names = sorted(p.name for p in (root / "DICOM").iterdir())
    assert len(names) == 24 and all(n.startswith("CT") and n.endswith(".dcm") for n in names)
    assert (root / "preview.png").stat().st_size > 10_000


def test_cli_writes_a_cohort_and_reports_bad_input(tmp_path):
    out = tmp_path / "cohort"
    cmd = [sys.executable, "-m", "cochseg3d", "phantom", str(out), "--patients", "2", "--seed", "4",
           "--orientation", "mixed", "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert str(out.resolve()) in res.stdout
    index = json.loads((out / "cohort.json").read_text())
    assert [e["case_id"] for e in index] == ["phantom_s4_001", "phantom_s4_002"]
    for e in index:
        for key in ("dicom", "label", "metal", "contacts"):
            assert (out / e[key]).exists(), e[key]
        assert e["orientation"] in ("axial", "coronal", "sagittal", "oblique")
        assert e["vendor"] in ("MED-EL", "Cochlear", "AB")
    bad = subprocess.run([sys.executable, "-m", "cochseg3d", "phantom", str(out), "--patients", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--patients" in bad.stderr
