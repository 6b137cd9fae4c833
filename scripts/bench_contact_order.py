#!/usr/bin/env python
"""Arrays named from the wrong end: the contact finder's order of the contacts, against the truth's.

Reads the labels an evaluation run left (``train_default_model.py --evaluate-only --work WORK``:
``WORK/pred/<set>/<case>.nii.gz`` blind, ``WORK/pred_hint/<set>/...`` with the model named, the
images and truth under ``WORK/test/<set>/<case>/``) and finds the contacts on each label three
times in the same run: the shipped calibration (the order the centreline gave), with
``chain_order`` on, and with that and a base-first chain turned round (``--turn``). A
contact is *misnamed* when its index (apex first) is not its true contact's less the array's common
offset (``metrics.match_contacts``): an array read from its base has nearly all misnamed, which the
order-free contact error cannot see.

    .venv/bin/python scripts/bench_contact_order.py --run build/blend0:held_out_final,cross_fast,cross_rtk \
        --run build/calboth:final_fast,final_rtk --run build/confirm0:held_out_confirm [--write]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

MODES = {"blind": "pred", "named": "pred_hint"}


def case_rows(work: Path, name: str, calibrations: dict) -> list[dict]:
    """Per patient and mode: recall, error and misnamed contacts, for each calibration."""
    from cochseg3d.contacts import find_contacts
    from cochseg3d.metrics import match_contacts
    from cochseg3d.volume import read_image

    rows = []
    for case in sorted((work / "test" / name).iterdir()):
        truth_file = case / "truth" / "contacts.json"
        if not truth_file.is_file():
            continue
        truth = json.loads(truth_file.read_text())
        image = None
        for mode, folder in MODES.items():
            label_path = work / folder / name / f"{case.name}.nii.gz"
            stored = work / folder / name / f"{case.name}.contacts.json"
            if not label_path.is_file() or not stored.is_file():
                continue
            image = image or read_image(case / "image.nii.gz")
            label = read_image(label_path)
            electrode = json.loads(stored.read_text()).get("electrode_hint")
            row = {"set": name, "case_id": case.name, "mode": mode, "model": truth.get("model")}
            for key, cal in calibrations.items():
                found = find_contacts(label, image, electrode=electrode, calibration=cal)
                m = match_contacts(found.lps_mm, truth["contacts_lps_mm"])
                row[key] = {"recall": m["recall"], "error_mm": m["mean_error_mm"], "misnamed": m["misnamed"]}
            rows.append(row)
    return rows


def _mean(values) -> float:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


def table(rows: list[dict], keys: list[str]) -> str:
    arrow = " → ".join(keys)
    lines = [f"| set | contacts | arrays | every contact named right: {arrow} | contacts misnamed (mean) | "
             "contact recall (shipped → chain) | contact error mm (shipped → chain) |",
             "|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["set"] for r in rows):
        for mode in MODES:
            rs = [r for r in rows if r["set"] == name and r["mode"] == mode]
            if not rs:
                continue
            right = " → ".join(str(sum(1 for r in rs if r[k]["misnamed"] == 0.0)) for k in keys)
            means = {q: [f"{_mean(r[k][q] for r in rs):.3f}" for k in keys] for q in ("misnamed", "recall", "error_mm")}
            cells = [" → ".join(means["misnamed"])] + [" → ".join(means[q][:2]) for q in ("recall", "error_mm")]
            lines.append(f"| {name} | {mode} | {len(rs)} | {right} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="WORK:SET[,SET]",
                    help="an evaluation run's folder and the sets in it")
    ap.add_argument("--turn", type=float, default=0.85,
                    help="the apex_inside_ratio to try (turning a base-first chain round; shipped off)")
    ap.add_argument("--json", type=Path, help="also write every row here")
    ap.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = ap.parse_args(argv)
    from cochseg3d.contacts import Calibration

    shipped = Calibration.load()
    calibrations = {"shipped": shipped, "chain": shipped.replace(chain_order=True),
                    "chain + turned": shipped.replace(chain_order=True, apex_inside_ratio=args.turn)}
    rows: list[dict] = []
    for spec in args.run:
        work, _, sets = spec.partition(":")
        for name in sets.split(","):
            rows += case_rows(Path(work), name, calibrations)
            print(f"{work} {name}: {sum(1 for r in rows if r['set'] == name)} rows", file=sys.stderr, flush=True)
    body = table(rows, list(calibrations))
    print(body)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.write:
        from benchlib import update_section

        note = ("Contacts found again on the labels the shipped model gave in the evaluation runs named below, "
                "three times in one run: the shipped calibration (contacts ordered by their nearest centreline "
                "sample), with `chain_order` on (contacts off the centreline extend the chain at its ends) "
                f"and with that turned round where it looks base first (`apex_inside_ratio` {args.turn}); "
                "both options are shipped off. *Misnamed*: matched contacts whose index (apex first) is not "
                "the truth's less the array's common offset (`metrics.match_contacts`; an array read from its "
                "base has ~all misnamed). Both options were written, and the ratio chosen, on held_out_final, "
                "cross_fast and cross_rtk; final_fast, final_rtk and held_out_confirm only report.\n\n")
        update_section("contact_order", "Arrays named from the wrong end (issue 13)", note + body + "\n",
                       command="scripts/bench_contact_order.py " + " ".join(f"--run {r}" for r in args.run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
