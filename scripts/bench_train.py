#!/usr/bin/env python
"""Training benchmark: 2D vs 2.5D U-Net vs the notebook workflow's baseline on a phantom cohort.

All three are scored the same way, on the same held-out test patients' whole volumes (Dice, IoU,
HD95). The 2D and 2.5D runs use ``configs/demo.yaml`` (in-memory phantoms, split by patient). The
baseline repeats the notebook workflow: 38 annotated coronal slices exported as PNG pairs (drawn from
the 2D run's train+val patients only, so the test patients stay unseen), a one-level U-Net, plain
cross-entropy (= BCE over two logits), every image resized to 256x256, and a per-image split; its own
test-slice score is reported too, as the notebook did.

Speed: training throughput (patches of ``roi_size`` per second) and the share of training step time
spent waiting for the data loader, from each run's ``metrics.csv`` (epochs after the first).

Usage (nice it on a shared machine)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/bench_train.py --patients 20 --epochs 20
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import update_section  # noqa: E402

from cochseg3d import metrics as M  # noqa: E402
from cochseg3d.config import Config, load_config  # noqa: E402
from cochseg3d.data import load_patients  # noqa: E402
from cochseg3d.models import count_parameters, load_checkpoint  # noqa: E402
from cochseg3d.training import train  # noqa: E402

log = logging.getLogger("bench_train")


def _speed(run: Path) -> dict[str, float]:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    later = rows[1:] or rows
    return {"slices_per_s": float(np.mean([float(r["train_slices_per_s"]) for r in later])),
            "data_wait": float(np.mean([float(r["data_wait_share"]) for r in later])),
            "epoch_s": float(np.mean([float(r["epoch_time_s"]) for r in later])), "epochs": len(rows)}


def _timed_train(cfg_path: Path, out: Path, overrides: list[str]) -> tuple[Path, float]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run = train(cfg_path, out_dir=out, overrides=overrides, progress=False)
    return run, time.perf_counter() - t0


def export_png_slices(patients, case_ids: list[str], out: Path, *, n_images: int, seed: int,
                      window_hu: tuple[float, float]) -> Path:
    """Write ``n_images`` electrode slices of ``case_ids`` as notebook-style PNG pairs (0/255 masks)."""
    from PIL import Image

    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    rng = np.random.default_rng(seed)
    pool = [(cid, k) for cid in case_ids for k in np.flatnonzero(patients[cid].label.array.any(axis=(1, 2)))]
    lo, hi = window_hu
    for idx in sorted(rng.choice(len(pool), size=min(n_images, len(pool)), replace=False)):
        cid, k = pool[idx]
        img = np.clip((patients[cid].image.array[k] - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(out / "images" / f"{cid}_{k}.png")
        Image.fromarray((patients[cid].label.array[k] > 0).astype(np.uint8) * 255).save(out / "masks" / f"{cid}_{k}.png")
    return out


@torch.no_grad()
def predict_resized(model: torch.nn.Module, image_can: np.ndarray, *, window: tuple[float, float],
                    size: tuple[int, int]) -> np.ndarray:
    """The notebook workflow's inference: each coronal slice resized to ``size``, predicted, resized back."""
    import torch.nn.functional as F

    lo, hi = window
    out = np.zeros(image_can.shape, dtype=bool)
    for k0 in range(0, image_can.shape[0], 16):
        x = torch.from_numpy(np.clip((image_can[k0:k0 + 16].astype(np.float32) - lo) / (hi - lo), 0, 1))[:, None]
        logits = model(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        prob = torch.softmax(logits, 1)[:, 1:2]
        out[k0:k0 + 16] = F.interpolate(prob, size=image_can.shape[1:], mode="bilinear", align_corners=False)[:, 0].numpy() > 0.5
    return out


def _patient_scores(pred_by_case: dict[str, np.ndarray], patients) -> dict[str, float]:
    rows = []
    for cid, pred in pred_by_case.items():
        truth = patients[cid].label.array > 0
        sp = tuple(patients[cid].image.spacing_mm[::-1])
        rows.append({"dice": M.dice(pred, truth), "iou": M.iou(pred, truth),
                     "hd95_mm": M.hd95_mm(pred, truth, spacing_mm=sp)})
    return {m: float(np.mean([r[m] for r in rows if math.isfinite(r[m])] or [float("nan")])) for m in rows[0]}


def _fmt(x, nd=3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"


MODELS = [("2D U-Net", []),
          ("2.5D U-Net (k=1, 3 slices)", ["preprocessing.context=1", "model.name=unet25d"]),
          ("2.5D U-Net (k=2, 5 slices)", ["preprocessing.context=2", "model.name=unet25d"])]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--baseline-epochs", type=int, default=30)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_train")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--speed-epochs", type=int, default=3, help="epochs of the num_workers 0 vs 1 runs (0: skip)")
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    return ap


def _train_models(demo: Path, out: Path, common: list[str]) -> dict[str, dict]:
    """Train the 2D and 2.5D U-Nets; each one's test metrics, checkpoint facts and speed."""
    results: dict[str, dict] = {}
    for name, extra in MODELS:
        tag = name.split()[0].replace(".", "p") + ("" if "k=" not in name else "_k" + name.split("k=")[1][0])
        run, secs = _timed_train(demo, out / tag, common + extra)
        test = json.loads((run / "test_metrics.json").read_text())
        model, info = load_checkpoint(run / "best.pt")
        results[name] = {"run": run, "time_s": secs, "params": count_parameters(model), "test": test,
                         "speed": _speed(run), "split": "patient", "best_epoch": info["epoch"]}
        log.info("%s: %s", name, {k: v for k, v in test.items() if k != "patients"})
    return results


def _loader_runs(demo: Path, out: Path, common: list[str], speed_epochs: int) -> list[tuple[int, dict[str, float]]]:
    # data-loader check: the same 2D training with augmentation on the training thread vs in one worker
    speed_rows = []
    if speed_epochs:
        for nw in (0, 1):
            run, _ = _timed_train(demo, out / f"speed_w{nw}", common[:1] + [
                f"data.num_workers={nw}", f"train.epochs={speed_epochs}", "train.val_patient_every=0",
                "train.early_stop.enabled=false"])
            speed_rows.append((nw, _speed(run)))
    return speed_rows


def _baseline_overrides(png: Path, spacing_mm: float, epochs: int) -> list[str]:
    """The notebook workflow's settings: PNG pairs, resize to 256, per-image split, one-level U-Net, BCE."""
    return [
        "data.source=png", f"data.path={png}", f"data.png_pixel_spacing_mm={spacing_mm}",
        "data.resize_to=[256,256]", "data.split_by=slice", "data.split=[0.8,0.1,0.1]", "data.foreground_crop=false",
        "data.augment.enabled=false", "data.samples_per_slice=1", "data.pos_neg_ratio=[1,1]",
        "preprocessing.roi_size=[256,256]", "model.channels=[64,128]", "model.strides=[2]", "model.num_res_units=0",
        "train.loss=ce", "train.monitor=val_dice", f"train.epochs={epochs}", "train.batch_size=8",
        "train.early_stop.enabled=false", "train.lr=0.001", "train.scheduler=constant", "train.warmup_epochs=0",
    ]


def _train_baseline(args: argparse.Namespace, demo: Path, patients: dict, split: dict, cfg2d: Config) -> dict:
    """Train the notebook baseline on PNGs of the train+val patients; score it on the test patients' volumes."""
    png = export_png_slices(patients, split["train"] + split["val"], args.out / "baseline_png", n_images=38,
                            seed=0, window_hu=tuple(cfg2d.preprocessing.window_hu))
    base_over = _baseline_overrides(png, patients[split["test"][0]].image.spacing_mm[0], args.baseline_epochs)
    run, secs = _timed_train(demo, args.out / "baseline", [f"data.phantom_patients={args.patients}"] + base_over)
    model, info = load_checkpoint(run / "best.pt")
    own = json.loads((run / "test_metrics.json").read_text())
    preds = {cid: predict_resized(model, patients[cid].image.array, window=tuple(cfg2d.preprocessing.window_hu),
                                  size=(256, 256)) for cid in split["test"]}
    baseline_row = {"time_s": secs, "params": count_parameters(model), "scores": _patient_scores(preds, patients),
                    "own_slice_dice": own.get("slice_dice"), "own_slice_iou": own.get("slice_iou"),
                    "speed": _speed(run)}
    log.info("baseline: %s", baseline_row)
    return baseline_row


def _score_lines(args: argparse.Namespace, split: dict, results: dict[str, dict],
                 baseline_row: dict | None) -> list[str]:
    lines = [
        f"Phantom cohort: {args.patients} in-memory `small` phantoms (96³ voxels, 0.4 mm), split by patient "
        f"8:1:1 (test patients {', '.join(split['test'])}); `configs/demo.yaml`, {args.epochs} epochs max, "
        "CPU, one thread, `nice -n 10` on a shared 2-core machine (times are indicative only). "
        "Patient-level scores are on the test patients' whole volumes (every coronal slice) through "
        "`cochseg3d.inference.predict_canonical`, probability > 0.5, no post-processing.",
        "",
        "| model | split | parameters | epochs (best) | train time (s) | test patient Dice | IoU | HD95 (mm) | Dice after `postprocess` | test slice Dice |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        t = r["test"]
        lines.append(f"| {name} | by patient | {r['params']:,} | {r['speed']['epochs']} ({r['best_epoch']}) | "
                     f"{r['time_s']:.0f} | **{_fmt(t.get('patient_dice'))}** | {_fmt(t.get('patient_iou'))} | "
                     f"{_fmt(t.get('patient_hd95_mm'), 2)} | {_fmt(t.get('patient_dice_postprocessed'))} | "
                     f"{_fmt(t.get('slice_dice'))} |")
    if baseline_row:
        s = baseline_row["scores"]
        lines.append(f"| notebook baseline: one-level U-Net, BCE, resize to 256, 38 PNGs | by image | "
                     f"{baseline_row['params']:,} | {args.baseline_epochs} | {baseline_row['time_s']:.0f} | "
                     f"**{_fmt(s['dice'])}** | {_fmt(s['iou'])} | {_fmt(s['hd95_mm'], 2)} | – | "
                     f"{_fmt(baseline_row['own_slice_dice'])} (its own per-image test split) |")
    return lines + [
        "",
        "HD95 averages the test patients where it is finite (a patient with an empty prediction has none). "
        "Test slice Dice averages over the test patients' electrode slices (slice-wise Dice, so the thin tip "
        "slices weigh as much as the basal ones), at the network's pixel size.",
    ]


def _speed_lines(results: dict[str, dict], baseline_row: dict | None, roi_size: tuple[int, int]) -> list[str]:
    lines = [
        "",
        "Training speed (same runs; a \"slice\" is one training patch of `roi_size`; data wait = time blocked "
        "on the data loader / training step time; `num_workers: 0`, so augmentation runs on the training thread):",
        "",
        "| run | patch size | train slices/s | data-wait share | epoch time (s) |",
        "|---|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        sp = r["speed"]
        lines.append(f"| {name} | {roi_size[0]}×{roi_size[1]} | {sp['slices_per_s']:.0f} | {sp['data_wait']:.0%} | {sp['epoch_s']:.1f} |")
    if baseline_row:
        sp = baseline_row["speed"]
        lines.append(f"| notebook baseline | 256×256 | {sp['slices_per_s']:.0f} | {sp['data_wait']:.0%} | {sp['epoch_s']:.1f} |")
    return lines


def _loader_lines(speed_rows: list[tuple[int, dict[str, float]]], speed_epochs: int) -> list[str]:
    if not speed_rows:
        return []
    lines = ["", f"Data loader: the 2D run for {speed_epochs} epochs with augmentation on the training thread "
             "vs in one worker process (mean of epochs after the first):", "",
             "| `data.num_workers` | train slices/s | data-wait share | ratio of slices/s to workers=0 |",
             "|---:|---:|---:|---:|"]
    base_sps = speed_rows[0][1]["slices_per_s"]
    for nw, sp in speed_rows:
        lines.append(f"| {nw} | {sp['slices_per_s']:.0f} | {sp['data_wait']:.0%} | {sp['slices_per_s'] / base_sps:.2f}× |")
    return lines


def main() -> int:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    demo = ROOT / "configs" / "demo.yaml"
    common = [f"data.phantom_patients={args.patients}", f"train.epochs={args.epochs}"]
    results = _train_models(demo, args.out, common)
    speed_rows = _loader_runs(demo, args.out, common, args.speed_epochs)

    ref = results["2D U-Net"]
    split = json.loads((ref["run"] / "split.json").read_text())
    cfg2d = load_config(demo, common)
    patients = {p.case_id: p for p in load_patients(cfg2d.data)}
    baseline_row = None if args.skip_baseline else _train_baseline(args, demo, patients, split, cfg2d)

    body = "\n".join(_score_lines(args, split, results, baseline_row)
                     + _speed_lines(results, baseline_row, cfg2d.preprocessing.roi_size)
                     + _loader_lines(speed_rows, args.speed_epochs))
    print(body)
    if not args.no_write:
        cmd = f"OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/bench_train.py --patients {args.patients} --epochs {args.epochs}"
        update_section("train", "Training: 2D vs 2.5D U-Net vs the notebook baseline (issue 5)", body, command=cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
