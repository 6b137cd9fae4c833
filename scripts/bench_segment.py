#!/usr/bin/env python
"""Benchmark ``segment``: a clinical-size phantom patient, DICOM folder in -> NIfTI label out.

Measures, on the CPU threads given (default 2):

* end-to-end wall time: DICOM discovery + load, canonical reorientation, batched MONAI
  SliceInferer over every coronal slice, post-processing, back onto the source grid, NIfTI write,
  contacts (reported separately);
* the network part alone: batched ``predict_canonical`` against a naive loop (one whole slice per
  forward pass) in the same run, as a ratio;
* peak memory (resident set growth during ``run_segmentation``) against the float32 volume size,
  measured in a fresh subprocess so earlier work does not count.

    nice -n 10 .venv/bin/python scripts/bench_segment.py            # ~200^3 at 0.2 mm
    .venv/bin/python scripts/bench_segment.py --preset small        # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import proc_status_mb as _rss_mb  # noqa: E402

if TYPE_CHECKING:
    import torch

    from cochseg3d.contacts import Contacts
    from cochseg3d.inference import SegmentationResult
    from cochseg3d.preprocessing import Preprocessing
    from cochseg3d.volume import Volume


def memory_probe(dicom: str, model: str | None, threads: int) -> None:
    """Child process: peak RSS growth of run_segmentation over the loaded volume (prints JSON)."""
    import torch

    torch.set_num_threads(threads)
    from cochseg3d.dicom import load_input
    from cochseg3d.inference import load_model, run_segmentation

    net, pre, _ = load_model(model)
    vol = load_input(dicom)
    run_segmentation(vol, net, preprocessing=pre)  # warm-up: allocator pools, lazy imports
    base = _rss_mb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        resettable = True
    except OSError:
        resettable = False
    run_segmentation(vol, net, preprocessing=pre)
    peak = _rss_mb("VmHWM")
    f32 = vol.array.size * 4 / 2**20
    print(json.dumps({"base_mb": base, "peak_mb": peak, "growth_mb": peak - base, "float32_mb": f32,
                      "resettable": resettable, "shape": list(vol.array.shape)}))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="clinical", choices=["clinical", "small"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--repeats", type=int, default=2, help="end-to-end repeats (best is reported)")
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    ap.add_argument("--_probe", nargs=1, help=argparse.SUPPRESS)
    return ap


def _import_pipeline(threads: int) -> None:
    """Load torch and the pipeline once OMP_NUM_THREADS is set, all before anything is timed."""
    import numpy  # noqa: F401
    import torch

    torch.set_num_threads(threads)
    import cochseg3d.contacts  # noqa: F401
    import cochseg3d.dicom  # noqa: F401
    import cochseg3d.inference  # noqa: F401
    import cochseg3d.metrics  # noqa: F401
    import cochseg3d.phantom  # noqa: F401
    import cochseg3d.volume  # noqa: F401


def _time_end_to_end(dicom: Path, tmp: Path, net: torch.nn.Module, pre: Preprocessing,
                     repeats: int) -> tuple[list[float], dict[str, float], Volume, SegmentationResult]:
    """Best of ``repeats``: its times, the stages of the best run, and the last run's volume and result."""
    from cochseg3d.dicom import load_input
    from cochseg3d.inference import run_segmentation
    from cochseg3d.volume import write_image

    # end to end (best of N): DICOM folder -> label NIfTI on the source grid
    times, stages = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        vol = load_input(dicom)
        t1 = time.perf_counter()
        res = run_segmentation(vol, net, preprocessing=pre)
        t2 = time.perf_counter()
        write_image(res.label, tmp / "out" / "label.nii.gz")
        t3 = time.perf_counter()
        times.append(t3 - t0)
        if t3 - t0 <= min(times):
            stages = {"load": t1 - t0, "segment": t2 - t1, "write": t3 - t2}
    return times, stages, vol, res


def _time_contacts(res: SegmentationResult, vol: Volume) -> tuple[Contacts, float]:
    from cochseg3d.contacts import find_contacts

    t0 = time.perf_counter()
    contacts = find_contacts(res.label, vol)
    return contacts, time.perf_counter() - t0


def _time_network(net: torch.nn.Module, pre: Preprocessing, can: Volume) -> tuple[tuple[int, ...], float, float, float]:
    """Inference window, batched and naive seconds, and their voxel agreement at 0.5."""
    import numpy as np

    from cochseg3d.inference import predict_canonical, predict_naive

    t0 = time.perf_counter()
    roi = getattr(net, "cochseg3d_roi_size", None) or tuple(pre.roi_size)
    p_batched = predict_canonical(net, can, pre, roi_size=roi)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    p_naive = predict_naive(net, can, pre)
    t_naive = time.perf_counter() - t0
    agree = float(np.mean((p_batched >= 0.5) == (p_naive >= 0.5)))
    return roi, t_batched, t_naive, agree


def _probe_memory(dicom: Path, model: str | None, threads: int) -> dict:
    probe = subprocess.run([sys.executable, __file__, "--_probe", str(dicom), "--threads", str(threads)]
                           + (["--model", model] if model else []),
                           capture_output=True, text=True, check=True)
    return json.loads(probe.stdout.strip().splitlines()[-1])


def _measure(args: argparse.Namespace, net: torch.nn.Module, pre: Preprocessing, tmp: Path) -> dict:
    """Every figure of the report, from one phantom patient written as DICOM under ``tmp``."""
    from cochseg3d.metrics import dice
    from cochseg3d.phantom import generate_patient, write_patient
    from cochseg3d.volume import canonical

    case = generate_patient(args.seed, preset=args.preset)
    folder = write_patient(case, tmp / "in", clutter=True)
    dicom = folder / "DICOM"
    n_files = len(list(dicom.iterdir()))
    times, stages, vol, res = _time_end_to_end(dicom, tmp, net, pre, args.repeats)
    contacts, t_contacts = _time_contacts(res, vol)
    d = dice(res.label.array, case.label.array)
    # network part: batched SliceInferer vs a naive per-slice loop on the same canonical volume
    roi, t_batched, t_naive, agree = _time_network(net, pre, canonical(vol))
    mem = _probe_memory(dicom, args.model, args.threads)
    return {"vol": vol, "n_files": n_files, "times": times, "stages": stages, "contacts": contacts,
            "t_contacts": t_contacts, "d": d, "roi": roi, "t_batched": t_batched, "t_naive": t_naive,
            "agree": agree, "mem": mem}


def _report(args: argparse.Namespace, info: dict, pre: Preprocessing, m: dict) -> str:
    vol, n_files, stages, contacts, t_contacts = m["vol"], m["n_files"], m["stages"], m["contacts"], m["t_contacts"]
    d, roi, t_batched, t_naive, agree, mem = m["d"], m["roi"], m["t_batched"], m["t_naive"], m["agree"], m["mem"]
    shape = tuple(vol.array.shape)
    best = min(m["times"])
    return f"""Patient: phantom seed {args.seed}, preset `{args.preset}`: {shape[2]}x{shape[1]}x{shape[0]} voxels at
{vol.spacing_mm[0]:.2f} mm, {n_files} files in the DICOM folder (with clutter); model `{Path(info['path']).name}`
({pre.context * 2 + 1} input slice(s), {pre.spacing_mm} mm pixels, trained on {list(pre.roi_size)} patches, inference
window {list(roi)} (one window covers a slice), batch 16); {args.threads} CPU threads.

| measure | value |
|---|---|
| end to end, DICOM folder -> label NIfTI (best of {args.repeats}) | **{best:.1f} s** (load {stages['load']:.1f} s, segment {stages['segment']:.1f} s, write {stages['write']:.1f} s) |
| contacts from label + image (extra) | {t_contacts:.1f} s ({len(contacts.lps_mm)} contacts, {contacts.method}) |
| network: batched SliceInferer (`predict_canonical`) | {t_batched:.1f} s |
| network: naive loop, one slice per forward pass (`predict_naive`) | {t_naive:.1f} s |
| batched / naive speed-up | **{t_naive / t_batched:.2f}x** (voxel agreement at 0.5: {agree:.4f}) |
| peak memory growth during `run_segmentation` | {mem['growth_mb']:.0f} MB = **{mem['growth_mb'] / mem['float32_mb']:.2f}x** the float32 volume ({mem['float32_mb']:.0f} MB){'' if mem['resettable'] else ' (peak not resettable: upper bound)'} |
| Dice of this label vs the phantom truth | {d:.3f} |

Target: <= 15 s end to end on 2 cores, peak memory <= 4x the float32 volume.
"""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args._probe:
        memory_probe(args._probe[0], args.model, args.threads)
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    _import_pipeline(args.threads)
    from cochseg3d.inference import load_model

    net, pre, info = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        m = _measure(args, net, pre, Path(tmp))
    body = _report(args, info, pre, m)
    print(body)
    if not args.no_write:
        from benchlib import update_section

        cmd = "python scripts/bench_segment.py" + (f" --preset {args.preset}" if args.preset != "clinical" else "")
        update_section("segment", "Segmentation (issue 6): DICOM in -> label out", body, command=cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
