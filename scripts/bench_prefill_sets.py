#!/usr/bin/env python
"""The auto pre-fill on the held-out sets of both CT models, uncalibrated grey values included.

Each patient of the named held-out sets (cohorts written by ``train_default_model.py`` under
``WORK/test/<set>``) is pre-filled as the napari dock does it (``prefill(image, threshold_hu="auto")``,
whole volume, components of at least 4 voxels) and scored against its truth label like a model's
output (surface Dice at 1 mm in the array region, volume painted more than 1 mm from the electrode).
The peer, measured in the same run on the same images: a fixed threshold at 1500 HU, the
brightness filter of a workflow that trusts the stored grey values. Rows by grey-value offset of
the scan (its ``offset_hu`` override): calibrated (|offset| < 200 HU), offset (200-900 HU) and
uncalibrated (>= 900 HU: HU + 1000 / 1024 stored without a rescale, as several CBCT units export).
Nothing in the pre-fill was chosen on these sets (the thresholds' constants date from before they
were drawn). Target (issue 12): surface Dice >= 0.90 and <= 5 mm^3 far on both CT models.

    .venv/bin/python scripts/bench_prefill_sets.py --work build/evalsets \
        --sets held_out_final,cross_fast,cross_rtk,final_fast,final_rtk [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from cochseg3d.annotation import prefill  # noqa: E402
from cochseg3d.dicom import load_input  # noqa: E402
from cochseg3d.metrics import evaluate_folders  # noqa: E402
from cochseg3d.volume import write_image  # noqa: E402

PEER_HU = 1500.0
GROUPS = (("calibrated", 0.0, 200.0), ("offset 200-900 HU", 200.0, 900.0), ("uncalibrated >= 900 HU", 900.0, 1e9))


def grey_group(entry: dict) -> str:
    off = abs(float((entry.get("overrides") or {}).get("offset_hu", 0.0)))
    return next(name for name, lo, hi in GROUPS if lo <= off < hi)


def prefill_set(cohort: Path, out: Path) -> dict[str, list[dict]]:
    """Rows of the auto pre-fill and the fixed-threshold peer, one per patient."""
    entries = json.loads((cohort / "cohort.json").read_text())
    rows = {}
    for method, thr in (("auto", "auto"), ("peer", PEER_HU)):
        folder = out / method
        folder.mkdir(parents=True, exist_ok=True)
        for e in entries:
            image = load_input(cohort / e["dicom"])
            write_image(prefill(image, threshold_hu=thr, min_size_voxels=4), folder / f"{e['case_id']}.nii.gz")
        rows[method] = evaluate_folders(folder, cohort)
        group = {e["case_id"]: (grey_group(e), e.get("ct_model", "fast")) for e in entries}
        for r in rows[method]:
            r["grey"], r["ct_model"] = group[r["case_id"]]
    return rows


def _stats(rows: list[dict]) -> str:
    sd = [r["surface_dice_1mm"] for r in rows if np.isfinite(r.get("surface_dice_1mm", np.nan))]
    far = [r["fp_volume_far_mm3"] for r in rows if np.isfinite(r.get("fp_volume_far_mm3", np.nan))]
    if not sd:
        return "- | - | - | -"
    return f"{np.mean(sd):.3f} | {np.min(sd):.2f} | {np.mean(far):.1f} | {np.max(far):.1f}"


def table(results: dict[str, dict[str, list[dict]]]) -> str:
    out = ["| set | CT model | scans | n | auto: surface Dice 1 mm | min | far mm³ | max | "
           "peer (1500 HU): surface Dice 1 mm | min | far mm³ | max |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        ct = rows["auto"][0]["ct_model"] if rows["auto"] else "-"
        for grey in ["all"] + [g for g, _, _ in GROUPS]:
            a = [r for r in rows["auto"] if grey == "all" or r["grey"] == grey]
            p = [r for r in rows["peer"] if grey == "all" or r["grey"] == grey]
            if a:
                out.append(f"| {name} | {ct} | {grey} | {len(a)} | {_stats(a)} | {_stats(p)} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "default_model",
                    help="train_default_model.py's scratch folder (its test/<set> cohorts)")
    ap.add_argument("--sets", default="held_out_final,cross_fast,cross_rtk,final_fast,final_rtk")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    a = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.sets.split(","):
            cohort = a.work / "test" / name
            if not (cohort / "cohort.json").is_file():
                sys.exit(f"{cohort}: no cohort (run scripts/train_default_model.py --sets {name} first)")
            results[name] = prefill_set(cohort, Path(tmp) / name)
            print(name, _stats(results[name]["auto"]), "| peer", _stats(results[name]["peer"]), flush=True)
    body = table(results)
    print(body)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    if a.write:
        from benchlib import update_section

        update_section("prefill_sets", "Auto pre-fill on both CT models' held-out sets (issue 12)",
                       "\n\n".join(__doc__.split("\n\n")[1:2]) + "\n\n" + body,
                       command=f".venv/bin/python scripts/bench_prefill_sets.py --work {a.work.name} --sets {a.sets} --write")


if __name__ == "__main__":
    main()
