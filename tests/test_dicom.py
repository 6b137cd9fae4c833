"""DICOM ingest on messy folders: every bad input is its own test, crafted from written series."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from cochseg3d.dicom import SeriesGapError, choose_main_series, discover, load_input, load_series
from cochseg3d.phantom.dicom_write import write_series
from cochseg3d.volume import Volume

SHAPE = (8, 12, 10)  # k, j, i


def _truth(seed: int = 0, shape=SHAPE) -> Volume:
    rng = np.random.default_rng(seed)
    arr = rng.integers(-1000, 3000, shape).astype(np.int16)
    return Volume(arr, (0.3, 0.35, 0.5), (-10.0, 5.0, 20.0), np.eye(3))


def _series(folder: Path, seed: int = 0, **kw) -> tuple[Volume, list[Path]]:
    vol = _truth(seed, kw.pop("shape", SHAPE))
    kw.setdefault("patient_id", "case01")
    return vol, write_series(vol, folder, uid_seed=f"s{seed}", **kw)


def _sitk(files: list[Path]) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    return sitk.GetArrayFromImage(reader.Execute())


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _reasons(found) -> dict[str, str]:
    return {s.path.name: s.reason for s in found.all_skipped}


# --- the ordinary case -----------------------------------------------------------------------------
def test_load_input_picks_the_volume_and_fills_meta(tmp_path):
    truth, _ = _series(tmp_path / "p", series_description="cbct")
    small = _truth(1, (3, 4, 5))
    write_series(small, tmp_path / "p", patient_id="case01", series_number=7, uid_seed="small")
    vol = load_input(tmp_path / "p")
    np.testing.assert_array_equal(vol.array, truth.array)
    assert vol.grid.allclose(truth.grid)
    assert vol.meta["case_id"] == "case01" and vol.meta["series_number"] == 1
    assert vol.meta["series_description"] == "cbct" and vol.meta["modality"] == "CT"
    assert vol.meta["series_uid"] and vol.meta["source"] == str(tmp_path / "p")


def test_load_input_reads_image_files(tmp_path):
    from cochseg3d.volume import write_image

    truth = _truth()
    write_image(truth, tmp_path / "Some Case.nii.gz")
    vol = load_input(tmp_path / "Some Case.nii.gz")
    np.testing.assert_array_equal(vol.array, truth.array)
    assert vol.meta["case_id"] == "Some_Case"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_input(tmp_path / "nope")


def test_load_input_from_one_file_loads_its_series(tmp_path):
    _, files_a = _series(tmp_path, seed=0)
    truth_b, files_b = _series(tmp_path, seed=1, series_number=2, shape=(4, 12, 10))
    vol = load_input(files_b[2])
    np.testing.assert_array_equal(vol.array, truth_b.array)


def test_discover_describes_series(tmp_path):
    _series(tmp_path, series_description="cone beam")
    [info] = discover(tmp_path)
    s = info.summary()
    assert s["orientation"] == "axial" and s["files"] == SHAPE[0] and s["size"] == [10, 12, 8]
    assert s["spacing_mm"] == [0.3, 0.35, 0.5] and s["slice_spacing_uniform"] and s["missing_slices"] == 0
    assert "PatientName" not in str(s) and "ANONYMOUS" not in str(s)


def test_folder_is_never_written_to(tmp_path):
    _series(tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("junk")
    before = _snapshot(tmp_path / "in")
    os.chmod(tmp_path / "in", 0o555)
    try:
        load_input(tmp_path / "in")
        discover(tmp_path / "in")
    finally:
        os.chmod(tmp_path / "in", 0o755)
    assert _snapshot(tmp_path / "in") == before


def test_patient_id_is_sanitised(tmp_path):
    _series(tmp_path, patient_id="../../etc/passwd")
    [info] = discover(tmp_path)
    assert "/" not in info.case_id and ".." not in info.case_id and info.case_id
    assert "/" not in info.label


# --- bad input, one test each -------------------------------------------------------------------
def test_junk_and_non_image_files_are_skipped_with_reasons(tmp_path):
    truth, _ = _series(tmp_path)
    (tmp_path / "README.txt").write_text("not dicom")
    (tmp_path / "blob").write_bytes(os.urandom(3000))
    (tmp_path / "._CT0001").write_bytes(b"\x00\x05\x16\x07" + os.urandom(100))
    sr = Dataset()  # a structured report: DICOM, but no image
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID = generate_uid()
    sr.SeriesInstanceUID, sr.Modality = generate_uid(), "SR"
    sr.save_as(tmp_path / "report", enforce_file_format=True)
    found = discover(tmp_path)
    reasons = _reasons(found)
    assert reasons["README.txt"] == "not a DICOM file" and reasons["blob"] == "not a DICOM file"
    assert "macOS" in reasons["._CT0001"] and "no image" in reasons["report"]
    np.testing.assert_array_equal(load_series(found[0]).array, truth.array)


def test_truncated_file_is_reported_and_the_gap_refused_or_filled(tmp_path):
    truth, files = _series(tmp_path)
    data = files[3].read_bytes()
    files[3].write_bytes(data[: len(data) - 50])
    found = discover(tmp_path)
    assert "truncated" in _reasons(found)[files[3].name]
    [info] = found
    assert len(info.slices) == SHAPE[0] - 1 and info.missing_slices == 1
    with pytest.raises(SeriesGapError, match=files[3].name):
        load_series(info)
    vol = load_series(info, on_gap="interpolate")
    assert vol.array.shape == truth.array.shape and vol.grid.allclose(truth.grid)
    np.testing.assert_array_equal(vol.array[2], truth.array[2])
    expected = np.rint((truth.array[2].astype(float) + truth.array[4]) / 2)
    np.testing.assert_allclose(vol.array[3], expected, atol=1)


def test_dicomdir_is_skipped_and_its_images_load(tmp_path):
    from pydicom.fileset import FileSet

    truth, files = _series(tmp_path / "src")
    fs = FileSet()
    for f in files:
        fs.add(f)
    fs.write(tmp_path / "media")
    shutil.copy(tmp_path / "media" / "DICOMDIR", tmp_path / "media" / "index.dcm")
    found = discover(tmp_path / "media")
    reasons = _reasons(found)
    assert "DICOMDIR" in reasons["DICOMDIR"] and "DICOMDIR" in reasons["index.dcm"]
    np.testing.assert_array_equal(load_series(found[0]).array, truth.array)


def test_rgb_secondary_capture_without_planar_configuration_is_skipped(tmp_path):
    truth, files = _series(tmp_path)
    sc = pydicom.dcmread(files[0])
    sc.SOPClassUID = sc.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    sc.SOPInstanceUID = sc.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sc.SamplesPerPixel, sc.PhotometricInterpretation = 3, "RGB"
    sc.BitsAllocated = sc.BitsStored = 8
    sc.HighBit, sc.PixelRepresentation = 7, 0
    sc.PixelData = np.zeros((SHAPE[1], SHAPE[2], 3), np.uint8).tobytes()  # no PlanarConfiguration
    sc.save_as(tmp_path / "screenshot.dcm", enforce_file_format=True)
    gray_sc = pydicom.dcmread(files[0])
    gray_sc.SOPClassUID = gray_sc.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    gray_sc.SOPInstanceUID = gray_sc.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    gray_sc.save_as(tmp_path / "capture.dcm", enforce_file_format=True)
    found = discover(tmp_path)
    reasons = _reasons(found)
    assert "colour" in reasons["screenshot.dcm"] and "secondary capture" in reasons["capture.dcm"]
    np.testing.assert_array_equal(load_series(found[0]).array, truth.array)


def test_localizer_inside_the_series_does_not_break_it(tmp_path):
    truth, files = _series(tmp_path)
    loc = pydicom.dcmread(files[0])  # same SeriesInstanceUID, orthogonal plane
    loc.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    loc.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    loc.SOPInstanceUID = loc.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    loc.save_as(tmp_path / "scout.dcm", enforce_file_format=True)
    other = pydicom.dcmread(files[1])  # an unflagged image of another plane and size
    other.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    other.Rows, other.Columns = 4, 5
    other.PixelData = np.zeros((4, 5), np.int16).tobytes()
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    other.save_as(tmp_path / "reformat.dcm", enforce_file_format=True)
    found = discover(tmp_path)
    assert "localizer" in _reasons(found)["scout.dcm"]
    assert [len(s.slices) for s in found] == [SHAPE[0], 1] and found[1].group == 1
    assert choose_main_series(found) is found[0]
    np.testing.assert_array_equal(load_series(found[0]).array, truth.array)


def test_duplicate_instances_are_dropped_and_reported(tmp_path):
    truth, files = _series(tmp_path)
    shutil.copy(files[2], tmp_path / "copy_of_slice3")
    found = discover(tmp_path)
    [info] = found
    assert len(info.slices) == SHAPE[0]
    assert "duplicate" in _reasons(found)["copy_of_slice3"] or "duplicate" in _reasons(found)[files[2].name]
    np.testing.assert_array_equal(load_series(info).array, truth.array)


def test_missing_slice_is_refused_not_stretched(tmp_path):
    truth, files = _series(tmp_path)
    files[5].unlink()
    [info] = discover(tmp_path)
    assert info.missing_slices == 1 and not info.spacing_uniform
    with pytest.raises(SeriesGapError, match="misses 1 slice"):
        load_series(info)
    vol = load_series(info, on_gap="interpolate")
    assert vol.array.shape[0] == SHAPE[0] and vol.spacing_mm[2] == pytest.approx(0.5)
    np.testing.assert_array_equal(vol.array[6], truth.array[6])


def test_a_gap_in_a_float_series_is_interpolated_too(tmp_path):
    truth, files = _series(tmp_path)
    for f in files:  # a non-integral slope: the volume comes out float32
        ds = pydicom.dcmread(f)
        m, b = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        ds.RescaleSlope, ds.RescaleIntercept = 0.5, 0.0
        ds.save_as(f, enforce_file_format=True)
    expected = 0.5 * (truth.array.astype(np.float64) - b) / m  # what the stored values now mean
    files[5].unlink()
    [info] = discover(tmp_path)
    vol = load_series(info, on_gap="interpolate")  # was an AttributeError (float32 taken for a dtype)
    assert vol.array.dtype == np.float32 and vol.array.shape[0] == SHAPE[0]
    np.testing.assert_allclose(vol.array[6], expected[6])
    np.testing.assert_allclose(vol.array[5], 0.5 * (expected[4] + expected[6]), atol=1e-3)


def test_non_uniform_spacing_is_refused_or_resampled(tmp_path):
    truth, files = _series(tmp_path)
    for k, f in enumerate(files[4:], start=4):  # slices 4.. shifted by 0.2 mm: one step of 0.7 mm
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [-10.0, 5.0, 20.0 + 0.5 * k + 0.2]
        ds.save_as(f, enforce_file_format=True)
    [info] = discover(tmp_path)
    assert not info.spacing_uniform and info.missing_slices == 0
    with pytest.raises(SeriesGapError, match="non-uniform"):
        load_series(info)
    vol = load_series(info, on_nonuniform="resample")
    assert vol.spacing_mm[2] == pytest.approx(0.5)
    assert vol.array.shape[0] == int(round(3.7 / 0.5)) + 1
    np.testing.assert_array_equal(vol.array[:4], truth.array[:4])


def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid(tmp_path):
    base = np.full((6, 12, 10), -1000, np.int16)
    base[:, 6, 3] = 3000  # a rod through the stack, at column 3 of every slice
    vol = Volume(base, (0.5, 0.5, 0.5), (0.0, 0.0, 0.0), np.eye(3))
    files = write_series(vol, tmp_path, patient_id="tilt")
    shift = 0.5  # mm along the row direction per slice: 45 degree tilt
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [k * shift, 0.0, 0.5 * k]
        ds.save_as(f, enforce_file_format=True)
    [info] = discover(tmp_path)
    assert info.sheared
    with pytest.raises(SeriesGapError, match="tilt"):
        load_series(info, on_tilt="error")
    out = load_series(info)
    np.testing.assert_allclose(out.direction, np.eye(3), atol=1e-9)
    for k in range(6):  # the rod is at x = 3 * 0.5 + k * shift on slice z = 0.5 k
        ijk = np.rint(out.lps_to_index([1.5 + k * shift, 3.0, 0.5 * k])).astype(int)
        assert out.array[ijk[2], ijk[1], ijk[0]] > 2000


@pytest.mark.parametrize(
    "syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=["rle", "jpegls", "jpeg2000"]
)
def test_compressed_transfer_syntaxes_decode_to_the_same_values(tmp_path, syntax):
    from pydicom.pixels import get_encoder

    if not get_encoder(syntax).is_available:
        pytest.skip(f"no encoder for {syntax.name} installed: {get_encoder(syntax).missing_dependencies}")
    truth, files = _series(tmp_path, shape=(3, 40, 36))  # JPEG 2000 needs >= 32 pixels for its levels
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(syntax)
        ds.save_as(f, enforce_file_format=True)
    [info] = discover(tmp_path)
    assert all(s.pixel_offset is None for s in info.slices)  # goes through the decoder
    vol = load_series(info)
    np.testing.assert_array_equal(vol.array, truth.array)
    np.testing.assert_array_equal(vol.array, _sitk(files))


def test_jpeg_lossless_process14_decodes(tmp_path):
    gdcmconv = shutil.which("gdcmconv") or str(Path(os.sys.executable).parent / "gdcmconv")
    if not Path(gdcmconv).exists():
        pytest.skip("no JPEG Lossless encoder: gdcmconv (python-gdcm) not installed")
    truth, files = _series(tmp_path / "src")
    (tmp_path / "jpeg").mkdir()
    for f in files:
        subprocess.run([gdcmconv, "--jpeg", "--lossless", str(f), str(tmp_path / "jpeg" / f.name)], check=True,
                       capture_output=True, timeout=30)
    ts = pydicom.dcmread(tmp_path / "jpeg" / files[0].name, stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert ts.is_compressed and ts in ("1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57")
    vol = load_series(discover(tmp_path / "jpeg")[0])
    np.testing.assert_array_equal(vol.array, truth.array)


def test_corrupt_compressed_slice_names_the_file_and_can_be_filled(tmp_path):
    truth, files = _series(tmp_path)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(RLELossless)
        ds.save_as(f, enforce_file_format=True)
    data = bytearray(files[4].read_bytes())
    data[-40:] = b"\x00" * 40  # fragment damaged but the file is complete: discovery cannot tell
    data[-200:-180] = os.urandom(20)
    files[4].write_bytes(bytes(data))
    [info] = discover(tmp_path)  # headers only: no decoding here
    assert len(info.slices) == SHAPE[0]
    with pytest.raises(SeriesGapError, match=f"1 of 8 slice.*{files[4].name}: cannot decode"):
        load_series(info)
    vol = load_series(info, on_gap="interpolate")
    assert vol.array.shape == truth.array.shape
    np.testing.assert_array_equal(np.delete(vol.array, 4, 0), np.delete(truth.array, 4, 0))


def test_monochrome1_is_inverted_like_sitk(tmp_path):
    _, files = _series(tmp_path, extra={"PhotometricInterpretation": "MONOCHROME1"})
    vol = load_series(discover(tmp_path)[0])
    np.testing.assert_array_equal(vol.array, _sitk(files))


def test_rescale_slope_and_intercept(tmp_path):
    truth = _truth()
    hu = truth.with_array(truth.array.astype(np.float32) * 0.25)
    files = write_series(hu, tmp_path, patient_id="p", rescale_slope=0.25, rescale_intercept=-3000)
    vol = load_series(discover(tmp_path)[0])
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, hu.array)
    np.testing.assert_allclose(vol.array, _sitk(files))


def test_wide_intercept_keeps_values_exact(tmp_path):
    truth = _truth()
    truth.array = truth.array.astype(np.int32)
    truth.array[0, 0, 0] = -34000  # fits int16 as stored, not as HU
    files = write_series(truth, tmp_path, patient_id="p", rescale_intercept=-2000)
    vol = load_series(discover(tmp_path)[0])
    assert vol.array.dtype == np.int32
    np.testing.assert_array_equal(vol.array, truth.array)
    np.testing.assert_array_equal(vol.array, _sitk(files))


def test_non_ct_modality_loads_with_a_warning(tmp_path):
    truth, _ = _series(tmp_path, modality="MR")
    [info] = discover(tmp_path)
    with pytest.warns(UserWarning, match="modality MR"):
        vol = load_series(info)
    np.testing.assert_array_equal(vol.array, truth.array)


def test_implicit_vr_and_missing_preamble_take_the_fast_path(tmp_path):
    truth, files = _series(tmp_path)
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        if k in (2, 3):  # no preamble, no file meta: raw datasets, implicit and explicit VR
            ds.file_meta = FileMetaDataset()
            ds.preamble = None
            ds.save_as(f, implicit_vr=(k == 2), little_endian=True)
            assert f.read_bytes()[:2] == b"\x08\x00"
        else:
            ds.save_as(f, implicit_vr=True, little_endian=True, enforce_file_format=True)
    [info] = discover(tmp_path)
    assert len(info.slices) == SHAPE[0]
    assert all(s.pixel_offset is not None for s in info.slices)
    np.testing.assert_array_equal(load_series(info).array, truth.array)


def test_bits_stored_masks_high_bits_like_sitk(tmp_path):
    truth = _truth()
    truth.array[...] = np.abs(truth.array) % 4096
    files = write_series(truth, tmp_path, patient_id="p", rescale_intercept=0,
                         extra={"BitsStored": 12, "HighBit": 11, "PixelRepresentation": 0})
    ds = pydicom.dcmread(files[1])
    px = np.frombuffer(ds.PixelData, np.uint16).copy()
    px[:5] |= 0xF000  # overlay bits above BitsStored
    ds.PixelData = px.tobytes()
    ds.save_as(files[1], enforce_file_format=True)
    vol = load_series(discover(tmp_path)[0])
    np.testing.assert_array_equal(vol.array, truth.array)
    np.testing.assert_array_equal(vol.array, _sitk(files))


def test_load_input_with_no_volume_explains_why(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="a.txt: not a DICOM file"):
        load_input(tmp_path)


def _bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise OSError("no rchar")


def test_discover_reads_headers_only(tmp_path):
    if not Path("/proc/self/io").exists():
        pytest.skip("needs /proc/self/io (Linux) to count bytes read")
    _series(tmp_path, shape=(20, 128, 128))  # 32 KiB of pixels per file, ~1.5 KiB of header
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    discover(tmp_path)  # warm-up: imports, lazy pydicom tables
    before = _bytes_read()
    [info] = discover(tmp_path)
    read = _bytes_read() - before
    assert len(info.slices) == 20
    assert read < 0.15 * total, f"discover read {read} of {total} bytes"
