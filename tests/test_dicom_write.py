"""write_series: valid CT headers, de-identified, deterministic UIDs, exact SimpleITK round trip."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from cochseg3d.phantom.dicom_write import stored_values, write_series
from cochseg3d.volume import Volume

AXIAL = np.eye(3)
CORONAL = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float)  # IOP (1,0,0,0,0,-1), k -> posterior
SAGITTAL = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float)  # IOP (0,1,0,0,0,-1), k -> right


def _oblique() -> np.ndarray:
    t = sitk.Euler3DTransform()
    t.SetRotation(0.2, -0.15, 0.3)
    return np.asarray(t.GetMatrix()).reshape(3, 3)


DIRECTIONS = {"axial": AXIAL, "coronal": CORONAL, "sagittal": SAGITTAL, "oblique": _oblique()}


def _volume(direction: np.ndarray, shape=(5, 6, 7)) -> Volume:
    rng = np.random.default_rng(1)
    arr = rng.integers(-1024, 3000, shape).astype(np.int16)
    return Volume(arr, (0.31, 0.42, 0.5), (12.25, -30.5, 41.125), direction)


def _sitk_read(folder) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_sitk_reads_back_identical_values_and_geometry(tmp_path, name):
    vol = _volume(DIRECTIONS[name])
    paths = write_series(vol, tmp_path, patient_id="P1", uid_seed="seed")
    assert len(paths) == vol.array.shape[0]
    img = _sitk_read(tmp_path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vol.array)
    np.testing.assert_allclose(img.GetSpacing(), vol.spacing_mm, atol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), vol.origin_mm, atol=1e-6)
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), vol.direction, atol=1e-9)


def test_headers_are_valid_ct_and_deidentified(tmp_path):
    vol = _volume(AXIAL, shape=(3, 4, 5))
    paths = write_series(vol, tmp_path, patient_id="case-7", series_number=3, series_description="cbct")
    uids = set()
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage == ds.file_meta.MediaStorageSOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert (ds.Modality, ds.BitsAllocated, ds.PixelRepresentation) == ("CT", 16, 1)
        assert ds.InstanceNumber == k + 1 and ds.SeriesNumber == 3 and ds.SeriesDescription == "cbct"
        assert ds.PatientID == "case-7" and str(ds.PatientName) == "ANONYMOUS^"
        assert ds.PatientIdentityRemoved == "YES"
        assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
        assert [float(x) for x in ds.PixelSpacing] == [0.42, 0.31] and float(ds.SliceThickness) == 0.5
        np.testing.assert_allclose([float(x) for x in ds.ImagePositionPatient], [12.25, -30.5, 41.125 + 0.5 * k])
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            assert pydicom.uid.UID(getattr(ds, kw)).is_valid
        uids.add(ds.SOPInstanceUID)
        np.testing.assert_array_equal(ds.pixel_array.astype(np.int32) - 1024, vol.array[k])
    assert len(uids) == len(paths)


def test_uids_are_deterministic_from_the_seed(tmp_path):
    vol = _volume(AXIAL, shape=(2, 3, 4))
    a = [pydicom.dcmread(p) for p in write_series(vol, tmp_path / "a", patient_id="X", uid_seed="s1")]
    b = [pydicom.dcmread(p) for p in write_series(vol, tmp_path / "b", patient_id="X", uid_seed="s1")]
    c = [pydicom.dcmread(p) for p in write_series(vol, tmp_path / "c", patient_id="X", uid_seed="s2")]
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"):
        assert getattr(a[1], kw) == getattr(b[1], kw) != getattr(c[1], kw)
    study = "1.2.826.0.1.3680043.8.498.1"
    d = write_series(vol, tmp_path / "d", patient_id="X", study_uid=study, series_number=9)
    assert pydicom.dcmread(d[0]).StudyInstanceUID == study


def test_rescale_and_range_checks():
    hu = np.array([[[-1000.0, 0.0, 2.5]]])
    np.testing.assert_array_equal(stored_values(hu, rescale_slope=0.5, rescale_intercept=-1024), [[[48, 2048, 2053]]])
    with pytest.raises(ValueError, match="int16"):
        stored_values(np.array([[[40000.0]]]))
    with pytest.raises(ValueError, match="NaN"):
        stored_values(np.array([[[np.nan]]]))


def test_slope_intercept_round_trip_through_sitk(tmp_path):
    vol = _volume(AXIAL, shape=(3, 4, 5))
    hu = vol.with_array(vol.array.astype(np.float32) * 0.5)
    write_series(hu, tmp_path, patient_id="P", rescale_slope=0.5, rescale_intercept=-2000)
    np.testing.assert_allclose(sitk.GetArrayFromImage(_sitk_read(tmp_path)), hu.array)


def test_extra_overrides_and_modality(tmp_path):
    vol = _volume(AXIAL, shape=(2, 3, 4))
    paths = write_series(vol, tmp_path, patient_id="P", modality="MR", extra={"PatientName": "TEST^NAME"})
    ds = pydicom.dcmread(paths[0])
    assert ds.Modality == "MR" and ds.SOPClassUID == pydicom.uid.MRImageStorage
    assert str(ds.PatientName) == "TEST^NAME"
    with pytest.raises(ValueError, match="modality"):
        write_series(vol, tmp_path, patient_id="P", modality="XX")
