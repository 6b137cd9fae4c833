"""What a training run records per epoch: ``metrics.csv`` and ``curves.png``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

CSV_FIELDS = [
    "epoch", "lr", "train_loss", "val_loss", "val_dice", "val_iou", "val_precision", "val_recall", "val_hd95_mm",
    "val_patient_dice", "monitor_smoothed", "train_slices_per_s", "data_wait_share", "epoch_time_s",
]


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
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
