"""The training loop: 2D / 2.5D U-Net on annotated coronal slices; DDP-aware, resumable, seeded.

One public function, :func:`train`. A run folder holds::

    config.yaml    resolved config          split.json     patients per part (never split by slice)
    last.pt        every epoch (+ optimiser state, history, early-stopping state: resumable)
    best.pt        best validation metric   metrics.csv    one row per epoch
    curves.png     loss and metrics         tb/            TensorBoard events
    test_metrics.json  best model on the held-out test patients (whole volumes)

Reproducibility: every epoch reseeds torch, the sampler and the augmentation from ``(seed, epoch)``, so
resuming from ``last.pt`` after a kill replays exactly what an uninterrupted run would have done
(bit-exact on CPU with ``train.deterministic``).

Several processes: run under ``torchrun --nproc_per_node N -m cochseg3d train ...``; each rank trains on
its share of the slices (DistributedSampler), gradients are averaged by DistributedDataParallel (NCCL on
GPU, gloo on CPU), and rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cochseg3d.config import Config, dump_config, load_config
from cochseg3d.data import Datasets, Patient, make_dataset, prepare, write_split
from cochseg3d.models import build_model, count_parameters, resolve_model_cfg, save_checkpoint, versions

log = logging.getLogger(__name__)

CSV_FIELDS = [
    "epoch", "lr", "train_loss", "val_loss", "val_dice", "val_iou", "val_precision", "val_recall", "val_hd95_mm",
    "val_patient_dice", "monitor_smoothed", "train_slices_per_s", "data_wait_share", "epoch_time_s",
]


# --- distributed helpers ------------------------------------------------------------------------
class _Dist:
    """Rank/world facts from torchrun's environment; a no-op for one process."""

    def __init__(self, device_kind: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device_kind == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)
            log.info("DDP: rank %d of %d (%s)", self.rank, self.world, backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast_flag(self, flag: bool, device: torch.device) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], device=device)
        torch.distributed.broadcast(t, src=0)
        return bool(t.item())

    def mean(self, value: float, device: torch.device) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _device(cfg: Config, dist: _Dist | None = None) -> torch.device:
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("train.device asks for CUDA but none is available; set train.device=cpu")
        if dist is not None and dist.enabled:
            return torch.device("cuda", dist.local_rank)
    return torch.device(want)


# --- pieces -------------------------------------------------------------------------------------
def _loss(cfg: Config) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from monai.losses import DiceCELoss, DiceFocalLoss

    # the electrode fills under 1% of a patch: a background Dice term and per-sample Dice on
    # electrode-free patches would reward predicting nothing, so Dice is over the batch, electrode only
    if cfg.train.loss == "dicece":
        return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    if cfg.train.loss == "dicefocal":
        return DiceFocalLoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    ce = torch.nn.CrossEntropyLoss()
    return lambda logits, label: ce(logits, label[:, 0].long())


def _lr_lambda(cfg: Config) -> Callable[[int], float]:
    warm, total = max(0, cfg.train.warmup_epochs), cfg.train.epochs
    kind = cfg.train.scheduler

    def f(epoch: int) -> float:
        if epoch < warm:
            return (epoch + 1) / (warm + 1)
        if kind == "constant":
            return 1.0
        t = (epoch - warm) / max(1, total - warm)
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return f


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type="cuda", dtype=torch.float16) if enabled and device.type == "cuda" else nullcontext()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


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
        with _autocast(device, cfg.train.amp):
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

    net = _unwrap(model).eval()
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


def _write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    from cochseg3d.volume import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            for row in history:
                w.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS})

    atomic_write(path, write)


def plot_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """``curves.png``: losses on the left, validation metrics on the right, against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cochseg3d.volume import atomic_write

    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "val_loss"):
        ys = [r.get(key) for r in history]
        if any(y is not None for y in ys):
            a.plot(ep, [np.nan if y is None else y for y in ys], marker="o", label=key)
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    for key in ("val_dice", "val_iou", "val_precision", "val_recall", "val_patient_dice", "monitor_smoothed"):
        pts = [(e, r[key]) for e, r in zip(ep, history) if r.get(key) is not None]
        if pts:
            b.plot(*zip(*pts), marker="o", label=key)
    b.set_xlabel("epoch"), b.set_ylim(0, 1), b.legend(fontsize=8), b.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return path


def _seed_all(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- the loop -----------------------------------------------------------------------------------
def train(config: Config | str | os.PathLike | None, *, out_dir: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, progress: bool = True, overrides: list[str] | tuple = (),
          on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
          init: str | os.PathLike | None = None) -> Path:
    """Train a 2D / 2.5D U-Net; return the run folder.

    Args:
        config: a :class:`Config`, or a YAML path (``overrides`` applied). Ignored when resuming: the
            run's own ``config.yaml`` is used, with ``overrides`` on top (e.g. ``train.epochs=80``).
        out_dir: the run folder to create; must not already hold a run.
        resume: a run folder with ``last.pt`` to continue from its last finished epoch.
        progress: tqdm progress bars.
        overrides: ``"section.key=value"`` strings.
        on_epoch_end: called as ``on_epoch_end(epoch, metrics_row)`` on rank 0 after each epoch's
            checkpoints are written (logging hooks; an exception stops training like a kill would).
        init: start from a checkpoint's weights (``"default"``, a ``.pt`` file or a run folder;
            overrides ``train.init``); its architecture and preprocessing replace the config's
            (:mod:`cochseg3d.finetune`). Ignored when resuming (``last.pt`` holds the weights).

    Raises:
        FileNotFoundError / ValueError: bad config or input data, named, before training starts.
    """
    with warnings.catch_warnings():
        # background-only slices make RandCropByPosNegLabeld warn once per draw; expected here
        warnings.filterwarnings("ignore", message="Num foregrounds 0")
        # MONAI's own HD95 code calls a deprecated argument of itself; nothing to act on here
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy")
        return _train(config, out_dir=out_dir, resume=resume, progress=progress, overrides=overrides,
                      on_epoch_end=on_epoch_end, init=init)


def _train(config, *, out_dir, resume, progress, overrides, on_epoch_end, init=None) -> Path:
    from monai.data import DataLoader

    state: dict[str, Any] | None = None
    if resume is not None:
        run_dir = Path(resume)
        last = run_dir / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"{last}: nothing to resume (no last.pt in the run folder)")
        cfg = load_config(run_dir / "config.yaml", overrides)
        state = torch.load(last, map_location="cpu", weights_only=False)
        split = json.loads((run_dir / "split.json").read_text())
    else:
        if out_dir is None:
            raise ValueError("train needs out_dir (the run folder) or resume")
        run_dir = Path(out_dir)
        if (run_dir / "last.pt").exists():
            raise ValueError(f"{run_dir}: already holds a training run; resume it with --resume {run_dir} "
                             "or choose another --out")
        cfg = config if isinstance(config, Config) else load_config(config, overrides)  # type: ignore[arg-type]
        split = None
    init_src = None
    if state is None and (init is not None or cfg.train.init):
        from cochseg3d.finetune import apply_init, load_init

        init_src = load_init(init if init is not None else cfg.train.init)
        cfg = apply_init(cfg, init_src)
    t = cfg.train
    dist = _Dist("cuda" if _device(cfg).type == "cuda" else "cpu")
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        device = _device(cfg, dist)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if t.deterministic and device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        _seed_all(t.seed)

        # data first: every bad input is reported before a single step
        data: Datasets = prepare(cfg, split=split, progress=progress and dist.main)
        if dist.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, run_dir / "config.yaml")
            write_split(data.split, run_dir / "split.json")
        train_ds = make_dataset(data.train_items, cfg, train=True, progress=progress and dist.main)
        val_ds = make_dataset(data.val_items, cfg, train=False) if data.val_items else None
        val_loader = DataLoader(val_ds, batch_size=1, num_workers=0) if val_ds is not None else None
        val_patients = [data.patients[c] for c in data.split.get("val", [])]

        model_cfg = resolve_model_cfg(cfg.model_cfg())
        _seed_all(t.seed)
        model = build_model(model_cfg).to(device)
        if init_src is not None:
            model.load_state_dict(init_src.model_state)
        log.info("model %s: %d parameters, %d input channel(s)", model_cfg["name"], count_parameters(model),
                 model_cfg["in_channels"])
        if dist.enabled:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
        use_amp = bool(t.amp and device.type == "cuda")
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        loss_fn = _loss(cfg)

        start, history = 0, []
        best, smoothed, since_best = -math.inf, None, 0
        if state is not None:
            _unwrap(model).load_state_dict(state["model_state"])
            opt.load_state_dict(state["optimizer_state"])
            sched.load_state_dict(state["scheduler_state"])
            scaler.load_state_dict(state["scaler_state"])
            start, history = int(state["epoch"]), list(state["history"])
            es = state["early_stop"]
            best, smoothed, since_best = es["best"], es["smoothed"], es["since_best"]
            if state.get("finished"):
                log.info("%s: run already finished at epoch %d", run_dir, start)
                start = t.epochs
            else:
                log.info("resuming %s after epoch %d", run_dir, start)

        writer = None
        if dist.main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1 if start else None)

        base = {"model": model_cfg, "preprocessing": cfg.preprocessing.to_dict(), "config": cfg.to_dict(),
                "versions": versions(),
                "trainer": {"name": "cochseg3d.training.train", "world_size": dist.world, "device": device.type,
                            "amp": use_amp, "loss": t.loss}}
        init_from = init_src.init_from if init_src is not None else (state or {}).get("init_from")
        if init_from:
            base["init_from"] = init_from
        inference = init_src.inference if init_src is not None else (state or {}).get("inference")
        if inference:
            base["inference"] = inference  # e.g. the source's larger sliding window
        stop = False
        epoch = start
        for epoch in range(start, t.epochs):
            t_epoch = time.perf_counter()
            # everything random in this epoch derives from (seed, epoch, rank): resumable, reproducible
            epoch_seed = t.seed * 100_003 + epoch * 1009 + dist.rank
            _seed_all(epoch_seed)
            train_ds.transform.set_random_state(seed=epoch_seed % 2**32)
            gen = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
            if dist.enabled:
                sampler = torch.utils.data.DistributedSampler(train_ds, shuffle=True, seed=t.seed, drop_last=False)
                sampler.set_epoch(epoch)
                loader = DataLoader(train_ds, batch_size=t.batch_size, sampler=sampler,
                                    num_workers=cfg.data.num_workers, generator=gen)
            else:
                loader = DataLoader(train_ds, batch_size=t.batch_size, shuffle=True, generator=gen,
                                    num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
            model.train()
            losses, n_seen, wait = [], 0, 0.0
            it = iter(loader)
            bar = None
            if progress and dist.main:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", leave=False)
            t_train = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    break
                wait += time.perf_counter() - t0
                img = batch["image"].to(device, non_blocking=True)
                lab = batch["label"].to(device, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                with _autocast(device, use_amp):
                    logits = model(img)
                loss = loss_fn(logits.float(), lab)  # the loss in float32 even under AMP
                scaler.scale(loss).backward()
                if t.grad_clip > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                scaler.step(opt)
                scaler.update()
                losses.append(float(loss.detach()))
                n_seen += img.shape[0]
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if bar is not None:
                bar.close()
            train_time = time.perf_counter() - t_train
            lr = opt.param_groups[0]["lr"]
            sched.step()
            train_loss = dist.mean(float(np.mean(losses)) if losses else float("nan"), device)

            row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss,
                                   "train_slices_per_s": n_seen * dist.world / max(train_time, 1e-9),
                                   "data_wait_share": wait / max(train_time, 1e-9)}
            if val_loader is not None:
                # every rank runs it: MONAI metrics gather their buffers across ranks
                row.update(evaluate_slices(_unwrap(model), val_loader, cfg, device, loss_fn))
            if dist.main:
                last_epoch = epoch + 1 == t.epochs
                if val_patients and cfg.data.resize_to is None and t.val_patient_every > 0 and (
                        (epoch + 1) % t.val_patient_every == 0 or last_epoch):
                    row["val_patient_dice"] = evaluate_patients(model, val_patients, cfg, device)["dice"]
                key = t.monitor if t.monitor in row else "val_dice"
                if t.monitor == "val_patient_dice" and "val_patient_dice" not in row and val_patients \
                        and cfg.data.resize_to is None and t.val_patient_every > 0:
                    key = None  # the monitored metric is computed on other epochs only
                value = _finite(row.get(key)) if key else None
                improved = False
                if value is not None:
                    a = t.early_stop.smoothing
                    smoothed = value if smoothed is None else a * smoothed + (1 - a) * value
                    row["monitor_smoothed"] = smoothed
                    if smoothed > best + t.early_stop.min_delta:
                        best, since_best = smoothed, 0
                    else:
                        since_best += 1
                    improved = value >= max((r.get("_monitor_raw", -math.inf) for r in history), default=-math.inf)
                    row["_monitor_raw"] = value
                row["epoch_time_s"] = time.perf_counter() - t_epoch
                history.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                for k, v in row.items()})
                es = t.early_stop
                stop = bool(es.enabled and epoch + 1 >= es.min_epochs and since_best >= es.patience)
                payload = {**base, "model_state": _unwrap(model).state_dict(), "epoch": epoch + 1,
                           "metrics": {k: v for k, v in history[-1].items() if not k.startswith("_")}}
                # without any validation data the latest weights are the best guess
                if improved or not (run_dir / "best.pt").exists() or (val_loader is None and not val_patients):
                    save_checkpoint(run_dir / "best.pt", payload)
                finished = stop or epoch + 1 == t.epochs
                save_checkpoint(run_dir / "last.pt", {
                    **payload, "optimizer_state": opt.state_dict(), "scheduler_state": sched.state_dict(),
                    "scaler_state": scaler.state_dict(), "history": history, "finished": finished,
                    "early_stop": {"best": best, "smoothed": smoothed, "since_best": since_best}})
                _write_csv(run_dir / "metrics.csv", history)
                plot_curves(history, run_dir / "curves.png")
                if writer is not None:
                    for k, v in history[-1].items():
                        if k != "epoch" and not k.startswith("_") and isinstance(v, (int, float)) and v is not None:
                            writer.add_scalar(k, v, epoch + 1)
                    writer.flush()
                log.info("epoch %d/%d: loss %.4f, val dice %s, patient dice %s (%.1f s)", epoch + 1, t.epochs,
                         train_loss, _fmt(row.get("val_dice")), _fmt(row.get("val_patient_dice")),
                         row["epoch_time_s"])
                if stop:
                    log.info("early stop after epoch %d: smoothed %s has not improved for %d validations",
                             epoch + 1, key, since_best)
                if on_epoch_end is not None:
                    on_epoch_end(epoch + 1, history[-1])
            dist.barrier()
            if dist.broadcast_flag(stop, device):
                break

        dist.barrier()
        dist.close()  # the test evaluation runs on rank 0 alone
        if dist.main:
            if writer is not None:
                writer.close()
            _final_test(run_dir, data, cfg, device)
    finally:
        dist.close()
        torch.use_deterministic_algorithms(was_deterministic)
    return run_dir


def _fmt(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4f}"


def _final_test(run_dir: Path, data: Datasets, cfg: Config, device: torch.device) -> None:
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
    log.info("test: patient Dice %s, slice Dice %s (best epoch %s)", _fmt(out.get("patient_dice")),
             _fmt(out.get("slice_dice")), out["best_epoch"])


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
