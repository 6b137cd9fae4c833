"""Starting a training run from a checkpoint (``cochseg3d train --init default|CKPT``).

A fine-tuned model must see what its source saw, so the network architecture and the preprocessing
(pixel size mm, HU window, 2.5D context, patch size) come from the source checkpoint and replace the
config's ``model`` / ``preprocessing`` sections (the differences are logged). The new run records
where it started (``init_from``: path, sha256, epoch of the source) in every checkpoint it writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cochseg3d.config import Config, ConfigError, ModelConfig, to_dict, validate
from cochseg3d.preprocessing import Preprocessing

log = logging.getLogger(__name__)

#: the name ``--init`` takes for the model shipped in the package
DEFAULT_NAME = "default"


class InitError(ValueError):
    """A checkpoint that cannot seed a run; the message names the file."""


@dataclass
class InitSource:
    """A checkpoint to start from.

    Attributes:
        path: the resolved checkpoint file.
        model_state: its network weights (CPU tensors).
        model: its resolved model cfg (``cochseg3d.models.resolve_model_cfg`` form).
        preprocessing: its preprocessing.
        inference: its ``inference`` entry (e.g. a larger sliding-window ``roi_size``), if any.
        init_from: the provenance record the new run stores.
    """

    path: Path
    model_state: dict[str, torch.Tensor]
    model: dict[str, Any]
    preprocessing: Preprocessing
    inference: dict[str, Any] | None = None
    init_from: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def resolve_init(spec: str | os.PathLike) -> Path:
    """``"default"`` -> the shipped model; a run folder -> its ``best.pt``; else the file itself.

    Raises:
        FileNotFoundError: no such file (named).
    """
    if str(spec) == DEFAULT_NAME:
        from cochseg3d.inference import DEFAULT_MODEL

        path = DEFAULT_MODEL
    else:
        path = Path(spec)
        if path.is_dir():
            path = path / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint to start from (--init / train.init)")
    return path


def load_init(spec: str | os.PathLike) -> InitSource:
    """Read and check a checkpoint to fine-tune from.

    Raises:
        FileNotFoundError: no such file.
        InitError: not a cochseg3d checkpoint, weights that do not fit its declared network, or a
            network cochseg3d training cannot continue (not two output classes).
    """
    from cochseg3d.models import load_checkpoint

    path = resolve_init(spec)
    try:
        model, info = load_checkpoint(path)  # builds the declared network and loads its weights
    except ValueError as exc:
        # torch lists every mismatching tensor on its own line: one line, the first of them, is enough
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
        raise InitError(" ".join(lines[:2]) + more) from exc
    if "preprocessing" not in info:
        raise InitError(f"{path}: not a cochseg3d training checkpoint (no 'preprocessing' entry)")
    try:
        pre = Preprocessing.from_dict(info["preprocessing"])
    except (TypeError, ValueError) as exc:
        raise InitError(f"{path}: unreadable 'preprocessing' entry ({exc})") from exc
    cfg = dict(info["model"])
    if int(cfg.get("out_channels", 2)) != 2:
        raise InitError(f"{path}: network has {cfg['out_channels']} output channels; training needs 2 "
                        "(background, electrode)")
    if int(cfg.get("context", pre.context)) != pre.context:
        raise InitError(f"{path}: model context {cfg.get('context')} disagrees with its preprocessing "
                        f"context {pre.context}")
    record = {"path": str(path.resolve()), "sha256": sha256_file(path), "epoch": info.get("epoch")}
    if str(spec) == DEFAULT_NAME:
        record["name"] = DEFAULT_NAME
    if info.get("init_from"):
        record["parent"] = info["init_from"]  # a chain of fine-tunings stays traceable
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return InitSource(path, state, cfg, pre, info.get("inference"), record)


def _model_section(model_cfg: dict[str, Any]) -> ModelConfig:
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    kw = {k: v for k, v in model_cfg.items() if k in names}
    for key in ("channels", "strides"):
        kw[key] = tuple(int(v) for v in kw[key])
    return ModelConfig(**kw)


def _differences(prefix: str, old: Any, new: Any) -> list[str]:
    a, b = to_dict(old), to_dict(new)
    return [f"{prefix}.{k} {a[k]} -> {b[k]}" for k in a if a[k] != b.get(k)]


def apply_init(cfg: Config, src: InitSource) -> Config:
    """``cfg`` with its model and preprocessing sections taken from ``src`` (differences logged).

    Raises:
        InitError: the checkpoint's network cannot train on this config's data (e.g. a 2.5D model
            on single-slice PNG data).
    """
    model = _model_section(src.model)
    pre = src.preprocessing
    diffs = _differences("model", cfg.model, model) + _differences("preprocessing", cfg.preprocessing, pre)
    out = dataclasses.replace(cfg, model=model, preprocessing=pre,
                              train=dataclasses.replace(cfg.train, init=str(src.path)))
    try:
        validate(out)
    except ConfigError as exc:
        raise InitError(f"{src.path}: its network does not fit this config: {exc}") from exc
    if diffs:
        log.info("note: model and preprocessing come from %s, not the config (%s)", src.path, "; ".join(diffs))
    else:
        log.info("model and preprocessing from %s (the config agrees)", src.path)
    return out
