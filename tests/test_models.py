import pytest
import torch

from cochseg3d.models import build_model, count_parameters, load_checkpoint, resolve_model_cfg, save_checkpoint
from cochseg3d.preprocessing import Preprocessing

TINY = {"channels": [4, 8], "strides": [2], "num_res_units": 0}


@pytest.mark.parametrize("context", [0, 2])
def test_build_model_shapes(context):
    name = "unet2d" if context == 0 else "unet25d"
    model = build_model({**TINY, "name": name, "context": context})
    x = torch.zeros(3, 2 * context + 1, 32, 48)
    y = model(x)
    assert y.shape == (3, 2, 32, 48)
    assert count_parameters(model) > 0


def test_bad_model_cfg_names_the_problem():
    with pytest.raises(ValueError, match="colour"):
        resolve_model_cfg({"colour": 1})
    with pytest.raises(ValueError, match="unet25d"):
        resolve_model_cfg({"name": "unet2d", "context": 1})
    with pytest.raises(ValueError, match="strides"):
        resolve_model_cfg({"channels": [4, 8, 16], "strides": [2]})
    with pytest.raises(ValueError, match="2k\\+1"):
        resolve_model_cfg({"name": "unet25d", "context": 1, "in_channels": 5})


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    cfg = resolve_model_cfg({**TINY, "name": "unet25d", "context": 1})
    model = build_model(cfg)
    # DDP-style prefixed keys must load too
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    pre = Preprocessing(context=1)
    path = save_checkpoint(tmp_path / "best.pt", {"model_state": state, "model": cfg,
                                                  "preprocessing": pre.to_dict(), "config": {}, "epoch": 3})
    loaded, info = load_checkpoint(path)
    assert "model_state" not in info and info["epoch"] == 3
    assert Preprocessing.from_dict(info["preprocessing"]) == pre
    assert not loaded.training
    x = torch.rand(1, 3, 16, 16)
    model.eval()
    assert torch.allclose(loaded(x), model(x))


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(bad)
