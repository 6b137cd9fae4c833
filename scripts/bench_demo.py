#!/usr/bin/env python
"""Time the README's main job (`cochseg3d demo`, default and --quick) and record it in BENCHMARKS.md.

Peer: the issue's budget (10 minutes default, 2 minutes quick on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import update_section  # noqa: E402

from cochseg3d.demo import run_demo  # noqa: E402


def one(out: Path, *, quick: bool) -> dict:
    t0 = time.perf_counter()
    run_demo(out, quick=quick, device="cpu", progress=False)
    total = time.perf_counter() - t0
    stages = {p.stem: json.loads(p.read_text()) for p in (out / ".demo").glob("*.json") if p.stem != "plan"}
    summary = json.loads((out / "evaluation.json").read_text())["summary"]
    overall = next(r for r in summary if r["case_id"] == "ALL")
    return {"total": total, "stages": stages, "overall": overall, "plan": json.loads((out / ".demo/plan.json").read_text())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skip-default", action="store_true", help="time --quick only")
    args = ap.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs["quick"] = one(Path(tmp) / "quick", quick=True)
        if not args.skip_default:
            runs["default"] = one(Path(tmp) / "default", quick=False)
    order = ["phantoms", "ingest", "annotate", "train", "segment", "evaluate", "report"]
    names = list(runs)
    lines = ["| stage | " + " | ".join(f"{n} (s)" for n in names) + " |", "|---|" + "---:|" * len(names)]
    for st in order:
        lines.append(f"| {st} | " + " | ".join(f"{runs[n]['stages'].get(st, {}).get('seconds', 0):.1f}" for n in names) + " |")
    lines.append("| **total (wall)** | " + " | ".join(f"**{runs[n]['total']:.0f}**" for n in names) + " |")
    lines.append("| budget | " + " | ".join("120" if n == "quick" else "600" for n in names) + " |")
    lines.append("| ratio to budget | " + " | ".join(
        f"{runs[n]['total'] / (120 if n == 'quick' else 600):.2f}" for n in names) + " |")
    q = ["", "Held-out patients (never annotated, never trained on), from `evaluation.json`:", "",
         "| run | patients (test) | epochs | Dice | surface Dice 1 mm | HD95 mm | FP far mm³ | contact recall | contact error mm |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        o, p = runs[n]["overall"], runs[n]["plan"]
        q.append(f"| {n} | {p['patients']} ({p['test_patients']}) | {p['epochs'] or 'config'} | {o.get('dice', 0):.3f} | "
                 f"{o.get('surface_dice_1mm', 0):.3f} | {o.get('hd95_mm', 0):.2f} | {o.get('fp_volume_far_mm3', 0):.1f} | "
                 f"{o.get('contact_recall', 0):.3f} | {o.get('contact_error_mm') or float('nan'):.3f} |")
    body = "\n".join(["Wall time of each stage of the README's main job on this machine (phantoms small preset, "
                      "orientation mixed, seed 0, CPU).", ""] + lines + q)
    update_section("demo", "The main job: `cochseg3d demo` (issue 7)", body, command="python scripts/bench_demo.py")
    print(body)


if __name__ == "__main__":
    main()
