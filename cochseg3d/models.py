"""Network factory (2D U-Net and the 2.5D slice-stack variant) and checkpoint loading.

Both variants are MONAI's :class:`monai.networks.nets.UNet` with ``spatial_dims=2``. The 2.5D model
differs only in its input: ``2k+1`` neighbouring coronal slices stacked as channels (``k`` =
``Preprocessing.context``), predicting the centre slice. Input ``(B, 2k+1, H, W)`` (rows superior ->
inferior, columns patient right -> left), output logits ``(B, 2, H, W)``: channel 0 background,
channel 1 electrode.

Checkpoint format (a ``torch.save`` dict)::

    {"model_state": state_dict, "model": model cfg dict (with "name" and "in_channels"),
     "preprocessing": Preprocessing.to_dict(), "config": resolved config dict, "epoch": int,
     "metrics": dict, "versions": dict, "trainer": dict}
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch

log = logging.getLogger(__name__)

MODEL_NAMES = ("unet2d", "unet25d")
#: keys a model cfg dict may hold, with their defaults
MODEL_DEFAULTS: dict[str, Any] = {
    "name": "unet2d",
    "in_channels": None,  # None: 2 * context + 1
    "context": 0,
    "out_channels": 2,
    "channels": (16, 32, 64, 128, 256),
    "strides": (2, 2, 2, 2),
    "num_res_units": 2,
    "dropout": 0.0,
    "norm": "instance",
    "act": "prelu",
    "kernel_size": 3,
}


def resolve_model_cfg(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The model cfg with defaults filled in and ``in_channels`` made explicit.

    Raises:
        ValueError: an unknown key, an unknown model name, or inconsistent channels/strides.
    """
    unknown = set(model_cfg) - set(MODEL_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown model config keys: {sorted(unknown)} (known: {sorted(MODEL_DEFAULTS)})")
    cfg = {**MODEL_DEFAULTS, **dict(model_cfg)}
    if cfg["name"] not in MODEL_NAMES:
        raise ValueError(f"model.name must be one of {MODEL_NAMES}, got {cfg['name']!r}")
    context = int(cfg["context"])
    if context < 0:
        raise ValueError(f"model.context must be >= 0, got {context}")
    if cfg["in_channels"] is None:
        cfg["in_channels"] = 2 * context + 1
    cfg["in_channels"] = int(cfg["in_channels"])
    if cfg["in_channels"] != 2 * context + 1:
        raise ValueError(f"model.in_channels={cfg['in_channels']} disagrees with context={context} (needs 2k+1)")
    if cfg["name"] == "unet2d" and context != 0:
        raise ValueError("model 'unet2d' takes one slice (context 0); use 'unet25d' for slice stacks")
    cfg["channels"] = [int(c) for c in cfg["channels"]]
    cfg["strides"] = [int(s) for s in cfg["strides"]]
    if len(cfg["channels"]) < 2 or len(cfg["strides"]) != len(cfg["channels"]) - 1:
        raise ValueError(
            f"model.channels {cfg['channels']} needs >= 2 entries and strides one fewer, got {cfg['strides']}"
        )
    cfg["out_channels"] = int(cfg["out_channels"])
    cfg["num_res_units"] = int(cfg["num_res_units"])
    cfg["dropout"] = float(cfg["dropout"])
    cfg["kernel_size"] = int(cfg["kernel_size"])
    return cfg


def build_model(model_cfg: Mapping[str, Any]) -> torch.nn.Module:
    """A MONAI 2D U-Net from a model cfg dict.

    Args:
        model_cfg: keys of :data:`MODEL_DEFAULTS` (``name``, ``context`` or ``in_channels``,
            ``channels``, ``strides``, ``num_res_units``, ``dropout``, ``norm``, ``act``, ...).

    Returns:
        A module mapping ``(B, 2k+1, H, W)`` to logits ``(B, out_channels, H, W)``; ``H`` and ``W``
        must be divisible by the product of ``strides``.
    """
    from monai.networks.nets import UNet

    cfg = resolve_model_cfg(model_cfg)
    return UNet(
        spatial_dims=2,
        in_channels=cfg["in_channels"],
        out_channels=cfg["out_channels"],
        channels=cfg["channels"],
        strides=cfg["strides"],
        kernel_size=cfg["kernel_size"],
        num_res_units=cfg["num_res_units"],
        act=cfg["act"],
        norm=cfg["norm"],
        dropout=cfg["dropout"],
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def versions() -> dict[str, str]:
    """Versions of the packages a checkpoint depends on."""
    import monai
    import numpy

    from cochseg3d import __version__

    return {"cochseg3d": __version__, "monai": monai.__version__, "torch": torch.__version__,
            "numpy": numpy.__version__}


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write a checkpoint dict atomically (temporary file, then rename).

    Raises:
        ValueError: ``payload`` lacks a required key.
    """
    from cochseg3d.volume import atomic_write

    missing = {"model_state", "model", "preprocessing", "config"} - set(payload)
    if missing:
        raise ValueError(f"checkpoint payload lacks {sorted(missing)}")
    return atomic_write(path, lambda tmp: torch.save(dict(payload), tmp))


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
                    ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a checkpoint written by training.

    Args:
        path: a ``.pt`` file written by :func:`save_checkpoint` (e.g. ``RUN/best.pt``).
        map_location: where tensors go (``"cpu"``, ``"cuda:0"``).

    Returns:
        ``(model, info)``: the model in eval mode on ``map_location``, and the checkpoint dict
        without ``model_state`` (``info["preprocessing"]`` feeds ``Preprocessing.from_dict``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a cochseg3d checkpoint or its weights do not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for corrupt files
        raise ValueError(f"{path}: cannot read checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or "model_state" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a cochseg3d checkpoint (needs 'model_state' and 'model')")
    model = build_model(ckpt["model"])
    state = ckpt["model_state"]
    # weights saved from a DistributedDataParallel wrapper carry a "module." prefix
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit model {ckpt['model'].get('name')}: {exc}") from exc
    model.to(map_location).eval()
    info = {k: v for k, v in ckpt.items() if k != "model_state"}
    return model, info
