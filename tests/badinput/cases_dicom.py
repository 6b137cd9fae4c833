"""The corpus's DICOM kinds: header sizes, orientation, files that are no files, names, byte order,
preamble, one bad slice, folders."""

from __future__ import annotations

import os

import build as b
from cases import P, _converted_size, _every_file, _with_extra, case


# --- DICOM: header sizes ---------------------------------------------------------------------------
@case("dicom", "ok", "rows0.dcm", "Rows = 0")
def dicom_rows_zero_inspect(root):
    return _with_extra(root, "inspect", "rows0.dcm", Rows=0)


@case("dicom", "error", "Rows = 0")
def dicom_rows_zero_all_convert(root):
    return _every_file(root, Rows=0)


@case("dicom", "ok", "cols0.dcm", "Columns = 0", check=_converted_size)
def dicom_columns_zero_convert(root):
    return _with_extra(root, "convert", "cols0.dcm", Columns=0)


@case("dicom", "ok", "huge.dcm", "60000x60000", check=_converted_size)
def dicom_uncompressed_claims_60000(root):
    return _with_extra(root, "convert", "huge.dcm", Rows=60000, Columns=60000)


@case("dicom", "ok", "bomb_0.dcm", "60000x60000", check=_converted_size)
def dicom_rle_bomb_not_main_series_convert(root):
    f, files = b.patient(root)
    b.rle_bomb(f, files)
    return ["convert", P, "out", "--no-progress"]


@case("dicom", "ok", "PAT01: 16 coronal slices")
def dicom_rle_bomb_not_main_series_coronal(root):
    f, files = b.patient(root)
    b.rle_bomb(f, files)
    return ["coronal", P, "out"]


@case("dicom", "ok", "bomb_0.dcm", "compressed bytes", check=_converted_size)
def dicom_rle_claims_more_than_it_holds(root):
    f, files = b.patient(root)
    b.rle_bomb(f, files, side=4000)
    return ["convert", P, "out", "--no-progress"]


@case("dicom", "ok", "frames.dcm", "100000 frames")
def dicom_absurd_frame_count(root):
    return _with_extra(root, "inspect", "frames.dcm", NumberOfFrames=100000)


@case("dicom", "error", "BitsAllocated = 12")
def dicom_bits_allocated_12(root):
    return _every_file(root, BitsAllocated=12)


@case("dicom", "error", "BitsStored = 20")
def dicom_bits_stored_above_allocated(root):
    return _every_file(root, BitsStored=20)


@case("dicom", "error", "PixelSpacing")
def dicom_pixel_spacing_zero(root):
    return _every_file(root, PixelSpacing=[0, 0])


@case("dicom", "ok", "negsp.dcm", "PixelSpacing")
def dicom_pixel_spacing_negative_extra(root):
    return _with_extra(root, "inspect", "negsp.dcm", PixelSpacing=[-0.4, 0.4])


@case("dicom", "error", "RescaleSlope")
def dicom_rescale_slope_zero(root):
    return _every_file(root, RescaleSlope=0)


@case("dicom", "error", "ImagePositionPatient")
def dicom_no_position(root):
    f, files = b.patient(root)
    for p in files:
        ds = __import__("pydicom").dcmread(p)
        del ds.ImagePositionPatient
        ds.save_as(p)
    return ["convert", P, "out"]


# --- DICOM: orientation -------------------------------------------------------------------------------
@case("dicom", "error", "ImageOrientationPatient", "zero vector")
def dicom_iop_all_zero(root):
    return _every_file(root, ImageOrientationPatient=[0] * 6)


@case("dicom", "ok", "iopz.dcm", "zero vector", check=_converted_size)
def dicom_iop_zero_extra_file(root):
    return _with_extra(root, "convert", "iopz.dcm", ImageOrientationPatient=[0] * 6)


@case("dicom", "error", "ImageOrientationPatient", "lengths 4")
def dicom_iop_not_unit(root):
    return _every_file(root, ImageOrientationPatient=[4, 0, 0, 0, 4, 0])


@case("dicom", "ok", "converted 1 of 1", check=_converted_size)
def dicom_iop_nearly_unit_is_normalised(root):
    f, files = b.patient(root)
    for p in files:
        b.edit(p, ImageOrientationPatient=[0.998, 0, 0, 0, 1.003, 0])
    return ["convert", P, "out", "--no-progress"]


@case("dicom", "error", "not perpendicular")
def dicom_iop_not_perpendicular(root):
    return _every_file(root, ImageOrientationPatient=[1, 0, 0, 0.5, 0.866025, 0])


@case("dicom", "error", "ImageOrientationPatient")
def dicom_iop_five_values(root):
    return _every_file(root, ImageOrientationPatient=[1, 0, 0, 0, 1])


@case("dicom", "error", "ImageOrientationPatient")
def dicom_iop_text(root):
    f, files = b.patient(root)
    for p in files:
        b.edit(p, ImageOrientationPatient=[7, 0, 0, 0, 7, 0])  # then the text replaced byte for byte
        p.write_bytes(p.read_bytes().replace(b"7\\0\\0\\0\\7\\0", b"a\\b\\c\\d\\e\\f"))
    return ["coronal", P, "out"]


# --- DICOM: files that are no files, names, byte order, preamble ---------------------------------------
@case("dicom", "ok", "pipe.dcm", "named pipe", own_process=True)
def dicom_fifo_inspect(root):
    f, files = b.patient(root)
    b.fifo(f / "pipe.dcm")
    return ["inspect", P]


@case("dicom", "ok", "converted 1 of 1", check=_converted_size)
def dicom_fifo_convert(root):
    f, files = b.patient(root)
    b.fifo(f / "pipe")
    return ["convert", P, "out", "--no-progress"]


@case("dicom", "ok", "PAT01: 16 coronal slices")
def dicom_fifo_coronal(root):
    f, files = b.patient(root)
    b.fifo(f / "sub" / "pipe")
    return ["coronal", P, "out"]


@case("dicom", "error", "pipe.dcm", "named pipe")
def dicom_fifo_as_input_file(root):
    b.fifo(root / "in" / "pipe.dcm")
    return ["prefill", "in/pipe.dcm", "out/label.nii.gz"]


@case("dicom", "ok", "PAT01", own_process=True, slow=True)
def dicom_fifo_segment(root):
    f, files = b.patient(root)
    b.fifo(f / "pipe")
    return ["segment", P, "-o", "out", "--no-png", "--device", "cpu"]


@case("dicom", "ok", "\ufffd", "not a DICOM file", own_process=True)
def dicom_name_not_utf8(root):
    f, files = b.patient(root)
    with open(os.fsencode(f) + b"/bad\xff\xfename.txt", "wb") as fh:
        fh.write(b"notes")
    return ["inspect", P]


@case("dicom", "ok", "converted 1 of 1", check=_converted_size)
def dicom_slice_name_not_utf8_convert(root):
    f, files = b.patient(root)
    os.rename(files[1], os.fsencode(f) + b"/slice\xe9\xff.dcm")
    return ["convert", P, "out", "--no-progress"]


@case("dicom", "ok", "converted 1 of 1", check=_converted_size)
def dicom_big_endian_convert(root):
    f, files = b.patient(root)
    b.big_endian(files)
    return ["convert", P, "out", "--no-progress"]


@case("dicom", "ok", "PAT01_s1", "16x16x4")
def dicom_big_endian_inspect(root):
    f, files = b.patient(root)
    b.big_endian(files)
    return ["inspect", P]


@case("dicom", "ok", "converted 1 of 1", check=_converted_size)
def dicom_no_preamble_no_meta_convert(root):
    f, files = b.patient(root)
    b.no_preamble(files, keep_meta=False)
    return ["convert", P, "out", "--no-progress"]


@case("dicom", "ok", "PAT01_s1", "16x16x4")
def dicom_no_preamble_with_meta_inspect(root):
    f, files = b.patient(root)
    b.no_preamble(files, keep_meta=True)
    return ["inspect", P]


@case("dicom", "ok", "PAT01", slow=True)
def dicom_no_preamble_segment(root):
    f, files = b.patient(root)
    b.no_preamble(files, keep_meta=False)
    return ["segment", P, "-o", "out", "--no-png", "--device", "cpu"]


@case("dicom", "ok", "empty.dcm", "empty file")
def dicom_empty_file(root):
    f, files = b.patient(root)
    (f / "empty.dcm").write_bytes(b"")
    return ["inspect", P]


@case("dicom", "ok", "README.txt", "not a DICOM file")
def dicom_text_file(root):
    f, files = b.patient(root)
    (f / "README.txt").write_text("exported by PACS\n")
    return ["inspect", P]


@case("dicom", "ok", "garbage.dcm", "no image")
def dicom_garbage_after_preamble(root):
    f, files = b.patient(root)
    (f / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    return ["inspect", P]


@case("dicom", "ok", "dangling.dcm", "cannot stat")
def dicom_dangling_link(root):
    f, files = b.patient(root)
    os.symlink(root / "nowhere.dcm", f / "dangling.dcm")
    return ["inspect", P]


@case("dicom", "ok", "DICOMDIR")
def dicom_dicomdir_file(root):
    f, files = b.patient(root)
    (f / "DICOMDIR").write_bytes(b"\0" * 200)
    return ["inspect", P]


@case("dicom", "ok", "same position", check=_converted_size)
def dicom_duplicate_position(root):
    f, files = b.patient(root)
    b.edit(files[0], f / "dup.dcm", SOPInstanceUID="1.2.3.4.5.6.7")
    return ["convert", P, "out", "--no-progress"]


# --- DICOM: one bad slice ---------------------------------------------------------------------------
def _rle_series_with_bad_slice(root):
    f, files = b.patient(root)
    b.rle(files)
    b.corrupt_fragment(files[1])
    return f, files


@case("dicom", "error", "00002.dcm", "cannot decode", "--on-gap interpolate")
def dicom_corrupt_compressed_slice(root):
    _rle_series_with_bad_slice(root)
    return ["convert", P, "out", "--no-progress"]


@case("dicom", "ok", "converted 1 of 1", check=_converted_size)
def dicom_corrupt_compressed_slice_interpolated(root):
    _rle_series_with_bad_slice(root)
    return ["convert", P, "out", "--no-progress", "--on-gap", "interpolate"]


@case("dicom", "error", "00002.dcm", "truncated", "--on-gap interpolate")
def dicom_truncated_middle_slice(root):
    f, files = b.patient(root)
    b.truncate(files[1], 0.8)
    return ["convert", P, "out", "--no-progress"]


@case("dicom", "error", "00002.dcm", "--on-gap interpolate")
def dicom_truncated_slice_coronal(root):
    f, files = b.patient(root)
    b.truncate(files[1], 0.8)
    return ["coronal", P, "out"]


# --- DICOM: folders ------------------------------------------------------------------------------------
@case("dicom", "ok", "(no image series)")
def dicom_empty_folder_inspect(root):
    (root / "in" / "empty").mkdir(parents=True)
    return ["inspect", "in/empty"]


@case("dicom", "error", "in/empty", "no image volume series")
def dicom_empty_folder_convert(root):
    (root / "in" / "empty").mkdir(parents=True)
    return ["convert", "in/empty", "out"]


@case("dicom", "error", "in/nothere", "no such")
def dicom_missing_folder(root):
    (root / "in").mkdir()
    return ["inspect", "in/nothere"]


@case("dicom", "ok", "PAT01: 16 coronal slices")
def dicom_single_file_as_input(root):
    f, files = b.patient(root)
    (f / "notes.txt").write_text("x")
    return ["coronal", str(files[0].relative_to(root)), "out"]


@case("dicom", "ok", "converted 1 of 1")
def dicom_folder_name_not_utf8(root):
    f, files = b.patient(root)
    target = os.fsencode(root / "in") + b"/scan\xff"
    os.rename(f, target)
    return ["convert", os.fsdecode(target), "out", "--no-progress"]


# --- a bad series does not sink a patient, a bad patient does not sink the others ----------------------
@case("dicom", "ok", "used instead of the main series", "00003.dcm", "PAT01: 16 coronal slices")
def dicom_main_series_unreadable_next_series_used(root):
    f, files = b.patient(root)
    big = b.series(f / "thin", seed=1, n=6, series_number=2)  # more slices: the main series
    b.truncate(big[2], 0.7)
    return ["coronal", P, "out"]


def _good_patient_written(root) -> None:
    assert sorted((root / "out").glob("PAT01_*.nii.gz")), "the good patient was not written"


@case("dicom", "error", "PAT02", "not written", "--on-gap interpolate", check=_good_patient_written)
def dicom_one_bad_patient_of_two_coronal(root):
    f, files = b.patient(root)
    bad = b.series(root / "in" / "other", seed=2, patient_id="PAT02")
    b.truncate(bad[1], 0.7)
    return ["coronal", "in", "out"]


@case("dicom", "ok", "PAT01: 16 coronal slices", "filled")
def dicom_truncated_slice_coronal_interpolated(root):
    f, files = b.patient(root)
    b.truncate(files[1], 0.8)
    return ["coronal", P, "out", "--on-gap", "interpolate"]


@case("dicom", "ok", "voxels")
def dicom_corrupt_slice_prefill_interpolated(root):
    _rle_series_with_bad_slice(root)
    return ["prefill", P, "out/label.nii.gz", "--on-gap", "interpolate"]
