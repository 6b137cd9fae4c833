#!/usr/bin/env python
"""Benchmark the itk-rtk CT model of the phantom generator against the fast model (the named peer).

Clinical patients (200^3 at 0.2 mm) with ``ct_model="rtk"`` and ``"fast"``, same seeds, one process:
generation time per stage, the ratio rtk / fast, peak memory, and the grey levels of the main tissues
(HU after undoing each patient's gain and offset; eroded tissue masks). Writes the "phantom_rtk"
section of BENCHMARKS.md (scripts/benchlib.update_section); ``--preview PNG`` also saves the first
rtk patient's preview.

    flock /tmp/heavy.lock nice -n 10 .venv/bin/python scripts/bench_rtk.py [--repeats 3] [--preview docs/rtk_phantom.png]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import update_section  # noqa: E402

from cochseg3d.phantom import anatomy as an  # noqa: E402
from cochseg3d.phantom import generate_patient, save_preview  # noqa: E402

RTK_STAGES = ("anatomy", "implant", "rtk_setup", "rtk_project", "rtk_detector", "rtk_fdk", "truth", "reorient", "total")
TISSUES = (("soft tissue", an.SOFT), ("fluid", an.FLUID), ("air", an.AIR), ("bone", an.BONE), ("otic capsule", an.CAPSULE))


def grey_levels(case) -> dict[str, float]:
    """Median HU of each tissue (masks eroded by 3 voxels), gain and offset undone."""
    img = (case.image.array.astype(np.float32) - case.params["offset_hu"]) / case.params["gain"]
    out = {}
    for name, code in TISSUES:
        sel = ndimage.binary_erosion(case.tissue.array == code, iterations=3)
        out[name] = float(np.median(img[sel])) if sel.any() else float("nan")
    out["contacts"] = float(np.median(img[case.metal.array > 0])) if case.metal.array.any() else float("nan")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="patients per model (median reported)")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--preview", type=Path, default=None, help="save the first rtk patient's preview PNG here")
    args = ap.parse_args()
    generate_patient(args.seed, ct_model="rtk", shape=24, spacing_mm=0.4, rtk={"n_views": 16})  # warm imports
    load = os.getloadavg()[0]
    runs: dict[str, list] = {"rtk": [], "fast": []}
    levels: dict[str, list] = {"rtk": [], "fast": []}
    views = []
    for r in range(args.repeats):
        for model in ("rtk", "fast"):
            t = time.perf_counter()
            case = generate_patient(args.seed + r, preset="clinical", ct_model=model)
            case.timings["wall"] = time.perf_counter() - t
            runs[model].append(case.timings)
            levels[model].append(grey_levels(case))
            if model == "rtk":
                views.append(case.params["rtk"]["n_views"])
                if r == 0 and args.preview is not None:
                    save_preview(case, args.preview)
            print(model, args.seed + r, {k: round(v, 2) for k, v in case.timings.items()}, flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med = {m: {s: float(np.median([t.get(s, np.nan) for t in runs[m]])) for s in (*RTK_STAGES, "wall")} for m in runs}
    stage_rows = "\n".join(f"| {s} | {med['rtk'][s]:.2f} |" for s in RTK_STAGES)
    lv_rows = "\n".join(
        f"| {name} | {np.median([lv[name] for lv in levels['rtk']]):.0f} | {np.median([lv[name] for lv in levels['fast']]):.0f} |"
        for name in (*(t[0] for t in TISSUES), "contacts"))
    ratio = med["rtk"]["total"] / med["fast"]["total"]
    body = f"""
Median of {args.repeats} clinical patients (200^3 at 0.2 mm, seeds {args.seed}..{args.seed + args.repeats - 1}, axial),
each seed with both CT models in the same process; views drawn per patient: {', '.join(map(str, views))};
1-minute load average at the start {load:.1f} on {os.cpu_count()} cores (a shared machine: times are upper bounds).

| CT model | generation (s) | ratio to fast |
|---|---|---|
| rtk (itk-rtk Joseph projection, polychromatic detector, FDK) | {med['rtk']['total']:.1f} | {ratio:.1f}x |
| fast (image-domain model, the peer) | {med['fast']['total']:.2f} | 1.0x |

Target: a clinical rtk patient in <= 60 s on 2 cores: **{med['rtk']['total']:.1f} s**. Peak RSS: {rss:.0f} MiB.

rtk stages (s):

| stage | seconds |
|---|---|
{stage_rows}

Grey levels (median HU after undoing gain / offset; tissue masks eroded 3 voxels):

| tissue | rtk | fast |
|---|---|---|
{lv_rows}
"""
    update_section("phantom_rtk", "Phantom generation: itk-rtk CT model (issue 12)", body,
                   command=f"flock /tmp/heavy.lock nice -n 10 .venv/bin/python scripts/bench_rtk.py --repeats {args.repeats}")
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
