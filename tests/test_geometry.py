"""Loader geometry against the peers: SimpleITK's ImageSeriesReader (GDCM ordering) and dcm2niix.

Written series in axial, coronal, sagittal and oblique acquisition, and the real scanner series in
``../shared/realdata/``. Tolerance 1e-3 mm for positions and spacings.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from cochseg3d.dicom import discover, load_input, load_series
from cochseg3d.phantom.dicom_write import write_series
from cochseg3d.volume import CANONICAL_DIRECTION, Volume, canonical, write_image

REALDATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata" / "dcm_qa_sag"
TOL_MM = 1e-3

AXIAL = np.eye(3)
CORONAL = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float)  # IOP (1,0,0,0,0,-1)
SAGITTAL = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float)  # IOP (0,1,0,0,0,-1)


def _oblique() -> np.ndarray:
    t = sitk.Euler3DTransform()
    t.SetRotation(0.25, -0.1, 0.35)
    return np.asarray(t.GetMatrix()).reshape(3, 3)


DIRECTIONS = {"axial": AXIAL, "coronal": CORONAL, "sagittal": SAGITTAL, "oblique": _oblique()}


def _dcm2niix_bin() -> str:
    try:
        import dcm2niix
    except ImportError:
        pytest.skip("dcm2niix (PyPI package 'dcm2niix') is not installed")
    if not Path(dcm2niix.bin).exists():
        pytest.skip(f"dcm2niix binary missing at {dcm2niix.bin}")
    return dcm2niix.bin


def _run_dcm2niix(folder: Path, out: Path) -> nib.Nifti1Image:
    out.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([_dcm2niix_bin(), "-z", "n", "-b", "n", "-f", "ref", "-o", str(out), str(folder)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    files = sorted(out.glob("ref*.nii"))
    assert len(files) == 1, f"dcm2niix wrote {files}"
    return nib.load(str(files[0]))


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _assert_same_as_sitk(vol: Volume, img: sitk.Image) -> None:
    np.testing.assert_allclose(vol.spacing_mm, img.GetSpacing(), atol=TOL_MM)
    np.testing.assert_allclose(vol.origin_mm, img.GetOrigin(), atol=TOL_MM)
    np.testing.assert_allclose(vol.direction, np.reshape(img.GetDirection(), (3, 3)), atol=1e-5)
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(img))


def _assert_same_as_dcm2niix(nifti_path: Path, ref: nib.Nifti1Image) -> None:
    """Same affine and the same value at the same physical place (after the nearest RAS reorientation)."""
    ours = nib.as_closest_canonical(nib.load(str(nifti_path)))
    theirs = nib.as_closest_canonical(ref)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=TOL_MM)
    np.testing.assert_allclose(np.asarray(ours.dataobj, dtype=float), np.asarray(theirs.dataobj, dtype=float))


def _object(shape=(9, 10, 11)) -> np.ndarray:
    rng = np.random.default_rng(3)
    arr = rng.integers(-1000, 2500, shape).astype(np.int16)
    arr[2:5, 3:7, 4:6] = 3000  # a bright block breaks every symmetry
    return arr


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_written_series_match_sitk_and_dcm2niix(tmp_path, name):
    truth = Volume(_object(), (0.3, 0.35, 0.4), (-12.5, 20.25, 33.0), DIRECTIONS[name])
    write_series(truth, tmp_path / "dcm", patient_id="geo", uid_seed=name)
    found = discover(tmp_path / "dcm")
    assert len(found) == 1 and found[0].orientation == name and not found.all_skipped
    vol = load_series(found[0])
    assert vol.grid.allclose(truth.grid, atol_mm=TOL_MM)
    _assert_same_as_sitk(vol, _sitk_series(tmp_path / "dcm"))
    ours = write_image(vol, tmp_path / "ours.nii.gz")
    _assert_same_as_dcm2niix(ours, _run_dcm2niix(tmp_path / "dcm", tmp_path / "d2n"))


def test_canonical_stacks_of_three_acquisitions_agree(tmp_path):
    """One object acquired axially, coronally and sagittally gives the same coronal stack."""
    can = Volume(_object((8, 9, 10)), (0.4, 0.3, 0.5), (-20.0, 10.0, 5.0), CANONICAL_DIRECTION)
    stacks = {}
    for name, code in (("axial", "LPS"), ("coronal", "LIP"), ("sagittal", "PIR")):
        acq = Volume.from_sitk(sitk.DICOMOrient(can.to_sitk(), code))
        write_series(acq, tmp_path / name, patient_id="same", uid_seed=name)
        info = discover(tmp_path / name)[0]
        assert info.orientation == name
        stacks[name] = canonical(load_series(info))
    for name, got in stacks.items():
        assert got.grid.allclose(can.grid, atol_mm=TOL_MM), name
        np.testing.assert_array_equal(got.array, can.array, err_msg=name)


def test_phantom_canonical_stacks_agree_across_acquisitions(tmp_path):
    """Helper A's phantom acquired in three orientations: written, loaded, the same coronal stack."""
    phantom = pytest.importorskip("cochseg3d.phantom", reason="the phantom package is not available")
    if not hasattr(phantom, "generate_patient"):
        pytest.skip("cochseg3d.phantom.generate_patient not available")
    stacks = {}
    for orient in ("axial", "coronal", "sagittal"):
        case = phantom.generate_patient(0, preset="small", orientation=orient, spacing_mm=0.8)
        write_series(case.image, tmp_path / orient, patient_id="ph", uid_seed=orient)
        info = discover(tmp_path / orient)[0]
        assert info.orientation == orient
        loaded = load_series(info)
        assert loaded.grid.allclose(case.image.grid, atol_mm=TOL_MM)
        stacks[orient] = canonical(loaded)
    for orient in ("coronal", "sagittal"):
        assert stacks[orient].grid.allclose(stacks["axial"].grid, atol_mm=TOL_MM), orient
        np.testing.assert_array_equal(stacks[orient].array, stacks["axial"].array, err_msg=orient)


# --- real scanner data ----------------------------------------------------------------------------
def _realdata(sub: str) -> Path:
    path = REALDATA / sub
    if not path.is_dir():
        pytest.skip(f"real scanner DICOM not found at {path} (see ../shared/realdata/README.md)")
    return path


@pytest.mark.parametrize("sub", ["sag_epi_63slices", "sag_gre_5slices"])
def test_real_series_match_sitk(sub):
    folder = _realdata(sub)
    found = discover(folder)
    assert len(found) == 1, [s.summary() for s in found]
    info = found[0]
    assert info.orientation == "sagittal" and info.modality == "MR"
    with pytest.warns(UserWarning, match="not CT"):
        vol = load_series(info)
    img = _sitk_series(folder)
    np.testing.assert_allclose(vol.spacing_mm, img.GetSpacing(), atol=TOL_MM)
    np.testing.assert_allclose(vol.origin_mm, img.GetOrigin(), atol=TOL_MM)
    np.testing.assert_allclose(vol.direction, np.reshape(img.GetDirection(), (3, 3)), atol=1e-5)
    np.testing.assert_allclose(vol.array, sitk.GetArrayFromImage(img))


def test_real_series_matches_dcm2niix_reference(tmp_path):
    folder = _realdata("sag_gre_5slices")
    ref_path = REALDATA / "ref" / "sag_gre_5slices_dcm2niix.nii"
    if not ref_path.exists():
        pytest.skip(f"reference NIfTI missing: {ref_path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MR, not CT
        vol = load_input(folder)
    assert vol.meta["modality"] == "MR" and vol.meta["series_uid"]
    ours = write_image(vol, tmp_path / "ours.nii.gz")
    _assert_same_as_dcm2niix(ours, nib.load(str(ref_path)))


def test_real_epi_matches_dcm2niix_run(tmp_path):
    folder = _realdata("sag_epi_63slices")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        vol = load_input(folder)
    ours = write_image(vol, tmp_path / "ours.nii.gz")
    _assert_same_as_dcm2niix(ours, _run_dcm2niix(folder, tmp_path / "d2n"))


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"], ids=["raw", "rle"])
def test_enhanced_multiframe_matches_the_single_frame_series_and_dcm2niix(tmp_path, syntax):
    """A legacy-converted enhanced CT (one multi-frame file, frames stored top-down) loads like its source."""
    hd = pytest.importorskip("highdicom", reason="highdicom builds the enhanced multi-frame file")
    import pydicom
    from pydicom.uid import generate_uid

    truth = Volume(_object(), (0.3, 0.35, 0.4), (-12.5, 20.25, 33.0), DIRECTIONS["oblique"])
    files = write_series(truth, tmp_path / "sf", patient_id="mf", uid_seed="mf", extra={"PatientName": "ANON^"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mf = hd.legacy.LegacyConvertedEnhancedCTImage(
            [pydicom.dcmread(f) for f in files], series_instance_uid=generate_uid(), series_number=5,
            sop_instance_uid=generate_uid(), instance_number=1, transfer_syntax_uid=syntax)
    (tmp_path / "mf").mkdir()
    mf.save_as(tmp_path / "mf" / "enhanced.dcm")
    found = discover(tmp_path / "mf")
    assert len(found) == 1 and len(found[0].slices) == truth.array.shape[0]
    assert (found[0].slices[0].pixel_offset is None) == (syntax != "1.2.840.10008.1.2.1")
    vol = load_series(found[0])
    assert vol.grid.allclose(truth.grid, atol_mm=TOL_MM)
    np.testing.assert_array_equal(vol.array, truth.array)
    ours = write_image(vol, tmp_path / "ours.nii.gz")
    ref = _run_dcm2niix(tmp_path / "mf", tmp_path / "d2n")
    if syntax == "1.2.840.10008.1.2.1":
        _assert_same_as_dcm2niix(ours, ref)
    else:  # dcm2niix v1.0.20260724 keeps the stored frame order of compressed enhanced files: affine only
        a, b = nib.as_closest_canonical(nib.load(str(ours))), nib.as_closest_canonical(ref)
        np.testing.assert_allclose(a.affine, b.affine, atol=TOL_MM)
