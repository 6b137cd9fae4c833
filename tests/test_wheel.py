"""The package works without the repository: the wheel carries its model, configs and data files,
installs with ``--no-deps`` into a fresh virtual environment, and runs from an empty folder."""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cochseg3d"
#: what the build reads besides the package itself
BUILD_FILES = ("pyproject.toml", "setup.cfg", "README.md", "MANIFEST.in")


def _data_files() -> list[str]:
    """The package's files that are not Python, relative to it (what package_data must name)."""
    return sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*")
                  if p.is_file() and p.suffix not in (".py", ".pyc", ".tmp") and "__pycache__" not in p.parts
                  and not p.name.startswith("."))


def test_every_data_file_of_the_package_is_in_package_data():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["cochseg3d"].split(",") if p.strip()]
    missing = [f for f in _data_files() if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missing, f"not in setup.cfg [options.package_data]: {missing}"
    assert {"weights/default.pt", "qc_thresholds.json", "contacts/calibration.json"} <= set(_data_files())


def test_the_repository_configs_are_the_shipped_ones():
    # configs/ is what the README shows; the copy in the package is what `--config NAME` loads
    repo = {p.name: p.read_bytes() for p in (REPO / "configs").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in (PACKAGE / "configs").glob("*.yaml")}
    assert repo == shipped


def _run(cmd: list, *, cwd: Path, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if ok:
        assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _build_wheel(tmp: Path) -> Path:
    """The wheel, built offline from a copy of the sources (the checkout's build/ and egg-info stay as they are)."""
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_FILES:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / "cochseg3d", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp", ".*"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", ".",
          "-w", tmp / "dist"], cwd=src)
    (wheel,) = (tmp / "dist").glob("cochseg3d-*.whl")
    return wheel


def _venv(tmp: Path, wheel: Path) -> tuple[Path, dict]:
    """A fresh venv with the wheel in it; torch, MONAI and the rest are borrowed from this environment."""
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], cwd=tmp)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp).stdout.strip())
    # plain paths, after the venv's own: this environment's .pth files (the repository's editable
    # install among them) are not run, so the repository stays off sys.path
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "zz_borrowed_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PYTHONNOUSERSITE="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return venv, env


WHERE = """
import json, sys
import cochseg3d
from cochseg3d.config import config_names, load_config, resolve_config_path
from cochseg3d.inference import load_model
names = config_names()
for n in names:
    load_config(n)
model = load_model()[2]["path"]  # the shipped model loads
print(json.dumps({"package": cochseg3d.__file__, "path": sys.path, "names": names, "model": model,
                  "configs": [str(resolve_config_path(n)) for n in names]}))
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a build, a venv and five interpreters importing torch on a shared CPU
def test_wheel_installs_and_runs_without_the_repository(tmp_path):
    wheel = _build_wheel(tmp_path)
    inside = set(zipfile.ZipFile(wheel).namelist())
    assert {f"cochseg3d/{f}" for f in _data_files()} <= inside
    venv, env = _venv(tmp_path, wheel)
    work = tmp_path / "empty"
    work.mkdir()
    site = next((venv / "lib").glob("python3*/site-packages")).resolve()

    where = json.loads(_run([venv / "bin" / "python", "-c", WHERE], cwd=work, env=env).stdout)
    assert Path(where["package"]).resolve().is_relative_to(site)
    assert not any(p and Path(p).resolve() in (REPO, PACKAGE) for p in where["path"])  # the sources are not seen
    assert {"unet2d", "unet25d", "finetune", "demo"} <= set(where["names"])
    assert all(Path(p).resolve().is_relative_to(site) for p in [where["model"], *where["configs"]])

    cli = venv / "bin" / "cochseg3d"
    _run([cli, "phantom", "ph", "--patients", "1", "--no-progress"], cwd=work, env=env)
    out = _run([cli, "segment", "ph", "-o", "seg", "--device", "cpu", "--no-png"], cwd=work, env=env)
    (rec_path,) = (work / "seg").glob("*.contacts.json")
    rec = json.loads(rec_path.read_text())
    assert (work / "seg" / f"{rec['case_id']}.nii.gz").is_file() and rec["n_contacts"] > 0, out.stdout
    assert Path(rec["model"]).resolve().is_relative_to(site)  # the model shipped in the wheel
    assert rec["qc"]["verdict"] in ("ok", "review", "fail")  # with the QC thresholds shipped in it
    # a shipped config by name through the CLI: it loads, and training stops only at the missing data
    train = _run([cli, "train", "--config", "unet2d", "--set", "data.path=no_such_cohort", "--out", "run"],
                 cwd=work, env=env, ok=False)
    assert train.returncode == 2 and "no_such_cohort" in train.stderr, train.stderr
    assert "no such config file" not in train.stderr
    assert sorted(p.name for p in work.iterdir()) == ["ph", "seg"]  # nothing else written
