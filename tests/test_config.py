from pathlib import Path

import pytest
import yaml

from cochseg3d.config import ConfigError, config_from_dict, dump_config, load_config, parse_override

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["unet2d.yaml", "unet25d.yaml", "demo.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.model.name == ("unet25d" if cfg.preprocessing.context else "unet2d")
    assert cfg.model_cfg()["context"] == cfg.preprocessing.context


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"train\.epochz.*typo\.yaml"):
        load_config(path)
    path.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="trian"):
        load_config(path)
    path.write_text("data:\n  augment:\n    rotat_prob: 0.1\n")
    with pytest.raises(ConfigError, match=r"data\.augment\.rotat_prob"):
        load_config(path)


def test_bad_values_are_named(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs"):
        config_from_dict({"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="model.name"):
        config_from_dict({"preprocessing": {"context": 2}})
    with pytest.raises(ConfigError, match="roi_size"):
        config_from_dict({"preprocessing": {"roi_size": [100, 100]}})
    with pytest.raises(ConfigError, match="png_pixel_spacing_mm"):
        config_from_dict({"data": {"source": "png", "path": "x"}})
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        load_config(tmp_path / "nothere.yaml")


def test_overrides_and_roundtrip(tmp_path):
    cfg = load_config(CONFIGS / "unet2d.yaml", ["train.epochs=7", "preprocessing.window_hu=[-500, 3000]",
                                                "data.augment.enabled=false", "model.dropout=0.1"])
    assert cfg.train.epochs == 7 and cfg.preprocessing.window_hu == (-500.0, 3000.0)
    assert cfg.data.augment.enabled is False and cfg.model.dropout == 0.1
    with pytest.raises(ConfigError, match=r"train\.nope.*--set train\.nope=1"):
        load_config(CONFIGS / "unet2d.yaml", ["train.nope=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("epochs")
    out = dump_config(cfg, tmp_path / "config.yaml")
    again = load_config(out)
    assert again.to_dict() | {"source": None} == cfg.to_dict() | {"source": None}
    assert yaml.safe_load(out.read_text())["train"]["epochs"] == 7


@pytest.mark.parametrize("tree, key", [
    ({"preprocessing": {"spacing_mm": -0.4}}, "preprocessing.spacing_mm"),
    ({"preprocessing": {"spacing_mm": 0}}, "preprocessing.spacing_mm"),
    ({"preprocessing": {"roi_size": [0, 0]}}, "preprocessing.roi_size"),
    ({"preprocessing": {"window_hu": [4000, -1000]}}, "preprocessing.window_hu"),
    ({"train": {"epochs": -3}}, "train.epochs"),
    ({"train": {"lr": -1e-3}}, "train.lr"),
    ({"train": {"lr": float("nan")}}, "train.lr"),
    ({"train": {"sw_overlap": 1.0}}, "train.sw_overlap"),
    ({"data": {"split": [1.2, -0.1, -0.1]}}, "data.split"),
    ({"data": {"augment": {"flip_lr_prob": 2}}}, "data.augment.flip_lr_prob"),
    ({"model": {"dropout": 1.0}}, "model.dropout"),
])
def test_values_out_of_range_name_the_key(tmp_path, tree, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=rf"'{key}' in .*bad\.yaml must be"):
        load_config(path)
