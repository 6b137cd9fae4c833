"""cochseg3d.segment(): output on exactly the source grid, overlaying the truth, in memory or to a
folder; the `segment` CLI end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import cochseg3d
from cochseg3d.cli import main
from cochseg3d.preprocessing import Preprocessing
from cochseg3d.volume import Volume, write_image
from tests.helpers import bright_model

CORONAL = np.array([[1, 0, 0], [0, 0, -1], [0, -1, 0]], dtype=float)
SAGITTAL = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float)


def _oblique():
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", [20, -15, 25], degrees=True).as_matrix()


def _curved_wire(direction, spacing=(0.25, 0.3, 0.35), shape=(36, 40, 44)):
    """A bright bent wire (3000 HU) in soft tissue plus a small bright speck far away (truth excludes it)."""
    vol = Volume(np.zeros(shape, np.float32), spacing, (-3.0, 4.0, 7.0), direction)
    kk, jj, ii = np.indices(shape)
    lps = vol.index_to_lps(np.stack([ii, jj, kk], -1).reshape(-1, 3)).reshape(*shape, 3)
    c = vol.index_to_lps(np.array(vol.size) / 2.0)
    rel = lps - c
    # an arc of radius 3 mm in a tilted plane, 0.5 mm thick
    r = np.sqrt(rel[..., 0] ** 2 + rel[..., 1] ** 2)
    truth = (np.abs(r - 3.0) < 0.5) & (np.abs(rel[..., 2] - 0.2 * rel[..., 0]) < 0.5) & (rel[..., 1] > -1.0)
    arr = np.where(truth, 3000.0, 40.0).astype(np.float32)
    speck = np.zeros(shape, bool)
    speck[1, 1, 1] = True  # one bright voxel in a corner: removed by post-processing
    arr[speck] = 3000.0
    return vol.with_array(arr), truth


@pytest.mark.parametrize("name,direction", [("axial", np.eye(3)), ("coronal", CORONAL), ("sagittal", SAGITTAL),
                                            ("oblique", _oblique())])
def test_label_is_on_the_source_grid_and_overlays_the_truth(name, direction):
    vol, truth = _curved_wire(direction)
    pre = Preprocessing(spacing_mm=0.3, roi_size=(64, 64))
    lab = cochseg3d.segment(vol, model=bright_model(pre), device="cpu", qc=False).label
    assert lab.grid.allclose(vol.grid, atol_mm=1e-6), name
    assert lab.array.shape == vol.array.shape and lab.array.dtype == np.uint8
    got = lab.array.astype(bool)
    dice = 2 * (got & truth).sum() / (got.sum() + truth.sum())
    # a 1 mm wire loses some edge voxels to the 0.3 mm in-plane resampling (oblique series also
    # go through one resampling each way) but must not move
    assert dice > (0.75 if name == "oblique" else 0.85), (name, dice)
    com = [vol.index_to_lps(np.argwhere(m)[:, ::-1].mean(axis=0)) for m in (got, truth)]
    assert np.linalg.norm(com[0] - com[1]) < 0.3, name
    assert lab.array[1, 1, 1] == 0  # the far speck is gone


def _checkpoint(path):
    from cochseg3d.models import build_model, save_checkpoint

    cfg = {"name": "unet2d", "channels": [4, 8], "strides": [2], "num_res_units": 0}
    torch.manual_seed(0)
    model = build_model(cfg)
    save_checkpoint(path, {"model_state": model.state_dict(), "model": cfg,
                           "preprocessing": Preprocessing(spacing_mm=0.4, roi_size=(32, 32)).to_dict(),
                           "config": {}, "metrics": {}})
    return path


def test_segment_cli_folder_of_patients_skips_a_bad_one(tmp_path):
    ckpt = _checkpoint(tmp_path / "m.pt")
    inp = tmp_path / "in"
    grids = {}
    for n, direction in enumerate([np.eye(3), CORONAL]):
        vol, _ = _curved_wire(direction, shape=(14, 16, 18))
        write_image(vol, inp / f"p{n}.nii.gz")
        grids[f"p{n}"] = vol.grid
    (inp / "broken.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    rc = main(["segment", str(inp), "-o", str(out), "--model", str(ckpt), "--device", "cpu", "--probabilities"])
    assert rc == 1  # one patient failed, the others finished
    summary = json.loads((out / "summary.json").read_text())
    assert {d["case_id"] for d in summary["done"]} == {"p0", "p1"}
    assert len(summary["failed"]) == 1 and summary["failed"][0]["case_id"] == "broken"
    assert str(inp) not in (out / "summary.json").read_text()  # no input path in what is shared
    rows = (out / "arrays.csv").read_text().splitlines()  # the cohort table: one row per measured array
    assert rows[0].startswith("case_id,") and {r.split(",")[0] for r in rows[1:]} <= {"p0", "p1"}
    for case, grid in grids.items():
        img = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert img.GetSize() == grid.size
        np.testing.assert_allclose(img.GetSpacing(), grid.spacing_mm, atol=1e-5)
        np.testing.assert_allclose(img.GetOrigin(), grid.origin_mm, atol=1e-4)
        np.testing.assert_allclose(img.GetDirection(), grid.direction, atol=1e-6)
        prob = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.prob.nii.gz")))
        assert prob.dtype == np.float32 and 0.0 <= prob.min() and prob.max() <= 1.0
        rec = json.loads((out / f"{case}.contacts.json").read_text())
        assert rec["n_contacts"] == len(rec["contacts_lps_mm"]) == len(rec["contacts_ras_mm"])
        assert (out / f"{case}.png").stat().st_size > 1000


def test_segment_cli_dicom_folder_with_dicom_seg(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from cochseg3d.phantom.dicom_write import write_series

    ckpt = _checkpoint(tmp_path / "m.pt")
    vol, _ = _curved_wire(CORONAL, shape=(10, 16, 18))
    vol.array[:] = np.rint(vol.array)
    files = write_series(vol, tmp_path / "dcm", patient_id="PAT01", uid_seed="t")
    out = tmp_path / "out"
    rc = main(["segment", str(tmp_path / "dcm"), "-o", str(out), "--model", str(ckpt), "--device", "cpu",
               "--seg-dicom", "--no-png"])
    assert rc == 0
    reader = sitk.ImageSeriesReader()
    src = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(tmp_path / "dcm")))
    lab = sitk.ReadImage(str(out / "PAT01.nii.gz"))
    assert lab.GetSize() == src.GetSize()
    np.testing.assert_allclose(lab.GetOrigin(), src.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(lab.GetDirection(), src.GetDirection(), atol=1e-6)
    seg = pydicom.dcmread(out / "PAT01.seg.dcm")
    assert seg.Modality == "SEG"
    src_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src_uid
    assert int(seg.NumberOfFrames) == len(files)


def _corner_points(img):
    size = img.GetSize()
    pts = [img.TransformContinuousIndexToPhysicalPoint([float(a), float(b), float(c)])
           for a in (0, size[0] - 1) for b in (0, size[1] - 1) for c in (0, size[2] - 1)]
    return np.array(sorted(np.round(pts, 3).tolist()))


@pytest.mark.parametrize("direction", [np.eye(3), CORONAL], ids=["axial", "coronal"])
def test_label_overlays_dcm2niix_conversion(tmp_path, direction):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from cochseg3d.phantom.dicom_write import write_series

    exe = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
    if not Path(exe).exists():
        pytest.skip("dcm2niix not installed")
    ckpt = _checkpoint(tmp_path / "m.pt")
    vol, _ = _curved_wire(direction, shape=(12, 14, 16))
    vol.array[:] = np.rint(vol.array)
    write_series(vol, tmp_path / "dcm", patient_id="P1", uid_seed="x")
    assert main(["segment", str(tmp_path / "dcm"), "-o", str(tmp_path / "out"), "--model", str(ckpt),
                 "--device", "cpu", "--no-png"]) == 0
    (tmp_path / "nii").mkdir()
    subprocess.run([exe, "-z", "y", "-f", "img", "-o", str(tmp_path / "nii"), str(tmp_path / "dcm")],
                   check=True, capture_output=True)
    ref = sitk.ReadImage(str(tmp_path / "nii" / "img.nii.gz"))
    lab = sitk.ReadImage(str(tmp_path / "out" / "P1.nii.gz"))
    # same voxel centres in patient space (dcm2niix may store the rows in another order)
    np.testing.assert_allclose(_corner_points(lab), _corner_points(ref), atol=1e-2)
    assert sorted(lab.GetSpacing()) == pytest.approx(sorted(ref.GetSpacing()), abs=1e-4)


def test_segment_cli_shards_patients_across_torchrun_ranks(tmp_path, monkeypatch):
    ckpt = _checkpoint(tmp_path / "m.pt")
    for n in range(3):
        vol, _ = _curved_wire(np.eye(3), shape=(8, 10, 12))
        write_image(vol, tmp_path / "in" / f"p{n}.nii.gz")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["segment", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(ckpt),
                 "--device", "cpu", "--no-png"]) == 0
    # rank 1 of 2 takes every second patient starting with the second
    labels = sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz") if not p.name.endswith(".array.nii.gz"))
    assert labels == ["p1.nii.gz"]
    assert (tmp_path / "out" / "summary.rank1.json").is_file()


def test_shipped_default_model_loads_with_provenance():
    from cochseg3d.inference import DEFAULT_MODEL, load_model

    if not DEFAULT_MODEL.is_file():
        pytest.skip("no default model built (scripts/train_default_model.py)")
    assert DEFAULT_MODEL.stat().st_size <= 10 * 2**20
    model, pre, info = load_model()
    assert "synthetic" in info["provenance"]["training_data"]
    assert pre.in_channels == model.cochseg3d_preprocessing.in_channels
    x = torch.zeros((1, pre.in_channels, 64, 64))
    assert tuple(model(x).shape) == (1, 2, 64, 64)


@pytest.mark.slow
def test_default_model_segments_a_phantom_on_its_grid():
    from cochseg3d.inference import load_model, run_segmentation
    from cochseg3d.metrics import dice
    from cochseg3d.phantom import generate_patient

    case = generate_patient(123456, preset="small", orientation="sagittal")
    model, pre, _ = load_model()
    res = run_segmentation(case.image, model)
    assert res.label.grid.allclose(case.image.grid, atol_mm=1e-6)
    assert dice(res.label.array, case.label.array) > 0.6


# --- cochseg3d.segment(), the public function -----------------------------------------------------
PRE = Preprocessing(spacing_mm=0.3, roi_size=(64, 64))


def test_segment_in_memory_writes_nothing_and_returns_label_contacts_qc(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vol, truth = _curved_wire(CORONAL, shape=(20, 24, 28))
    res = cochseg3d.segment(vol, model=bright_model(PRE), device="cpu", case_id="wire/01")
    assert isinstance(res, cochseg3d.Result) and res.files == {} and list(tmp_path.iterdir()) == []
    assert res.case_id == "wire_01"  # sanitised: no path separators
    assert res.label.grid.allclose(vol.grid, atol_mm=1e-6) and res.label.array.dtype == np.uint8
    got = res.label.array.astype(bool)
    assert 2 * (got & truth).sum() / (got.sum() + truth.sum()) > 0.8
    assert len(res.contacts.lps_mm) > 0 and res.qc["verdict"] in ("ok", "review", "fail")
    with pytest.raises(Exception):
        res.case_id = "other"  # a frozen record
    assert cochseg3d.segment(vol, model=bright_model(PRE), device="cpu", qc=False).qc is None


def test_segment_to_a_folder_records_the_case_id_not_the_input_path(tmp_path):
    from cochseg3d.phantom.dicom_write import write_series

    vol, _ = _curved_wire(CORONAL, shape=(10, 16, 18))
    vol.array[:] = np.rint(vol.array)
    src = tmp_path / "Doe_John_1961"  # folder names often hold the patient's name
    write_series(vol, src, patient_id="P07", uid_seed="n")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    out = tmp_path / "seg"
    res = cochseg3d.segment(src, out, model=bright_model(PRE), device="cpu", png=True, electrode="MED-EL")
    assert res.case_id == "P07"
    assert {"label", "contacts", "png"} <= set(res.files) <= {"label", "contacts", "png", "markups", "contacts_csv"}
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(f).name for f in res.files.values())
    text = (out / "P07.contacts.json").read_text()
    rec = json.loads(text)
    assert rec["case_id"] == "P07" and rec["qc"] == res.qc and rec["n_contacts"] == len(res.contacts.lps_mm)
    assert "Doe_John" not in text and str(tmp_path) not in text and "source" not in rec
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # the input is untouched


def test_segment_refuses_an_output_inside_the_input_folder(tmp_path, capsys):
    vol, _ = _curved_wire(np.eye(3), shape=(8, 10, 12))
    write_image(vol, tmp_path / "pat" / "scan.nii.gz")
    with pytest.raises(ValueError, match="inside the input folder"):
        cochseg3d.segment(tmp_path / "pat", tmp_path / "pat" / "seg", model=bright_model(PRE), device="cpu")
    ckpt = _checkpoint(tmp_path / "m.pt")
    capsys.readouterr()
    rc = main(["segment", str(tmp_path / "pat"), "-o", str(tmp_path / "pat" / "seg"), "--model", str(ckpt),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "inside the input folder" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "pat").iterdir()) == ["scan.nii.gz"]
    (tmp_path / "taken").write_text("a file, not a folder")
    rc = main(["segment", str(tmp_path / "pat"), "-o", str(tmp_path / "taken"), "--model", str(ckpt)])
    assert rc == 2 and "exists and is not a folder" in capsys.readouterr().err


def test_hu_plus_1000_image_with_a_3071_ceiling_is_not_declared_metal_free():
    from cochseg3d.phantom import generate_patient
    from cochseg3d.qc import image_problem

    # stored as HU + 1000, clipped at 3071: metal and the densest bone share the ceiling
    case = generate_patient(1, preset="small", offset_hu=1000.0, saturation_hu=3071.0, shape=64)
    assert image_problem(case.image).startswith("no metal")  # what the grey values alone say
    res = cochseg3d.segment(case.image, model=bright_model(Preprocessing(spacing_mm=0.4, roi_size=(64, 64))),
                            device="cpu", qc=False)
    assert res.info["qc"]["image_problem"] is None
    assert res.label.array.sum() > 0


def test_import_cochseg3d_stays_light():
    import subprocess
    import sys

    code = ("import sys, cochseg3d; heavy = [m for m in ('torch', 'itk', 'monai') if m in sys.modules]; "
            "assert not heavy, heavy; assert callable(cochseg3d.segment)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_segment_cli_no_array_label_skips_the_fitted_array_and_removes_an_earlier_one(tmp_path):
    ckpt = _checkpoint(tmp_path / "m.pt")
    vol, _ = _curved_wire(np.eye(3), shape=(10, 16, 18))
    write_image(vol, tmp_path / "p.nii.gz")
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "p.nii.gz"), "-o", str(out), "--model", str(ckpt), "--device", "cpu", "--no-png"]
    assert main(args) == 0
    rec = json.loads((out / "p.contacts.json").read_text())
    assert "array_label" in rec
    assert (out / "p.array.nii.gz").is_file() == rec["array_label"]["written"]
    (out / "p.array.nii.gz").write_bytes(b"an earlier run's array")
    assert main(args + ["--no-array-label"]) == 0
    rec = json.loads((out / "p.contacts.json").read_text())
    assert "array_label" not in rec and not (out / "p.array.nii.gz").exists()
    assert (out / "p.nii.gz").is_file()
