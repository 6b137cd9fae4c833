"""cochseg3d.bundle / `cochseg3d export-bundle`: the shipped model as a MONAI Bundle, run by MONAI's
own runner, labels a phantom as `cochseg3d segment` does; incomplete bundles, foreign checkpoints and
non-empty output folders are refused with a message naming the file."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import cochseg3d
from cochseg3d.bundle import BUNDLE_FILES, check_bundle, export_bundle
from cochseg3d.cli import UserError, main
from cochseg3d.metrics import dice
from cochseg3d.phantom import generate_patient
from cochseg3d.volume import write_image

GEOMETRY = ("GetSize", "GetSpacing", "GetOrigin", "GetDirection")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return export_bundle(tmp_path_factory.mktemp("bundle") / "cochseg3d_bundle")


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    """A tiny coronal-acquired phantom (48^3 at 0.4 mm, the array inside) as IN/case.nii.gz."""
    folder = tmp_path_factory.mktemp("in")
    case = generate_patient(3, preset="small", orientation="coronal", shape=48)
    write_image(case.image, folder / "case.nii.gz")
    return folder


def _compare(bundle_label, segment_label):
    a, b = sitk.ReadImage(str(bundle_label)), sitk.ReadImage(str(segment_label))
    for getter in GEOMETRY:
        np.testing.assert_allclose(getattr(a, getter)(), getattr(b, getter)(), atol=1e-5, err_msg=getter)
    x, y = sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)
    assert y.sum() > 100, "the reference label is (nearly) empty: the comparison would prove nothing"
    assert set(np.unique(x)) <= {0, 1}
    return dice(x > 0, y > 0)


def test_files_and_metadata(bundle):
    for rel in BUNDLE_FILES:
        assert (bundle / rel).is_file(), rel
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    config = json.loads((bundle / "configs/inference.json").read_text())
    assert meta["required_packages_version"]["cochseg3d"] == cochseg3d.__version__
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == config["network_def"]["in_channels"] == 3  # 2.5D: three coronal slices
    assert config["network_def"]["_target_"] == "monai.networks.nets.UNet"
    assert "synthetic" in meta["intended_use"] and "not validated" in meta["intended_use"]
    assert "## Limits" in (bundle / "docs/README.md").read_text()
    # models/model.pt is a plain state dict that fits the bundle's network definition
    from monai.bundle import ConfigParser

    parser = ConfigParser(config)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models/model.pt", weights_only=True))


def test_monai_runner_matches_segment(bundle, phantom_dir, tmp_path):
    from monai.bundle import run

    run(config_file=str(bundle / "configs/inference.json"), dataset_dir=str(phantom_dir),
        output_dir=str(tmp_path / "bundle_out"))
    cochseg3d.segment(phantom_dir / "case.nii.gz", tmp_path / "seg", device="cpu", qc=False)
    assert _compare(tmp_path / "bundle_out" / "case_seg.nii.gz", tmp_path / "seg" / "case.nii.gz") >= 0.99


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("fire") is None, reason="MONAI's command line needs fire")
def test_monai_command_line(bundle, phantom_dir, tmp_path):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs/inference.json"),
           "--dataset_dir", str(phantom_dir), "--output_dir", str(tmp_path / "out")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    cochseg3d.segment(phantom_dir / "case.nii.gz", tmp_path / "seg", device="cpu", qc=False)
    assert _compare(tmp_path / "out" / "case_seg.nii.gz", tmp_path / "seg" / "case.nii.gz") >= 0.99


def test_incomplete_bundle_names_the_missing_file(bundle, tmp_path):
    import shutil

    partial = shutil.copytree(bundle, tmp_path / "partial")
    assert check_bundle(partial) == partial
    (partial / "models" / "model.pt").unlink()
    with pytest.raises(UserError, match=r"incomplete bundle, missing models/model\.pt"):
        check_bundle(partial)
    (partial / "configs" / "metadata.json").write_text("{not json")
    (partial / "models" / "model.pt").write_bytes((bundle / "models" / "model.pt").read_bytes())
    with pytest.raises(UserError, match=r"metadata\.json: not readable JSON"):
        check_bundle(partial)


def test_checkpoint_that_is_not_a_model(tmp_path, capsys):
    foreign = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(UserError, match=r"weights\.pt: not a cochseg3d model checkpoint"):
        export_bundle(tmp_path / "out", model=foreign)
    assert not (tmp_path / "out").exists()  # nothing written for a refused model
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights")
    assert main(["export-bundle", str(tmp_path / "out"), "--model", str(text)]) == 2
    err = capsys.readouterr().err
    assert "notes.pt: not a cochseg3d model checkpoint" in err and "Traceback" not in err


def test_non_empty_output_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("the user's")
    assert main(["export-bundle", str(out)]) == 2
    assert "mine: folder is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert main(["export-bundle", str(out), "--overwrite"]) == 0
    assert (out / "keep.txt").read_text() == "the user's"
    check_bundle(out)


def test_killed_export_is_redone_without_overwrite(tmp_path, capsys):
    from cochseg3d.bundle import EXPORT_MARKER

    out = export_bundle(tmp_path / "b")
    assert not (out / EXPORT_MARKER).exists()  # a finished export leaves no marker
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / "models" / "cochseg3d.pt").unlink()  # as a kill before the last file leaves it
    (out / EXPORT_MARKER).write_text(json.dumps({"pid": int(dead.stdout)}))
    assert main(["export-bundle", str(out)]) == 0
    check_bundle(out)
    assert (out / "models" / "cochseg3d.pt").is_file() and not (out / EXPORT_MARKER).exists()
    # a live writer's folder is refused, and so is a killed export's folder that holds the user's files
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / EXPORT_MARKER).write_text(json.dumps({"pid": live.pid}))
        assert main(["export-bundle", str(out)]) == 2
        assert f"another export (pid {live.pid})" in capsys.readouterr().err
    finally:
        live.kill()
        live.wait()
    (out / EXPORT_MARKER).write_text(json.dumps({"pid": int(dead.stdout)}))
    (out / "notes.txt").write_text("the user's")
    assert main(["export-bundle", str(out)]) == 2
    assert "folder is not empty" in capsys.readouterr().err and (out / "notes.txt").read_text() == "the user's"
