"""scripts/blend_models.py: the WiSE-FT weight blend of the shipped model and a fine-tune."""
import subprocess
import sys
from pathlib import Path

import torch

from cochseg3d.models import build_model, load_checkpoint, resolve_model_cfg, save_checkpoint
from cochseg3d.preprocessing import Preprocessing

ROOT = Path(__file__).resolve().parents[1]
TINY = {"channels": [4, 8], "strides": [2], "num_res_units": 0, "name": "unet25d", "context": 1}


def _checkpoint(path: Path, seed: int, **model) -> Path:
    torch.manual_seed(seed)
    cfg = resolve_model_cfg({**TINY, **model})
    return save_checkpoint(path, {"model_state": build_model(cfg).state_dict(), "model": cfg,
                                  "preprocessing": Preprocessing(context=1).to_dict(), "config": {}, "epoch": seed,
                                  "provenance": {"seed": seed, "evaluation": {"sets": {}}}})


def _blend(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "blend_models.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_blend_interpolates_every_weight_and_names_both_ends(tmp_path):
    base, tuned = _checkpoint(tmp_path / "base.pt", 1), _checkpoint(tmp_path / "tuned.pt", 2)
    out = tmp_path / "blend"
    r = _blend(base, tuned, "--alpha", 0.25, "--out", out)
    assert r.returncode == 0, r.stderr
    a, b = (torch.load(p, weights_only=False)["model_state"] for p in (base, tuned))
    c = torch.load(out / "default.pt", weights_only=False)
    for k, v in c["model_state"].items():
        expect = 0.75 * a[k] + 0.25 * b[k] if v.is_floating_point() else a[k]
        assert torch.allclose(v, expect), k
    prov = c["provenance"]
    assert prov["blend"]["alpha"] == 0.25 and prov["base"]["seed"] == 1 and prov["tuned"]["seed"] == 2
    assert "evaluation" not in prov["base"]  # the ends' held-out numbers are not the blend's
    net, _ = load_checkpoint(out / "default.pt")
    assert net(torch.rand(1, 3, 16, 16)).shape == (1, 2, 16, 16)
    assert (out / "default.json").is_file()


def test_blend_refuses_overwrite_other_networks_and_bad_alpha(tmp_path):
    base, tuned = _checkpoint(tmp_path / "base.pt", 1), _checkpoint(tmp_path / "tuned.pt", 2)
    out = tmp_path / "blend"
    assert _blend(base, tuned, "--alpha", 0.5, "--out", out).returncode == 0
    before = (out / "default.pt").read_bytes()
    r = _blend(base, tuned, "--alpha", 0.1, "--out", out)
    assert r.returncode != 0 and "exists" in r.stderr and (out / "default.pt").read_bytes() == before
    r = _blend(base, tuned, "--alpha", 1.5, "--out", tmp_path / "x")
    assert r.returncode != 0 and "[0, 1]" in r.stderr and not (tmp_path / "x").exists()
    wider = _checkpoint(tmp_path / "wider.pt", 3, channels=[4, 16])
    r = _blend(base, wider, "--alpha", 0.5, "--out", tmp_path / "y")
    assert r.returncode == 2 and "architectures" in r.stderr and "channels" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "y" / "default.pt").exists()
    r = _blend(tmp_path / "nothere.pt", tuned, "--alpha", 0.5, "--out", tmp_path / "z")
    assert r.returncode == 2 and "nothere.pt: no such checkpoint" in r.stderr and "Traceback" not in r.stderr
