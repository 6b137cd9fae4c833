"""Two models' evaluation runs on the same patients, compared patient by patient.

Reads ``evaluation_cases.json`` files written by ``train_default_model.py --evaluate-only`` (one or more
per model, merged by set), pairs the cases by ``case_id`` and prints, per set: mean surface Dice at 1 mm
(worst case), the paired mean difference with a bootstrap 95 % interval, far volume, blind contact
recall and error, and the patients whose surface Dice moved by more than ``--show``.

    python scripts/compare_runs.py --a build/off2/evaluation_cases.json --b build/b50off/evaluation_cases.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(paths: list[Path]) -> dict[str, list[dict]]:
    """Blind (``auto``) cases per set; a later file's set replaces an earlier one's."""
    sets: dict[str, list[dict]] = {}
    for path in paths:
        for name, run in json.loads(path.read_text()).items():
            sets[name] = run["auto"]["cases"]
    return sets


def paired_interval(delta: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean of ``delta``."""
    rng = np.random.default_rng(seed)
    means = delta[rng.integers(0, delta.size, (resamples, delta.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _mean(cases: list[dict], key: str) -> float:
    """Mean over the cases that have the measure (no contacts found: no error)."""
    values = [c[key] for c in cases if c.get(key) is not None]
    return float(np.mean(values)) if values else float("nan")


def _row(cases: list[dict]) -> str:
    sd = np.array([c["surface_dice_1mm"] for c in cases])
    far = np.array([c["fp_volume_far_mm3"] for c in cases])
    recall, error = _mean(cases, "contact_recall"), _mean(cases, "contact_error_mm")
    return f"{sd.mean():.3f} ({sd.min():.2f}) / {far.mean():.1f} ({far.max():.1f}) / {recall:.3f} / {error:.3f}"


def compare(a: dict[str, list[dict]], b: dict[str, list[dict]], resamples: int, show: float) -> list[str]:
    lines = ["| set | n | A: surface Dice (worst) / far mm³ (max) / recall / error mm | B: same | Δ surface Dice [95 %] |",
             "|---|---|---|---|---|"]
    notes = []
    for name in [s for s in a if s in b]:
        by_id = {c["case_id"]: c for c in b[name]}
        pairs = [(c, by_id[c["case_id"]]) for c in a[name] if c["case_id"] in by_id]
        if not pairs:
            continue
        ca, cb = [p[0] for p in pairs], [p[1] for p in pairs]
        delta = np.array([y["surface_dice_1mm"] - x["surface_dice_1mm"] for x, y in pairs])
        lo, hi = paired_interval(delta, resamples, seed=len(pairs))
        lines.append(f"| {name} | {len(pairs)} | {_row(ca)} | {_row(cb)} | {delta.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] |")
        moved = [f"{x['case_id']} {d:+.3f}" for (x, _), d in zip(pairs, delta) if abs(d) > show]
        if moved:
            notes.append(f"{name}: " + ", ".join(moved))
    return lines + [""] + notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, nargs="+", required=True, help="evaluation_cases.json of model A")
    ap.add_argument("--b", type=Path, nargs="+", required=True, help="evaluation_cases.json of model B")
    ap.add_argument("--resamples", type=int, default=5000)
    ap.add_argument("--show", type=float, default=0.01, help="list patients whose surface Dice moved more")
    args = ap.parse_args(argv)
    print("\n".join(compare(load(args.a), load(args.b), args.resamples, args.show)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
