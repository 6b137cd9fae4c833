#!/usr/bin/env python
"""Benchmark the phantom generator: time per stage (small and clinical presets) and the streak model
against a naive dense radon / iradon (scikit-image) of the same slices, as a ratio.

Writes the "phantom" section of BENCHMARKS.md via scripts/benchlib.update_section.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_phantom.py [--repeats 3] [--naive-slices 8]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import update_section  # noqa: E402

from cochseg3d.phantom import cbct, generate_patient, write_patient  # noqa: E402

STAGES = ("anatomy", "implant", "psf", "streaks", "noise", "shading_saturation", "truth", "reorient", "total")


def time_preset(preset: str, repeats: int, seed0: int) -> tuple[dict[str, float], float]:
    runs, writes = [], []
    for r in range(repeats):
        case = generate_patient(seed0 + r, preset=preset)
        runs.append(case.timings)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            write_patient(case, tmp, clutter=True, preview=False)
            writes.append(time.perf_counter() - t)
    return {s: float(np.median([t[s] for t in runs])) for s in STAGES}, float(np.median(writes))


def streak_peer(seed: int, n_slices: int) -> dict[str, float]:
    case = generate_patient(seed, preset="clinical", keep_intermediate=True)
    it = case.intermediate
    grid, mu, kw = it["grid"], it["metal_mu"], dict(it["streak_kw"])
    # deterministic photon statistics so the two implementations can be compared image to image
    kw.update(n0=1e9, floor=1.0)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    ours = cbct.streak_image(grid, mu, it["z_range"], rng=rng, **kw)
    t_ours = time.perf_counter() - t
    with_metal = np.nonzero(mu.reshape(len(mu), -1).max(axis=1) > 1e-4)[0]
    pick = with_metal[np.linspace(0, len(with_metal) - 1, min(n_slices, len(with_metal))).astype(int)]
    kw.pop("isocenter_xy")  # our grid is centred on the isocentre, as skimage assumes
    dx = grid.spacing_mm[0]
    centre = np.array([grid.origin_mm[0] + (grid.shape[2] - 1) / 2 * dx, grid.origin_mm[1] + (grid.shape[1] - 1) / 2 * dx])
    kw["head_center_xy"] = tuple(np.asarray(kw["head_center_xy"]) - centre)
    t = time.perf_counter()
    naive_full = cbct.naive_streak_image(mu[pick], dx, rng=rng, **kw)
    t_full = (time.perf_counter() - t) / len(pick) * len(with_metal)
    f = max(1, int(round(0.4 / dx)))  # the same 0.4 mm grid our model uses
    ny, nx = mu.shape[1] // f * f, mu.shape[2] // f * f
    coarse = mu[pick][:, :ny, :nx].reshape(len(pick), ny // f, f, nx // f, f).mean(axis=(2, 4))
    t = time.perf_counter()
    naive_coarse = cbct.naive_streak_image(coarse, dx * f, rng=rng, **kw)
    t_coarse = (time.perf_counter() - t) / len(pick) * len(with_metal)
    a = ours[pick][:, :ny:f, :nx:f].ravel()
    b = naive_coarse.ravel()
    r = float(np.corrcoef(a, b)[0, 1])
    return {"ours_s": t_ours, "naive_full_s": t_full, "naive_coarse_s": t_coarse, "slices": int(len(with_metal)),
            "sampled": int(len(pick)), "r": r, "ours_pixels": f"{ny // f}x{nx // f}", "full_pixels": f"{mu.shape[1]}x{mu.shape[2]}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="patients per preset (median reported)")
    ap.add_argument("--naive-slices", type=int, default=8, help="slices the naive peer runs on (then scaled)")
    ap.add_argument("--seed", type=int, default=100)
    args = ap.parse_args()
    generate_patient(args.seed)  # warm imports
    load = os.getloadavg()[0]
    small, small_w = time_preset("small", args.repeats, args.seed)
    clin, clin_w = time_preset("clinical", args.repeats, args.seed)
    peer = streak_peer(args.seed, args.naive_slices)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = "\n".join(f"| {s} | {small[s]:.3f} | {clin[s]:.3f} |" for s in STAGES)
    body = f"""
Median of {args.repeats} patients per preset (seeds {args.seed}..{args.seed + args.repeats - 1}), axial, one process;
1-minute load average at the start {load:.1f} on {os.cpu_count()} cores (a shared machine: times are upper bounds).
`small` = 96^3 at 0.4 mm, `clinical` = 200^3 at 0.2 mm. Generation (seconds):

| stage | small | clinical |
|---|---|---|
{rows}
| write DICOM + truth (+ clutter) | {small_w:.3f} | {clin_w:.3f} |

Target: a clinical patient in <= 6 s on 2 cores: **{clin['total']:.2f} s** generation
({clin['total'] + clin_w:.2f} s including writing). Peak RSS of the benchmark process: {rss:.0f} MiB.

Streak stage against a peer (same metal, same error model, deterministic photon counts), clinical
patient, {peer['slices']} axial slices with metal (naive timed on {peer['sampled']} and scaled):

| implementation | grid | seconds | ratio to ours |
|---|---|---|---|
| ours: sparse metal forward projection + one sparse back-projection matrix | {peer['ours_pixels']} | {peer['ours_s']:.3f} | 1.0 |
| naive: skimage `radon` / `iradon` per slice, same grid | {peer['ours_pixels']} | {peer['naive_coarse_s']:.2f} | {peer['naive_coarse_s'] / peer['ours_s']:.0f}x |
| naive: skimage `radon` / `iradon` per slice, full resolution | {peer['full_pixels']} | {peer['naive_full_s']:.2f} | {peer['naive_full_s'] / peer['ours_s']:.0f}x |

Agreement of ours with the same-grid naive streak images: Pearson r = {peer['r']:.3f}.
"""
    update_section("phantom", "Phantom generation (issue 2)", body,
                   command=f"OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_phantom.py --repeats {args.repeats} "
                           f"--naive-slices {args.naive_slices}")
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
