import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cochseg3d.cli import main as cli_main
from cochseg3d.config import dump_config
from cochseg3d.models import load_checkpoint
from cochseg3d.preprocessing import Preprocessing
from cochseg3d.training import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_data import tiny_config, write_cohort  # noqa: E402

TIME_COLUMNS = {"train_slices_per_s", "data_wait_share", "epoch_time_s"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"), 5)


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in csv.DictReader(open(run / "metrics.csv"))]


def test_train_writes_a_complete_run_and_learns(cohort, tmp_path):
    cfg = tiny_config(cohort, train={"epochs": 8, "lr": 0.01, "val_patient_every": 4},
                      model={"channels": [8, 16], "strides": [2]})
    run = train(cfg, out_dir=tmp_path / "run", progress=False)
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png", "config.yaml", "split.json", "test_metrics.json"):
        assert (run / name).is_file(), name
    assert list((run / "tb").iterdir())
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    assert rows[-1]["val_patient_dice"] and not rows[0]["val_patient_dice"]  # every 4th epoch
    # a bright wire is easy: the model must clearly beat chance on slices and on whole volumes
    assert float(rows[-1]["val_dice"]) > 0.5
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    model, info = load_checkpoint(run / "best.pt")
    assert Preprocessing.from_dict(info["preprocessing"]) == cfg.preprocessing
    assert info["config"]["train"]["epochs"] == 8 and info["model"]["name"] == "unet2d"
    assert set(info["versions"]) >= {"torch", "monai", "cochseg3d"}
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["test_patients"] == json.loads((run / "split.json").read_text())["test"]
    assert test["patient_dice"] > 0.3
    # a run folder is never overwritten
    with pytest.raises(ValueError, match="already holds a training run"):
        train(cfg, out_dir=run, progress=False)


def test_resume_after_kill_ends_where_an_uninterrupted_run_would(cohort, tmp_path):
    cfg = tiny_config(cohort, preprocessing={"context": 1}, model={"name": "unet25d"},
                      train={"epochs": 4, "val_patient_every": 2, "early_stop": {"enabled": False}})
    full = train(cfg, out_dir=tmp_path / "full", progress=False)

    def kill_after_second_epoch(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt  # what a kill after the epoch-2 checkpoint leaves behind

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out_dir=tmp_path / "killed", progress=False, on_epoch_end=kill_after_second_epoch)
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=False)["epoch"] == 2
    resumed = train(None, resume=tmp_path / "killed", progress=False)
    a = torch.load(full / "last.pt", weights_only=False)["model_state"]
    b = torch.load(resumed / "last.pt", weights_only=False)["model_state"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _rows(full) == _rows(resumed)
    # resuming a finished run changes nothing
    train(None, resume=resumed, progress=False)
    assert _rows(resumed) == _rows(full)


def test_bad_input_fails_before_training(tmp_path, cohort):
    with pytest.raises(FileNotFoundError, match="nothere"):
        train(tiny_config(tmp_path / "nothere"), out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(None, resume=tmp_path, progress=False)


def test_cli_train_and_errors(cohort, tmp_path, capsys):
    cfg_path = dump_config(tiny_config(cohort), tmp_path / "tiny.yaml")
    out = tmp_path / "cli_run"
    rc = cli_main(["train", "--config", str(cfg_path), "--out", str(out), "--set", "train.epochs=1",
                   "--no-progress"])
    assert rc == 0 and (out / "best.pt").is_file()
    assert "train.epochs" not in capsys.readouterr().err
    rc = cli_main(["train", "--config", str(cfg_path), "--out", str(tmp_path / "x"), "--set", "train.epoks=1"])
    err = capsys.readouterr().err
    assert rc == 2 and "train.epoks" in err
    rc = cli_main(["train", "--config", str(cfg_path), "--out", str(tmp_path / "y"),
                   "--set", f"data.path={tmp_path / 'missing_folder'}"])
    assert rc == 2 and "missing_folder" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_cpu_processes_gloo(cohort, tmp_path):
    cfg_path = dump_config(tiny_config(cohort, train={"epochs": 2}), tmp_path / "tiny.yaml")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": "29533"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "cochseg3d", "train", "--config", str(cfg_path), "--out", str(out), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = torch.load(out / "last.pt", weights_only=False)
    assert info["trainer"]["world_size"] == 2 and info["epoch"] == 2
    model, _ = load_checkpoint(out / "best.pt")
    assert not any(k.startswith("module.") for k in info["model_state"])


@pytest.mark.slow
def test_resume_after_real_sigkill(cohort, tmp_path):
    import signal
    import time

    cfg_path = dump_config(tiny_config(cohort, train={"epochs": 8, "val_patient_every": 4,
                                                      "early_stop": {"enabled": False}}), tmp_path / "tiny.yaml")
    full = train(cfg_path, out_dir=tmp_path / "full", progress=False)
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cochseg3d", "train", "--config", str(cfg_path), "--out", str(run),
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run / "last.pt").exists() and torch.load(run / "last.pt", weights_only=False)["epoch"] >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(run / "last.pt", weights_only=False)["epoch"]
    if done >= 8:
        pytest.skip("the run finished before it could be killed")
    assert cli_main(["train", "--resume", str(run), "--no-progress"]) == 0
    a = torch.load(full / "last.pt", weights_only=False)["model_state"]
    b = torch.load(run / "last.pt", weights_only=False)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(full) == _rows(run)


@pytest.mark.parametrize("loss", ["dicece", "dicefocal", "ce"])
def test_losses_reward_the_right_answer(cohort, loss):
    from cochseg3d.training import loss_function

    fn = loss_function(tiny_config(cohort, train={"loss": loss}))
    label = torch.zeros(2, 1, 8, 8)
    label[:, :, 2:5, 3:6] = 1
    good = torch.cat([1 - label, label], 1) * 10 - 5  # confident and right
    bad = -good
    assert float(fn(good, label)) < float(fn(bad, label))
    assert torch.isfinite(fn(good, label))
