"""Training configuration: YAML -> typed dataclasses, ``--set a.b=c`` overrides, resolved dumps.

A config file has up to four sections, each optional (defaults below)::

    data:           where the annotated slices come from, the split, transforms, augmentation
    preprocessing:  cochseg3d.preprocessing.Preprocessing fields (pixel size mm, HU window, 2.5D k, roi)
    model:          cochseg3d.models model cfg (name, channels, strides, num_res_units, dropout, ...)
    train:          optimisation, validation, checkpoints, early stopping

Unknown keys are errors that name the key and the file, so a typo never silently trains the wrong
thing. The resolved config (every field, defaults filled in) is written to the run folder and
stored in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

# the range and cross-field checks live in config_checks; importable from here as before
from cochseg3d.config_checks import RANGES, ConfigError, check_ranges, validate  # noqa: F401
from cochseg3d.config_checks import where as _where
from cochseg3d.preprocessing import Preprocessing


@dataclass
class AugmentConfig:
    """Random augmentation of training patches (probabilities per patch).

    Rotation (degrees, in-plane), zoom and shear are one ``RandAffined`` resampling (so the patch is
    interpolated once); masks are resampled as labels (nearest neighbour).
    """

    enabled: bool = True
    affine_prob: float = 0.5
    rotate_deg: float = 15.0
    zoom_range: tuple[float, float] = (0.85, 1.15)
    shear: float = 0.05
    flip_lr_prob: float = 0.5
    intensity_scale_prob: float = 0.3
    intensity_scale: float = 0.1
    intensity_shift_prob: float = 0.3
    intensity_shift: float = 0.05
    noise_prob: float = 0.2
    noise_std: float = 0.02
    blur_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.25, 0.8)


@dataclass
class DataConfig:
    """Where training slices come from and how they are prepared.

    Attributes:
        source: ``"phantom"`` (patients generated in memory from seeds), ``"cohort"`` (a phantom
            cohort folder with ``cohort.json``), ``"annotations"`` (an annotation store) or ``"png"``
            (the notebook workflow's image/mask PNG folders).
        path: the cohort / annotation store / PNG folder (unused for ``"phantom"``).
        phantom_patients: number of in-memory phantom patients (``source: phantom``).
        phantom_seed: seed of the first phantom patient; patient ``n`` uses ``phantom_seed + n``.
        phantom_preset: phantom size preset (``"small"`` or ``"clinical"``).
        phantom_overrides: extra ``generate_patient`` keyword arguments.
        png_images: sub-folder of ``path`` holding image PNGs (``<case>_<slice>.png``).
        png_masks: sub-folder holding mask PNGs of the same names (0/255; > 127 is electrode).
        png_pixel_spacing_mm: pixel size of the PNGs (unknown in the files themselves).
        png_window: grey values mapped to [0, 1] (PNG images are already windowed).
        split: train/val/test proportions over patients.
        split_seed: seed of the patient split.
        split_by: ``"patient"`` (always, for real work) or ``"slice"`` (only to reproduce the
            notebook workflow's leaky per-image split as a baseline).
        negative_fraction: background-only slices drawn per electrode slice from fully labelled
            volumes (phantom truth); annotation stores use exactly their annotated slices.
        foreground_crop: crop each slice to the head (Otsu threshold, MONAI CropForegroundd).
        crop_threshold_hu: the crop keeps pixels above this value (HU; -500 separates head from
            air); ``null`` uses Otsu's threshold per slice like the notebook workflow.
        crop_margin_px: margin kept around that crop, in pixels at ``preprocessing.spacing_mm``.
        resize_to: if set, resize slices to this (rows, cols) instead of resampling to a pixel size
            (the notebook workflow's distorting resize; for the baseline only).
        pos_neg_ratio: positives : negatives of RandCropByPosNegLabeld patch centres.
        samples_per_slice: patches drawn from each training slice per epoch.
        cache_rate: fraction of deterministic-transform results cached (MONAI CacheDataset).
        num_workers: DataLoader worker processes.
    """

    source: str = "phantom"
    path: str | None = None
    phantom_patients: int = 20
    phantom_seed: int = 1000
    phantom_preset: str = "small"
    phantom_overrides: dict[str, Any] = field(default_factory=dict)
    png_images: str = "images"
    png_masks: str = "masks"
    png_pixel_spacing_mm: float | None = None
    png_window: tuple[float, float] = (0.0, 255.0)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    split_by: str = "patient"
    negative_fraction: float = 0.25
    foreground_crop: bool = True
    crop_threshold_hu: float | None = -500.0
    crop_margin_px: int = 8
    resize_to: tuple[int, int] | None = None
    pos_neg_ratio: tuple[float, float] = (2.0, 1.0)
    samples_per_slice: int = 2
    cache_rate: float = 1.0
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    """MONAI 2D U-Net; ``context`` comes from ``preprocessing.context``."""

    name: str = "unet2d"
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    dropout: float = 0.0
    norm: str = "instance"
    act: str = "prelu"
    kernel_size: int = 3


@dataclass
class EarlyStopConfig:
    """Stop when the smoothed validation metric has not improved for ``patience`` validations.

    The monitored metric is smoothed with an exponential moving average (``smoothing`` = weight of the
    previous value) so one noisy validation neither stops training nor resets the count; ``patience``
    counts validations of the monitored metric (every ``val_patient_every`` epochs for patient Dice).
    """

    enabled: bool = True
    patience: int = 10
    smoothing: float = 0.6  # weight of the previous smoothed value (exponential moving average)
    min_delta: float = 1e-3
    min_epochs: int = 5


@dataclass
class TrainConfig:
    """Optimisation, validation and checkpointing.

    Attributes:
        loss: ``"dicece"``, ``"dicefocal"`` or ``"ce"`` (cross-entropy = BCE over two logits).
        scheduler: ``"cosine"`` (with ``warmup_epochs`` linear warm-up) or ``"constant"``.
        amp: mixed precision on CUDA (ignored on CPU).
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``.
        val_patient_every: run the whole-volume patient-level validation every N epochs (0: never).
        monitor: metric that picks ``best.pt`` and drives early stopping
            (``"val_patient_dice"`` falls back to ``"val_dice"`` when not computed).
        deterministic: deterministic torch algorithms (bit-reproducible on CPU).
        init: start from this checkpoint's weights (``"default"`` = the shipped model, a ``.pt``
            file or a run folder); its architecture and preprocessing replace the ``model`` and
            ``preprocessing`` sections (see :mod:`cochseg3d.finetune`).
    """

    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "dicece"
    scheduler: str = "cosine"
    warmup_epochs: int = 1
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    val_patient_every: int = 1
    sw_batch_size: int = 16
    sw_overlap: float = 0.25
    monitor: str = "val_patient_dice"
    deterministic: bool = True
    grad_clip: float = 1.0
    init: str | None = None
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)


@dataclass
class Config:
    """A whole training configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str | None = None  # the YAML file it came from (informational)

    def model_cfg(self) -> dict[str, Any]:
        """The dict ``cochseg3d.models.build_model`` takes (context from preprocessing)."""
        d = to_dict(self.model)
        d["context"] = int(self.preprocessing.context)
        return d

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


# --- conversion -------------------------------------------------------------------------------
def to_dict(obj: Any) -> Any:
    """Dataclasses -> plain dicts/lists (YAML- and torch.save-safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def _coerce(value: Any, tp: Any, key: str, source: str | None) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"bad value for {_where(key, source)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(key, source)} must be a mapping, got {value!r}")
        return _build(tp, value, key, source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(key, source)} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{_where(key, source)} needs {len(args)} values, got {list(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(key, source)} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_where(key, source)} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{_where(key, source)} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{_where(key, source)} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{_where(key, source)} must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, values: dict[str, Any], prefix: str, source: str | None) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in values:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"unknown config key {_where(full, source)} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k, source) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad section {_where(prefix or '<top>', source)}: {exc}") from exc


def _set_nested(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def _check_override_key(dotted: str, text: str) -> None:
    """Raise naming the override if ``dotted`` is not a config field."""
    cls: Any = Config
    parts = dotted.split(".")
    for n, part in enumerate(parts):
        names = {f.name for f in dataclasses.fields(cls) if f.init and not (cls is Config and f.name == "source")}
        if part not in names:
            raise ConfigError(f"unknown config key {'.'.join(parts[:n + 1])!r} in --set {text} "
                              f"(known: {', '.join(sorted(names))})")
        tp = typing.get_type_hints(cls)[part]
        if not dataclasses.is_dataclass(tp):
            if n < len(parts) - 1 and tp is not dict and typing.get_origin(tp) is not dict:
                raise ConfigError(f"--set {text}: {'.'.join(parts[:n + 1])!r} is a value, not a section")
            return
        cls = tp


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=5"`` -> ``("train.epochs", 5)`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key, value


def config_from_dict(tree: dict[str, Any], *, source: str | None = None,
                     overrides: Iterable[str] = ()) -> Config:
    """Build a :class:`Config` from a nested dict plus ``--set`` style overrides."""
    tree = dict(tree or {})
    tree.pop("source", None)
    overrides = list(overrides)
    for ov in overrides:
        key, value = parse_override(ov)
        _check_override_key(key, ov)
        _set_nested(tree, key, value)
    cfg = _build(Config, tree, "", source)
    cfg.source = source
    try:
        validate(cfg)
    except ConfigError as exc:
        # a value given with --set is not in the file: say where it came from
        for ov in overrides:
            key = ov.split("=", 1)[0].strip()
            if f"'{key}'" in str(exc):
                raise ConfigError(f"{exc} (set by --set {ov})") from None
        raise
    return cfg


#: configs shipped inside the package, loadable by name (``--config unet2d``)
PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"


def config_names() -> list[str]:
    """Names of the configs shipped in the package (``unet2d``, ``finetune``, ...)."""
    return sorted(p.stem for p in PACKAGE_CONFIGS.glob("*.yaml"))


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config file, or a bare name (``unet2d``, ``finetune.yaml``) of a config shipped in the package.

    A file of that name in the working folder wins over the shipped one.

    Raises:
        FileNotFoundError: neither a file nor a shipped name (the names are listed).
    """
    p = Path(path)
    if p.is_file():
        return p
    if p.parent == Path(".") and p.suffix in ("", ".yaml", ".yml"):
        shipped = PACKAGE_CONFIGS / f"{p.stem}.yaml"
        if shipped.is_file():
            return shipped
    raise FileNotFoundError(f"{p}: no such config file (shipped configs, usable by name: "
                            f"{', '.join(config_names()) or 'none'})")


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config (a file or a shipped name, see :func:`resolve_config_path`) and apply
    ``overrides`` (``"section.key=value"`` strings).

    Raises:
        FileNotFoundError: no such file or shipped name.
        ConfigError: invalid YAML, an unknown key (named, with the file) or a bad value.
    """
    path = resolve_config_path(path)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections")
    return config_from_dict(tree, source=str(path), overrides=overrides)


def dump_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically)."""
    from cochseg3d.volume import atomic_write

    d = cfg.to_dict()
    d.pop("source", None)
    text = f"# resolved config (from {cfg.source or 'defaults'})\n" + yaml.safe_dump(d, sort_keys=False)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
