"""Fine-tuning from a checkpoint (``train --init``) and the configs shipped in the package."""

import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cochseg3d.annotation import save_annotation
from cochseg3d.cli import main as cli_main
from cochseg3d.config import PACKAGE_CONFIGS, dump_config, load_config
from cochseg3d.finetune import InitError, load_init
from cochseg3d.inference import DEFAULT_MODEL, load_model
from cochseg3d.models import build_model, load_checkpoint
from cochseg3d.preprocessing import Preprocessing
from cochseg3d.training import train
from cochseg3d.volume import canonical, write_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_data import synthetic_patient, tiny_config, write_cohort  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"), 5)


@pytest.fixture(scope="module")
def source_run(cohort, tmp_path_factory):
    """A tiny 2.5D model trained for one epoch: the checkpoint fine-tuning starts from."""
    cfg = tiny_config(cohort, preprocessing={"context": 1, "spacing_mm": 0.5, "roi_size": [32, 32]},
                      model={"name": "unet25d", "channels": [4, 8], "strides": [2]},
                      train={"epochs": 1, "lr": 0.01})
    return train(cfg, out_dir=tmp_path_factory.mktemp("src") / "run", progress=False)


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["model_state"]


def _distance(a: dict, b: dict) -> float:
    return float(sum(((a[k].float() - b[k].float()) ** 2).sum() for k in a)) ** 0.5


def _other_config(cohort, **train_kw):
    # deliberately unlike the source: 2D, other channels, pixel size, window and patch size
    return tiny_config(cohort, preprocessing={"context": 0, "spacing_mm": 0.4, "roi_size": [16, 16],
                                              "window_hu": [-500, 3000]},
                       model={"name": "unet2d", "channels": [8, 16], "strides": [2]},
                       train={"epochs": 1, **train_kw})


def test_init_starts_from_the_weights_keeps_preprocessing_and_records_provenance(cohort, source_run, tmp_path,
                                                                                  caplog):
    src = source_run / "best.pt"
    caplog.set_level(logging.INFO, logger="cochseg3d")
    # lr 0: no optimiser step can move the weights, so what comes out is what training started from
    run = train(_other_config(cohort, lr=0.0), init=src, out_dir=tmp_path / "ft", progress=False)
    _, info = load_checkpoint(run / "best.pt")
    _, src_info = load_checkpoint(src)
    assert info["model"] == src_info["model"] and info["model"]["name"] == "unet25d"
    assert Preprocessing.from_dict(info["preprocessing"]) == Preprocessing.from_dict(src_info["preprocessing"])
    a, b = _state(run / "best.pt"), _state(src)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert info["init_from"]["sha256"] == sha and Path(info["init_from"]["path"]) == src.resolve()
    assert info["init_from"]["epoch"] == src_info["epoch"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["preprocessing"]["roi_size"] == [32, 32] and saved["model"]["channels"] == [4, 8]
    assert Path(saved["train"]["init"]) == src
    note = " ".join(r.getMessage() for r in caplog.records if "not the config" in r.getMessage())
    assert "model.channels [8, 16] -> [4, 8]" in note and "preprocessing.spacing_mm 0.4 -> 0.5" in note
    # without --init the same config trains its own network from scratch
    fresh = train(_other_config(cohort, lr=0.0), out_dir=tmp_path / "fresh", progress=False)
    assert load_checkpoint(fresh / "best.pt")[1]["model"]["channels"] == [8, 16]
    assert "init_from" not in load_checkpoint(fresh / "best.pt")[1]


def test_cli_init_fine_tunes_and_resume_keeps_working(cohort, source_run, tmp_path):
    src = tmp_path / "source.pt"
    src.write_bytes((source_run / "best.pt").read_bytes())
    cfg = _other_config(cohort, epochs=3, lr=0.003, val_patient_every=1, early_stop={"enabled": False})
    cfg_path = dump_config(cfg, tmp_path / "ft.yaml")
    full = tmp_path / "full"
    assert cli_main(["train", "--config", str(cfg_path), "--init", str(src), "--out", str(full), "--no-progress"]) == 0
    moved = _state(full / "last.pt")
    start = _state(src)
    fresh = build_model(load_checkpoint(src)[1]["model"]).state_dict()
    # it trained, and stayed near where it started (a fresh network lies much further away)
    assert 0 < _distance(moved, start) < 0.5 * _distance(fresh, start)

    def kill_after_first_epoch(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train(cfg_path, init=src, out_dir=killed, progress=False, on_epoch_end=kill_after_first_epoch)
    src.unlink()  # resuming needs only the run folder
    assert cli_main(["train", "--resume", str(killed), "--no-progress"]) == 0
    resumed = torch.load(killed / "last.pt", weights_only=False)
    assert resumed["epoch"] == 3 and resumed["init_from"]["path"] == str(src.resolve())
    assert all(torch.equal(resumed["model_state"][k], moved[k]) for k in moved)


def test_init_errors_name_the_file(cohort, source_run, tmp_path, capsys):
    cfg_path = dump_config(tiny_config(cohort, train={"epochs": 1}), tmp_path / "tiny.yaml")

    def run_cli(init: Path) -> str:
        out = tmp_path / f"run_{init.name}"
        rc = cli_main(["train", "--config", str(cfg_path), "--init", str(init), "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and not out.exists(), err
        assert str(init) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        return err

    assert "no such checkpoint" in run_cli(tmp_path / "missing.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    assert "cannot read checkpoint" in run_cli(tmp_path / "notes.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    assert "not a cochseg3d checkpoint" in run_cli(tmp_path / "other.pt")
    ck = torch.load(source_run / "best.pt", weights_only=False)
    torch.save({**ck, "model": {**ck["model"], "channels": [4, 16]}}, tmp_path / "mismatch.pt")
    assert "do not fit" in run_cli(tmp_path / "mismatch.pt")
    three = build_model({**ck["model"], "out_channels": 3})
    torch.save({**ck, "model": {**ck["model"], "out_channels": 3}, "model_state": three.state_dict()},
               tmp_path / "three.pt")
    assert "output channels" in run_cli(tmp_path / "three.pt")
    no_pre = {k: v for k, v in ck.items() if k != "preprocessing"}
    torch.save(no_pre, tmp_path / "nopre.pt")
    with pytest.raises(InitError, match="nopre.pt.*preprocessing"):
        load_init(tmp_path / "nopre.pt")


def test_init_default_uses_the_shipped_model(cohort, tmp_path):
    cfg = tiny_config(cohort, train={"epochs": 1, "lr": 1e-4})
    run = train(cfg, init="default", out_dir=tmp_path / "ft", progress=False)
    _, info = load_checkpoint(run / "best.pt")
    _, pre, shipped = load_model()
    assert info["model"] == shipped["model"] and Preprocessing.from_dict(info["preprocessing"]) == pre
    assert info["init_from"]["name"] == "default"
    assert info["init_from"]["sha256"] == hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()
    assert info.get("inference") == shipped.get("inference")
    # a fine-tuned checkpoint is an ordinary model for segmentation
    model, pre_ft, _ = load_model(run / "best.pt")
    assert pre_ft == pre and model.cochseg3d_preprocessing == pre


def _store(root: Path, n: int) -> Path:
    """An annotation store of ``n`` tiny patients, two electrode slices and one background slice each."""
    store = root / "store"
    for s in range(n):
        image, label = synthetic_patient(s)
        path = write_image(image, root / "images" / f"p{s}.nii.gz")
        shown = canonical(label, is_label=True).array.any(axis=(1, 2))
        has, empty = np.flatnonzero(shown), np.flatnonzero(~shown)
        save_annotation(label, image=image, store=store, annotated_slices=[has[1], has[len(has) // 2], empty[0]],
                        case_id=f"p{s}", image_path=path)
    return store


def test_train_config_finetune_by_name(tmp_path, capsys):
    store = _store(tmp_path, 3)
    out = tmp_path / "run"
    rc = cli_main(["train", "--config", "finetune", "--set", f"data.path={store}", "--set", "train.epochs=1",
                   "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    info = torch.load(out / "best.pt", weights_only=False)
    assert info["init_from"]["name"] == "default" and info["config"]["data"]["source"] == "annotations"
    assert json.loads((out / "split.json").read_text())["val"]  # the shipped split keeps a patient to validate
    assert cli_main(["train", "--config", "nosuchconfig", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "nosuchconfig" in err and "finetune" in err and "unet2d" in err


def test_shipped_configs_are_the_top_level_configs():
    top = {p.name: p.read_bytes() for p in (ROOT / "configs").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in PACKAGE_CONFIGS.glob("*.yaml")}
    assert set(top) == set(shipped) and {"unet2d.yaml", "unet25d.yaml", "finetune.yaml"} <= set(top)
    for name in top:
        assert top[name] == shipped[name], f"copy configs/{name} to cochseg3d/configs/{name} (the shipped copy)"
    cfg = load_config("finetune")
    assert cfg.train.init == "default" and cfg.data.source == "annotations" and cfg.train.epochs <= 10
    assert cfg.train.lr < load_config("unet25d").train.lr
