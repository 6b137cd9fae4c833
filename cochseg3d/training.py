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

import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cochseg3d.config import Config, dump_config, load_config
from cochseg3d.data import Datasets, make_dataset, prepare, write_split
from cochseg3d.models import build_model, count_parameters, resolve_model_cfg, save_checkpoint, versions
from cochseg3d.training_eval import autocast, evaluate_patients, evaluate_slices, final_test, fmt_metric, unwrap
from cochseg3d.training_log import plot_curves, write_metrics_csv

__all__ = ["train", "evaluate_slices", "evaluate_patients", "plot_curves"]

log = logging.getLogger(__name__)

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
def loss_function(cfg: Config) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
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


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


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


def _open_run(config, *, out_dir, resume, overrides) -> tuple[Path, Config, dict[str, Any] | None, Any]:
    """The run folder, its config, the resumed state (or None) and the saved split (or None)."""
    if resume is not None:
        run_dir = Path(resume)
        last = run_dir / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"{last}: nothing to resume (no last.pt in the run folder)")
        cfg = load_config(run_dir / "config.yaml", overrides)
        state = torch.load(last, map_location="cpu", weights_only=False)
        return run_dir, cfg, state, json.loads((run_dir / "split.json").read_text())
    if out_dir is None:
        raise ValueError("train needs out_dir (the run folder) or resume")
    run_dir = Path(out_dir)
    if (run_dir / "last.pt").exists():
        raise ValueError(f"{run_dir}: already holds a training run; resume it with --resume {run_dir} "
                         "or choose another --out")
    cfg = config if isinstance(config, Config) else load_config(config, overrides)  # type: ignore[arg-type]
    return run_dir, cfg, None, None


class _EarlyStop:
    """Exponentially smoothed monitor; stops after ``patience`` validations without improvement."""

    def __init__(self, cfg: Config, state: dict[str, Any] | None = None) -> None:
        self.es = cfg.train.early_stop
        self.best, self.smoothed, self.since_best = -math.inf, None, 0
        if state is not None:
            self.best, self.smoothed, self.since_best = state["best"], state["smoothed"], state["since_best"]

    def update(self, value: float) -> float:
        a = self.es.smoothing
        self.smoothed = value if self.smoothed is None else a * self.smoothed + (1 - a) * value
        if self.smoothed > self.best + self.es.min_delta:
            self.best, self.since_best = self.smoothed, 0
        else:
            self.since_best += 1
        return self.smoothed

    def should_stop(self, epochs_done: int) -> bool:
        return bool(self.es.enabled and epochs_done >= self.es.min_epochs and self.since_best >= self.es.patience)

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "smoothed": self.smoothed, "since_best": self.since_best}


def _monitor_key(cfg: Config, row: dict[str, Any], has_val_patients: bool) -> str | None:
    """The metric early stopping and best.pt follow this epoch (None: not computed this epoch)."""
    t = cfg.train
    if t.monitor == "val_patient_dice" and "val_patient_dice" not in row and has_val_patients \
            and cfg.data.resize_to is None and t.val_patient_every > 0:
        return None  # the monitored metric is computed on other epochs only
    return t.monitor if t.monitor in row else "val_dice"


class _Trainer:
    """One run's model, optimiser and data, set up before the first step (bad input fails here)."""

    def __init__(self, cfg: Config, run_dir: Path, *, dist: _Dist, device: torch.device, split: Any,
                 progress: bool, init_src: Any) -> None:
        from monai.data import DataLoader

        self.cfg, self.t, self.run_dir, self.dist, self.device = cfg, cfg.train, run_dir, dist, device
        self.progress = progress and dist.main
        # data first: every bad input is reported before a single step
        self.data: Datasets = prepare(cfg, split=split, progress=self.progress)
        if dist.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, run_dir / "config.yaml")
            write_split(self.data.split, run_dir / "split.json")
        self.train_ds = make_dataset(self.data.train_items, cfg, train=True, progress=self.progress)
        val_ds = make_dataset(self.data.val_items, cfg, train=False) if self.data.val_items else None
        self.val_loader = DataLoader(val_ds, batch_size=1, num_workers=0) if val_ds is not None else None
        self.val_patients = [self.data.patients[c] for c in self.data.split.get("val", [])]

        self.model_cfg = resolve_model_cfg(cfg.model_cfg())
        _seed_all(self.t.seed)
        model = build_model(self.model_cfg).to(device)
        if init_src is not None:
            model.load_state_dict(init_src.model_state)
        log.info("model %s: %d parameters, %d input channel(s)", self.model_cfg["name"], count_parameters(model),
                 self.model_cfg["in_channels"])
        if dist.enabled:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=self.t.lr, weight_decay=self.t.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(cfg))
        self.use_amp = bool(self.t.amp and device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.loss_fn = loss_function(cfg)
        self.history: list[dict[str, Any]] = []
        self.early = _EarlyStop(cfg)

    def restore(self, state: dict[str, Any]) -> int:
        """Continue from ``last.pt``'s content; returns the first epoch still to run."""
        unwrap(self.model).load_state_dict(state["model_state"])
        self.opt.load_state_dict(state["optimizer_state"])
        self.sched.load_state_dict(state["scheduler_state"])
        self.scaler.load_state_dict(state["scaler_state"])
        self.history = list(state["history"])
        self.early = _EarlyStop(self.cfg, state["early_stop"])
        start = int(state["epoch"])
        if state.get("finished"):
            log.info("%s: run already finished at epoch %d", self.run_dir, start)
            return self.t.epochs
        log.info("resuming %s after epoch %d", self.run_dir, start)
        return start

    def checkpoint_base(self, init_src: Any, state: dict[str, Any] | None) -> dict[str, Any]:
        """What every checkpoint of the run carries besides its weights."""
        base = {"model": self.model_cfg, "preprocessing": self.cfg.preprocessing.to_dict(),
                "config": self.cfg.to_dict(), "versions": versions(),
                "trainer": {"name": "cochseg3d.training.train", "world_size": self.dist.world,
                            "device": self.device.type, "amp": self.use_amp, "loss": self.t.loss}}
        init_from = init_src.init_from if init_src is not None else (state or {}).get("init_from")
        if init_from:
            base["init_from"] = init_from
        inference = init_src.inference if init_src is not None else (state or {}).get("inference")
        if inference:
            base["inference"] = inference  # e.g. the source's larger sliding window
        return base

    def _loader(self, epoch: int):
        from monai.data import DataLoader

        t, dist = self.t, self.dist
        # everything random in this epoch derives from (seed, epoch, rank): resumable, reproducible
        epoch_seed = t.seed * 100_003 + epoch * 1009 + dist.rank
        _seed_all(epoch_seed)
        self.train_ds.transform.set_random_state(seed=epoch_seed % 2**32)
        gen = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
        if dist.enabled:
            sampler = torch.utils.data.DistributedSampler(self.train_ds, shuffle=True, seed=t.seed, drop_last=False)
            sampler.set_epoch(epoch)
            return DataLoader(self.train_ds, batch_size=t.batch_size, sampler=sampler,
                              num_workers=self.cfg.data.num_workers, generator=gen)
        return DataLoader(self.train_ds, batch_size=t.batch_size, shuffle=True, generator=gen,
                          num_workers=self.cfg.data.num_workers, pin_memory=self.device.type == "cuda")

    def _step(self, batch: dict[str, Any]) -> tuple[float, int]:
        img = batch["image"].to(self.device, non_blocking=True)
        lab = batch["label"].to(self.device, non_blocking=True)
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.device, self.use_amp):
            logits = self.model(img)
        loss = self.loss_fn(logits.float(), lab)  # the loss in float32 even under AMP
        self.scaler.scale(loss).backward()
        if self.t.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        return float(loss.detach()), img.shape[0]

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training slices; the epoch's row of metrics.csv (training columns)."""
        loader = self._loader(epoch)
        self.model.train()
        losses, n_seen, wait = [], 0, 0.0
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{self.t.epochs}", unit="batch", leave=False)
        it = iter(loader)
        t_train = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            wait += time.perf_counter() - t0
            loss, n = self._step(batch)
            losses.append(loss)
            n_seen += n
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
        if bar is not None:
            bar.close()
        train_time = time.perf_counter() - t_train
        lr = self.opt.param_groups[0]["lr"]
        self.sched.step()
        train_loss = self.dist.mean(float(np.mean(losses)) if losses else float("nan"), self.device)
        return {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss,
                "train_slices_per_s": n_seen * self.dist.world / max(train_time, 1e-9),
                "data_wait_share": wait / max(train_time, 1e-9)}

    def validate(self, epoch: int, row: dict[str, Any]) -> tuple[str | None, bool]:
        """Adds validation metrics to ``row`` (rank 0); the monitored key and whether it is the best yet."""
        cfg, t = self.cfg, self.t
        if self.val_patients and cfg.data.resize_to is None and t.val_patient_every > 0 and (
                (epoch + 1) % t.val_patient_every == 0 or epoch + 1 == t.epochs):
            row["val_patient_dice"] = evaluate_patients(self.model, self.val_patients, cfg, self.device)["dice"]
        key = _monitor_key(cfg, row, bool(self.val_patients))
        value = _finite(row.get(key)) if key else None
        if value is None:
            return key, False
        row["monitor_smoothed"] = self.early.update(value)
        improved = value >= max((r.get("_monitor_raw", -math.inf) for r in self.history), default=-math.inf)
        row["_monitor_raw"] = value
        return key, improved

    def save(self, epoch: int, *, base: dict[str, Any], improved: bool, finished: bool) -> None:
        """best.pt (when improved), last.pt (resumable), metrics.csv and curves.png after ``epoch``."""
        payload = {**base, "model_state": unwrap(self.model).state_dict(), "epoch": epoch + 1,
                   "metrics": {k: v for k, v in self.history[-1].items() if not k.startswith("_")}}
        # without any validation data the latest weights are the best guess
        no_val = self.val_loader is None and not self.val_patients
        if improved or not (self.run_dir / "best.pt").exists() or no_val:
            save_checkpoint(self.run_dir / "best.pt", payload)
        save_checkpoint(self.run_dir / "last.pt", {
            **payload, "optimizer_state": self.opt.state_dict(), "scheduler_state": self.sched.state_dict(),
            "scaler_state": self.scaler.state_dict(), "history": self.history, "finished": finished,
            "early_stop": self.early.state()})
        write_metrics_csv(self.run_dir / "metrics.csv", self.history)
        plot_curves(self.history, self.run_dir / "curves.png")


def _train(config, *, out_dir, resume, progress, overrides, on_epoch_end, init=None) -> Path:
    run_dir, cfg, state, split = _open_run(config, out_dir=out_dir, resume=resume, overrides=overrides)
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
        tr = _Trainer(cfg, run_dir, dist=dist, device=device, split=split, progress=progress, init_src=init_src)
        start = tr.restore(state) if state is not None else 0
        writer = None
        if dist.main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1 if start else None)
        base = tr.checkpoint_base(init_src, state)
        for epoch in range(start, t.epochs):
            t_epoch = time.perf_counter()
            row = tr.train_epoch(epoch)
            if tr.val_loader is not None:
                # every rank runs it: MONAI metrics gather their buffers across ranks
                row.update(evaluate_slices(unwrap(tr.model), tr.val_loader, cfg, device, tr.loss_fn))
            stop = False
            if dist.main:
                key, improved = tr.validate(epoch, row)
                row["epoch_time_s"] = time.perf_counter() - t_epoch
                tr.history.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                   for k, v in row.items()})
                stop = tr.early.should_stop(epoch + 1)
                tr.save(epoch, base=base, improved=improved, finished=stop or epoch + 1 == t.epochs)
                _log_epoch(writer, tr.history[-1], epoch, t.epochs)
                if stop:
                    log.info("early stop after epoch %d: smoothed %s has not improved for %d validations",
                             epoch + 1, key, tr.early.since_best)
                if on_epoch_end is not None:
                    on_epoch_end(epoch + 1, tr.history[-1])
            dist.barrier()
            if dist.broadcast_flag(stop, device):
                break
        dist.barrier()
        dist.close()  # the test evaluation runs on rank 0 alone
        if dist.main:
            if writer is not None:
                writer.close()
            final_test(run_dir, tr.data, cfg, device)
    finally:
        dist.close()
        torch.use_deterministic_algorithms(was_deterministic)
    return run_dir


def _log_epoch(writer: Any, row: dict[str, Any], epoch: int, epochs: int) -> None:
    if writer is not None:
        for k, v in row.items():
            if k != "epoch" and not k.startswith("_") and isinstance(v, (int, float)) and v is not None:
                writer.add_scalar(k, v, epoch + 1)
        writer.flush()
    log.info("epoch %d/%d: loss %.4f, val dice %s, patient dice %s (%.1f s)", epoch + 1, epochs,
             row["train_loss"], fmt_metric(row.get("val_dice")), fmt_metric(row.get("val_patient_dice")),
             row["epoch_time_s"])
