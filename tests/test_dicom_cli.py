"""The DICOM verbs: inspect, convert, coronal, select-coronal (run in-process through cochseg3d.cli)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml

from cochseg3d.cli import main
from cochseg3d.dicom import discover, load_series
from cochseg3d.phantom.dicom_write import write_series
from cochseg3d.volume import CANONICAL_DIRECTION, Volume, canonical, read_image

SECRET = "DOE^JANE"


def _patient(folder: Path, patient_id: str, seed: int = 0, direction=np.eye(3), metal: bool = False) -> Volume:
    rng = np.random.default_rng(seed)
    if metal:  # air, soft tissue, a bone block and a wire in axial row j=12 (one coronal slice)
        arr = np.full((16, 20, 18), -1000, np.int16)
        arr[2:14, 3:17, 3:15] = rng.normal(40, 15, (12, 14, 12))
        arr[4:12, 5:9, 5:13] = rng.normal(1200, 100, (8, 4, 8))
        arr[7:9, 12, 4:14] = 3000
    else:
        arr = rng.integers(-1000, 1200, (6, 8, 7)).astype(np.int16)
    vol = Volume(arr, (0.4, 0.4, 0.5), (1.0, 2.0, 3.0), direction)
    write_series(vol, folder, patient_id=patient_id, uid_seed=f"{patient_id}{seed}",
                 series_description="cbct", extra={"PatientName": SECRET})
    return vol


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_inspect_table_and_json(tmp_path, capsys):
    _patient(tmp_path / "in" / "a", "case-a")
    (tmp_path / "in" / "junk.txt").write_text("x")
    assert main(["inspect", str(tmp_path / "in")]) == 0
    out = capsys.readouterr().out
    assert "case-a" in out and "axial" in out and "junk.txt: not a DICOM file" in out
    assert main(["inspect", str(tmp_path / "in"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["series"][0]["files"] == 6 and doc["series"][0]["spacing_mm"] == [0.4, 0.4, 0.5]
    assert doc["skipped"][0]["reason"] == "not a DICOM file"
    assert "DOE" not in json.dumps(doc)


def test_inspect_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "missing: no such folder" in capsys.readouterr().err


def test_convert_many_patients_with_sidecars(tmp_path, capsys):
    a = _patient(tmp_path / "in" / "p1", "case-a")
    _patient(tmp_path / "in" / "p2", "../../escape", seed=1)
    before = _snapshot(tmp_path / "in")
    assert main(["convert", str(tmp_path / "in"), str(tmp_path / "out"), "--no-progress"]) == 0
    assert _snapshot(tmp_path / "in") == before
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outs == ["case-a_s1.json", "case-a_s1.nii.gz", "escape_s1.json", "escape_s1.nii.gz"]
    assert not list(tmp_path.glob("escape*")) and not list((tmp_path / "out").parent.parent.glob("escape*"))
    got = read_image(tmp_path / "out" / "case-a_s1.nii.gz")
    assert got.grid.allclose(a.grid)
    np.testing.assert_array_equal(got.array, a.array)
    side_text = (tmp_path / "out" / "case-a_s1.json").read_text()
    side = json.loads(side_text)
    assert side["orientation"] == "axial" and side["size"] == [7, 8, 6] and side["modality"] == "CT"
    uid = discover(tmp_path / "in" / "p1")[0].series_uid
    for secret in ("DOE", uid, "20000101", str(tmp_path)):
        assert secret not in side_text


def test_convert_refuses_output_inside_input(tmp_path, capsys):
    _patient(tmp_path / "in", "p")
    assert main(["convert", str(tmp_path / "in"), str(tmp_path / "in" / "nii")]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (tmp_path / "in" / "nii").exists()


def test_convert_reports_a_gap_and_fills_on_request(tmp_path, capsys):
    _patient(tmp_path / "in", "p")
    sorted((tmp_path / "in").iterdir())[3].unlink()
    assert main(["convert", str(tmp_path / "in"), str(tmp_path / "out"), "--no-progress"]) == 1
    assert not list((tmp_path / "out").glob("*.nii.gz"))
    assert main(["convert", str(tmp_path / "in"), str(tmp_path / "out"), "--no-progress",
                 "--on-gap", "interpolate"]) == 0
    assert read_image(tmp_path / "out" / "p_s1.nii.gz").array.shape[0] == 6


def test_coronal_nifti_slabs_keep_geometry(tmp_path, capsys):
    vol = _patient(tmp_path / "in", "p")
    assert main(["coronal", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    can = canonical(vol)
    slabs = sorted((tmp_path / "out").glob("p_*.nii.gz"))
    assert len(slabs) == can.array.shape[0] == 8
    s3 = read_image(tmp_path / "out" / "p_3.nii.gz")
    np.testing.assert_array_equal(s3.array[0], can.array[3])
    np.testing.assert_allclose(s3.direction, CANONICAL_DIRECTION)
    np.testing.assert_allclose(s3.index_to_lps([0, 0, 0]), can.index_to_lps([0, 0, 3]), atol=1e-4)
    manifest = yaml.safe_load((tmp_path / "out" / "coronal_slices.yaml").read_text())
    assert manifest["p"]["of"] == 8 and len(manifest["p"]["slices"]) == 8
    assert "p: 8 coronal slices of 8" in capsys.readouterr().out


def test_coronal_png_windowed_and_same_size(tmp_path):
    from PIL import Image

    vol = _patient(tmp_path / "in", "p")
    assert main(["coronal", str(tmp_path / "in"), str(tmp_path / "out"), "--png", "--window", "0,2000"]) == 0
    can = canonical(vol)
    png = np.asarray(Image.open(tmp_path / "out" / "p_2.png"))
    assert png.shape == can.array[2].shape and png.dtype == np.uint8
    expected = np.clip((can.array[2].astype(float) + 1000) / 2000 * 255, 0, 255)
    np.testing.assert_allclose(png, expected, atol=1)


def test_coronal_metal_only_keeps_the_electrode_slices(tmp_path, capsys):
    pytest.importorskip("cochseg3d.metal")
    _patient(tmp_path / "in" / "a", "a", metal=True)
    _patient(tmp_path / "in" / "b", "b", seed=2, metal=True)
    assert main(["coronal", str(tmp_path / "in"), str(tmp_path / "out"), "--metal-only", "--png"]) == 0
    out = capsys.readouterr().out
    # the wire sits in axial row j=12, i.e. one coronal slice (k=12 of the canonical stack)
    assert "a: 1 slices with metal of 20" in out and "b: 1 slices with metal of 20" in out
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a_12.png", "b_12.png"]
    manifest = yaml.safe_load((tmp_path / "out" / "coronal_slices.yaml").read_text())
    assert manifest["a"]["slices"] == [12] and manifest["a"]["metal_only"]


def test_coronal_from_a_nifti_file(tmp_path, capsys):
    from cochseg3d.volume import write_image

    vol = Volume(np.zeros((4, 5, 6), np.int16), (1, 1, 1))
    write_image(vol, tmp_path / "scan.nii.gz")
    assert main(["coronal", str(tmp_path / "scan.nii.gz"), str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("scan_*.nii.gz"))) == 5


def test_select_coronal_copies_only_coronal_files(tmp_path, capsys):
    coronal = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float)
    _patient(tmp_path / "in" / "cor", "p", direction=coronal)
    _patient(tmp_path / "in" / "ax", "p", seed=1)
    (tmp_path / "in" / "notes.txt").write_text("x")
    before = _snapshot(tmp_path / "in")
    assert main(["select-coronal", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    assert _snapshot(tmp_path / "in") == before
    copied = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(copied) == 6 and all(p.parent.name == "cor" for p in copied)
    for p in copied:
        iop = [float(x) for x in pydicom.dcmread(p, stop_before_pixels=True).ImageOrientationPatient]
        np.testing.assert_allclose(iop, [1, 0, 0, 0, 0, -1])
    assert "copied 6 coronal file(s)" in capsys.readouterr().out
    vol = load_series(discover(tmp_path / "out")[0])
    assert vol.array.shape == (6, 8, 7)


def test_inspect_summarises_many_skips_by_reason(tmp_path, capsys):
    _patient(tmp_path, "p")
    for n in range(40):
        (tmp_path / f"junk{n:02d}.txt").write_text("x")
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped 40 file(s)" in out and "40 x not a DICOM file" in out and "junk39" not in out
    assert main(["inspect", str(tmp_path), "--all-skips"]) == 0
    assert "junk39.txt: not a DICOM file" in capsys.readouterr().out


def _set_iop(folder: Path, iop: list[float]) -> None:
    for p in folder.glob("*.dcm"):
        ds = pydicom.dcmread(p)
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in iop]
        ds.save_as(p)


def test_select_coronal_checks_orientation_as_the_series_reader_does(tmp_path, capsys):
    coronal = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float)
    for name in ("near", "short", "zero"):
        _patient(tmp_path / "in" / name, name, direction=coronal)
    _set_iop(tmp_path / "in" / "near", [1.004, 0, 0, 0, 0, -0.997])  # rounding: normalised, kept
    _set_iop(tmp_path / "in" / "short", [0.96, 0, 0, 0, 0, -0.96])  # within 0.05 of coronal, but not unit
    _set_iop(tmp_path / "in" / "zero", [0, 0, 0, 0, 0, 0])
    assert main(["select-coronal", str(tmp_path / "in"), str(tmp_path / "out"), "--verbose-skips"]) == 0
    copied = sorted((tmp_path / "out").rglob("*.dcm"))
    assert {p.parent.name for p in copied} == {"near"} and len(copied) == 6
    out = capsys.readouterr().out
    assert "lengths 0.96 and 0.96, not 1" in out and "has a zero vector" in out
    assert not list((tmp_path / "out").rglob(".*"))  # no temporary left by the copies
