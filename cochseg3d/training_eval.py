"""Validation and test metrics of a model being trained: slices (MONAI metrics) and whole patients.

:func:`evaluate_slices` runs every epoch on the validation slices, :func:`evaluate_patients` on
whole validation volumes through the inference path, :func:`final_test` once on the test patients
with the best checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cochseg3d.config import Config
from cochseg3d.data import Datasets, Patient, make_dataset

log = logging.getLogger("cochseg3d.training")


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type="cuda", dtype=torch.float16) if enabled and device.type == "cuda" else nullcontext()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


@torch.no_grad()
def evaluate_slices(model: torch.nn.Module, loader, cfg: Config, device: torch.device,
                    loss_fn: Callable | None = None) -> dict[str, float]:
    """Slice-level Dice, IoU, precision, recall and HD95 (mm) of the electrode class (MONAI metrics).

    Slices run through the same sliding-window inferer as whole volumes (patches of ``roi_size``).
    Dice, IoU and HD95 average over slices that show electrode in the truth or the prediction;
    precision and recall pool all pixels.
    """
    from monai.inferers import sliding_window_inference
    from monai.metrics import ConfusionMatrixMetric, DiceMetric, HausdorffDistanceMetric, MeanIoU

    model.eval()
    dice, miou = DiceMetric(include_background=False), MeanIoU(include_background=False)
    hd = HausdorffDistanceMetric(include_background=False, percentile=95)
    conf = ConfusionMatrixMetric(include_background=False, metric_name=["precision", "recall"],
                                 compute_sample=False, reduction="sum")
    roi = tuple(cfg.preprocessing.roi_size)
    px = cfg.preprocessing.spacing_mm
    losses = []
    for batch in loader:
        img, lab = batch["image"].to(device), batch["label"].to(device)
        with autocast(device, cfg.train.amp):
            logits = sliding_window_inference(img, roi, cfg.train.sw_batch_size, model, overlap=cfg.train.sw_overlap)
        logits = logits.float()
        if loss_fn is not None:
            losses.append(float(loss_fn(logits, lab)))
        pred = torch.nn.functional.one_hot(logits.argmax(1), 2).permute(0, 3, 1, 2).float()
        truth = torch.nn.functional.one_hot(lab[:, 0].long(), 2).permute(0, 3, 1, 2).float()
        conf(pred, truth)
        shown = (pred[:, 1].flatten(1).any(1) | truth[:, 1].flatten(1).any(1))
        if shown.any():
            p, t = pred[shown], truth[shown]
            dice(p, t)
            miou(p, t)
            both = p[:, 1].flatten(1).any(1) & t[:, 1].flatten(1).any(1)
            if both.any():
                hd(p[both], t[both], spacing=px if cfg.data.resize_to is None else None)
    out: dict[str, float] = {}
    out["val_dice"] = float(dice.aggregate()) if dice.get_buffer() is not None else float("nan")
    out["val_iou"] = float(miou.aggregate()) if miou.get_buffer() is not None else float("nan")
    out["val_hd95_mm"] = float(hd.aggregate()) if hd.get_buffer() is not None else float("nan")
    if conf.get_buffer() is not None:
        prec, rec = conf.aggregate()
        out["val_precision"], out["val_recall"] = float(prec), float(rec)
    if losses:
        out["val_loss"] = float(np.mean(losses))
    return out


def evaluate_patients(model: torch.nn.Module, patients: list[Patient], cfg: Config, device: torch.device,
                      *, full: bool = False) -> dict[str, Any]:
    """Patient-level metrics on whole canonical volumes through the inference path.

    Uses :func:`cochseg3d.inference.predict_canonical` (the same resampling, windowing and 2.5D
    stacking as ``cochseg3d segment``), thresholded at 0.5. For partly annotated patients only their
    annotated slices count. ``full`` adds IoU, precision, recall, HD95 (mm) and the Dice after
    ``cochseg3d.inference.postprocess`` (what ``cochseg3d segment`` writes) per patient.

    Returns:
        ``{"dice": mean Dice, "patients": {case_id: {metric: value}}}``.
    """
    from cochseg3d import metrics as M
    from cochseg3d.inference import predict_canonical

    net = unwrap(model).eval()
    per: dict[str, dict[str, float]] = {}
    for p in patients:
        if p.image is None or p.label is None:
            continue
        prob = predict_canonical(net, p.image, cfg.preprocessing, batch_size=cfg.train.sw_batch_size,
                                 overlap=cfg.train.sw_overlap, device=device)
        pred, truth = prob > 0.5, p.label.array > 0
        post = None
        if full:
            from cochseg3d.inference import postprocess

            post = postprocess(pred, p.image.spacing_mm)
        if not p.fully_labelled:
            pred, truth = pred[p.slices], truth[p.slices]
            post = post[p.slices] if post is not None else None
        row = {"dice": M.dice(pred, truth)}
        if post is not None:
            row["dice_postprocessed"] = M.dice(post, truth)
        if full:
            # canonical spacing is (i, j, k); numpy axes are (k, j, i)
            sp = tuple(p.image.spacing_mm[::-1])
            row.update(iou=M.iou(pred, truth), precision=M.precision(pred, truth), recall=M.recall(pred, truth),
                       hd95_mm=M.hd95_mm(pred, truth, spacing_mm=sp))
        per[p.case_id] = row
    mean = float(np.mean([r["dice"] for r in per.values()])) if per else float("nan")
    return {"dice": mean, "patients": per}


def fmt_metric(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4f}"


def final_test(run_dir: Path, data: Datasets, cfg: Config, device: torch.device) -> None:
    """Evaluate ``best.pt`` on the held-out test patients; write ``test_metrics.json``."""
    from cochseg3d.models import load_checkpoint
    from cochseg3d.volume import atomic_write

    test = [data.patients[c] for c in data.split.get("test", [])]
    model, info = load_checkpoint(run_dir / "best.pt", map_location=device)
    out: dict[str, Any] = {"best_epoch": info["epoch"], "test_patients": [p.case_id for p in test]}
    if test and cfg.data.resize_to is None and all(p.image is not None for p in test):
        res = evaluate_patients(model, test, cfg, device, full=True)
        out["patients"] = res["patients"]
        for m in ("dice", "iou", "precision", "recall", "hd95_mm", "dice_postprocessed"):
            vals = [r[m] for r in res["patients"].values() if math.isfinite(r[m])]
            out[f"patient_{m}"] = float(np.mean(vals)) if vals else None
    if data.test_items:
        from monai.data import DataLoader

        loader = DataLoader(make_dataset(data.test_items, cfg, train=False), batch_size=1)
        out.update({k.replace("val_", "slice_"): v for k, v in evaluate_slices(model, loader, cfg, device).items()})
    text = json.dumps(_json_safe(out), indent=2, default=_json_default, allow_nan=False) + "\n"
    atomic_write(run_dir / "test_metrics.json", lambda tmp: Path(tmp).write_text(text))
    log.info("test: patient Dice %s, slice Dice %s (best epoch %s)", fmt_metric(out.get("patient_dice")),
             fmt_metric(out.get("slice_dice")), out["best_epoch"])


def _json_safe(x: Any) -> Any:
    """NaN / inf (e.g. HD95 of an empty prediction) become null: strict JSON."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)) and not math.isfinite(float(x)):
        return None
    return x


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)
