"""A training config's checks: every number in its range, ordered pairs ordered, fields that agree.

:func:`validate` runs on every config :mod:`cochseg3d.config` builds; its errors name the key and the file.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from cochseg3d.config import Config


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key and the file."""


def where(key: str, source: str | None) -> str:
    """How an error names a key: with its file where there is one."""
    return f"{key!r} in {source}" if source else repr(key)


#: value ranges: dotted key -> (test of one number, what it must be). Lists/tuples are checked per item.
#: (train.lr may be 0: a run that must not move the weights, e.g. to check a starting checkpoint)
_POSITIVE = (lambda v: v > 0, "> 0")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
_AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
_PROBABILITY = (lambda v: 0 <= v <= 1, "between 0 and 1")
_FRACTION_BELOW_1 = (lambda v: 0 <= v < 1, ">= 0 and < 1")
RANGES: dict[str, tuple[Any, str]] = {
    "preprocessing.spacing_mm": _POSITIVE, "preprocessing.roi_size": _AT_LEAST_1,
    "preprocessing.context": _NON_NEGATIVE,
    "data.phantom_patients": _AT_LEAST_1, "data.png_pixel_spacing_mm": _POSITIVE, "data.split": _PROBABILITY,
    "data.negative_fraction": _NON_NEGATIVE, "data.crop_margin_px": _NON_NEGATIVE, "data.resize_to": _AT_LEAST_1,
    "data.pos_neg_ratio": _NON_NEGATIVE, "data.samples_per_slice": _AT_LEAST_1, "data.cache_rate": _PROBABILITY,
    "data.num_workers": _NON_NEGATIVE,
    "data.augment.affine_prob": _PROBABILITY, "data.augment.rotate_deg": _NON_NEGATIVE,
    "data.augment.zoom_range": _POSITIVE, "data.augment.shear": _NON_NEGATIVE,
    "data.augment.flip_lr_prob": _PROBABILITY, "data.augment.intensity_scale_prob": _PROBABILITY,
    "data.augment.intensity_scale": _NON_NEGATIVE, "data.augment.intensity_shift_prob": _PROBABILITY,
    "data.augment.intensity_shift": _NON_NEGATIVE, "data.augment.noise_prob": _PROBABILITY,
    "data.augment.noise_std": _NON_NEGATIVE, "data.augment.blur_prob": _PROBABILITY,
    "data.augment.blur_sigma": _NON_NEGATIVE,
    "model.channels": _AT_LEAST_1, "model.strides": _AT_LEAST_1, "model.num_res_units": _NON_NEGATIVE,
    "model.dropout": _FRACTION_BELOW_1, "model.kernel_size": _AT_LEAST_1,
    "train.epochs": _AT_LEAST_1, "train.batch_size": _AT_LEAST_1, "train.lr": _NON_NEGATIVE,
    "train.weight_decay": _NON_NEGATIVE, "train.warmup_epochs": _NON_NEGATIVE,
    "train.val_patient_every": _NON_NEGATIVE, "train.sw_batch_size": _AT_LEAST_1,
    "train.sw_overlap": _FRACTION_BELOW_1, "train.grad_clip": _NON_NEGATIVE,
    "train.early_stop.patience": _AT_LEAST_1, "train.early_stop.smoothing": _FRACTION_BELOW_1,
    "train.early_stop.min_delta": _NON_NEGATIVE, "train.early_stop.min_epochs": _NON_NEGATIVE,
}
#: (low, high) pairs whose low must lie below the high
_ORDERED = ("preprocessing.window_hu", "data.augment.zoom_range", "data.augment.blur_sigma")


def _lookup(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _finite_numbers(obj: Any, prefix: str) -> Iterable[tuple[str, float]]:
    """Every float of a config (dotted key, value), for the NaN / infinity check."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if f.name != "source":
                yield from _finite_numbers(getattr(obj, f.name), f"{prefix}{f.name}" if not prefix else f"{prefix}.{f.name}")
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _finite_numbers(v, prefix)
    elif isinstance(obj, float):
        yield prefix, obj


def check_ranges(cfg: Config) -> None:
    """Every number within its range (:data:`RANGES`), finite, and ordered pairs ordered.

    Raises:
        ConfigError: naming the key, its value and the range (and the file).
    """
    src = cfg.source
    for key, value in _finite_numbers(cfg, ""):
        if not math.isfinite(value):
            raise ConfigError(f"{where(key, src)} must be a finite number, got {value}")
    for key, (ok, what) in RANGES.items():
        value = _lookup(cfg, key)
        if value is None:
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(ok(v) for v in items):
            raise ConfigError(f"{where(key, src)} must be {what}, got {list(value) if items is value else value}")
    for key in _ORDERED:
        lo, hi = _lookup(cfg, key)
        if not lo < hi:
            raise ConfigError(f"{where(key, src)} must be [low, high] with low < high, got {[lo, hi]}")


def validate(cfg: Config) -> None:
    """Range and cross-field checks; raise :class:`ConfigError` naming the offending key."""
    src = cfg.source
    check_ranges(cfg)
    d, t, p = cfg.data, cfg.train, cfg.preprocessing
    if d.source not in ("phantom", "cohort", "annotations", "png"):
        raise ConfigError(f"{where('data.source', src)} must be phantom, cohort, annotations or png, got {d.source!r}")
    if d.source != "phantom" and not d.path:
        raise ConfigError(f"{where('data.path', src)} is required for data.source {d.source!r}")
    if d.source == "png" and not d.png_pixel_spacing_mm and d.resize_to is None:
        raise ConfigError(f"{where('data.png_pixel_spacing_mm', src)} is required for PNG data "
                          "(PNG files carry no pixel size)")
    if d.source == "png" and p.context:
        raise ConfigError(f"{where('preprocessing.context', src)} must be 0 for PNG data (single slices)")
    if len(d.split) != 3 or any(s < 0 for s in d.split) or sum(d.split) <= 0 or d.split[0] <= 0:
        raise ConfigError(f"{where('data.split', src)} must be three non-negative proportions, got {d.split}")
    if d.split_by not in ("patient", "slice"):
        raise ConfigError(f"{where('data.split_by', src)} must be 'patient' or 'slice'")
    if t.loss not in ("dicece", "dicefocal", "ce"):
        raise ConfigError(f"{where('train.loss', src)} must be dicece, dicefocal or ce, got {t.loss!r}")
    if t.scheduler not in ("cosine", "constant"):
        raise ConfigError(f"{where('train.scheduler', src)} must be cosine or constant")
    if t.epochs < 1 or t.batch_size < 1:
        raise ConfigError(f"{where('train.epochs', src)} and train.batch_size must be >= 1")
    if t.monitor not in ("val_patient_dice", "val_dice"):
        raise ConfigError(f"{where('train.monitor', src)} must be val_patient_dice or val_dice")
    want = "unet2d" if p.context == 0 else "unet25d"
    if cfg.model.name != want:
        raise ConfigError(f"{where('model.name', src)} is {cfg.model.name!r} but preprocessing.context="
                          f"{p.context} needs {want!r}")
    stride = 1
    for s in cfg.model.strides:
        stride *= int(s)
    if any(r % stride for r in p.roi_size):
        raise ConfigError(f"{where('preprocessing.roi_size', src)} {p.roi_size} must be divisible by the "
                          f"product of model.strides ({stride})")
    from cochseg3d.models import resolve_model_cfg

    try:
        resolve_model_cfg(cfg.model_cfg())
    except ValueError as exc:
        raise ConfigError(f"{src or 'config'}: {exc}") from exc
