#!/usr/bin/env python
"""The array flags of :mod:`cochseg3d.clinical.flags` on phantoms with abnormal array placements.

For each placement kind (normal, tip fold-over, partial insertion, kink; :mod:`cochseg3d.phantom.placement`)
N phantoms are generated (fast CT model, small preset) and the clinical record
(:func:`cochseg3d.clinical.measure_arrays`) is computed twice: on the TRUE contacts with the true
array path as the centreline, and on the contacts :func:`cochseg3d.contacts.find_contacts` finds on the
TRUE label (electrode named); both with the scan, as ``segment`` measures them (the round window
where the bone around the array ends). Each flag (fold_over, kink, out_of_order, and "extracochlear": at least
one contact outside) is scored against the truth's flags: sensitivity and specificity per flag.

Seeds: normal 986000+, fold-over 986100+, partial 986200+, kink 986300+. They were drawn after the
placements and the flags were written and are used only to report: nothing is tuned on them.

    nice -n 19 .venv/bin/python scripts/bench_array_kinds.py --normal 30 --abnormal 12 [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from cochseg3d.clinical import measure_arrays  # noqa: E402
from cochseg3d.contacts import Contacts, find_contacts  # noqa: E402
from cochseg3d.phantom import generate_patient  # noqa: E402

SEEDS = {"normal": 986_000, "fold_over": 986_100, "partial": 986_200, "kink": 986_300}
FLAGS = ("fold_over", "kink", "out_of_order", "extracochlear")


def _record(contacts: Contacts, image=None) -> dict:
    a = measure_arrays(contacts, image)["arrays"][0]
    out = {k: bool(v["value"]) for k, v in a.get("flags", {}).items()}
    out["extracochlear"] = bool(a.get("extracochlear_contacts", 0))
    out["extracochlear_contacts"] = a.get("extracochlear_contacts")
    out["frame"] = "reason" not in a
    out["evidence"] = {k: v["evidence"] for k, v in a.get("flags", {}).items()}
    return out


def one(kind: str, seed: int, found: bool) -> dict:
    t0 = time.perf_counter()
    case = generate_patient(seed, array_kind=kind)
    c = case.contacts
    truth = dict(c["flags"], extracochlear=c["extracochlear_contacts"] > 0)
    row = {"kind": kind, "seed": seed, "model": c["model"], "truth": truth,
           "truth_extracochlear_contacts": c["extracochlear_contacts"], "placement": case.params["array_placement"],
           "true": _record(Contacts(np.asarray(c["contacts_lps_mm"]), "truth", np.asarray(c["electrode_path_lps_mm"]),
                                    info={"model": c["model"]}), case.image)}
    if found:
        fc = find_contacts(case.label, case.image, electrode=c["model"])
        row["found"] = _record(fc, case.image)
        row["found"]["n_found"] = int(len(fc.lps_mm))
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _rate(k: int, n: int) -> str:
    return f"{k}/{n} = {k / n:.2f}" if n else "-"


def tables(rows: list[dict], sources: list[str]) -> str:
    out = ["| flag | contacts | sensitivity (truth positive) | specificity (truth negative) |", "|---|---|---|---|"]
    for flag in FLAGS:
        for src in sources:
            pos = [r for r in rows if r["truth"][flag]]
            neg = [r for r in rows if not r["truth"][flag]]
            tp = sum(r[src][flag] for r in pos)
            tn = sum(not r[src][flag] for r in neg)
            out.append(f"| {flag} | {src} | {_rate(tp, len(pos))} | {_rate(tn, len(neg))} |")
    out += ["", "Flags raised per placement kind (phantoms with the flag / phantoms; frame: cochlear frame estimated):",
            "", "| kind | contacts | n | fold_over | kink | out_of_order | extracochlear | frame | extracochlear count exact |",
            "|---|---|---|---|---|---|---|---|---|"]
    for kind in SEEDS:
        rs = [r for r in rows if r["kind"] == kind]
        if not rs:
            continue
        for src in sources:
            cells = [f"{sum(r[src][f] for r in rs)}" for f in FLAGS]
            exact = sum(r[src]["extracochlear_contacts"] == r["truth_extracochlear_contacts"] for r in rs)
            out.append(f"| {kind} | {src} | {len(rs)} | " + " | ".join(cells)
                       + f" | {sum(r[src]['frame'] for r in rs)} | {exact} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--normal", type=int, default=30)
    ap.add_argument("--abnormal", type=int, default=12, help="phantoms per abnormal kind")
    ap.add_argument("--no-found", action="store_true", help="true contacts only (no find_contacts)")
    ap.add_argument("--kinds", default=",".join(SEEDS), help="comma-separated placement kinds (default: all)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    a = ap.parse_args()
    rows, t0 = [], time.perf_counter()
    for kind in a.kinds.split(","):
        start = SEEDS[kind]
        for seed in range(start, start + (a.normal if kind == "normal" else a.abnormal)):
            r = one(kind, seed, not a.no_found)
            rows.append(r)
            print(kind, seed, r["model"], "true", {f: r["true"][f] for f in FLAGS},
                  "found", {f: r["found"][f] for f in FLAGS} if "found" in r else "-", f"{r['seconds']} s", flush=True)
    sources = ["true"] if a.no_found else ["true", "found"]
    body = tables(rows, sources)
    print(body)
    total = time.perf_counter() - t0
    print(f"{len(rows)} phantoms in {total:.0f} s")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1, default=str))
    if a.write:
        from benchlib import update_section

        counts = f"normal {a.normal} (986000-{986000 + a.normal - 1}), " + ", ".join(
            f"{k} {a.abnormal} ({s}-{s + a.abnormal - 1})" for k, s in SEEDS.items() if k != "normal")
        intro = (f"Phantoms (fast CT model, small preset): {counts}. The seeds were drawn after the placements "
                 "(`cochseg3d/phantom/placement.py`) and the flags (`cochseg3d/clinical/flags.py`) were written; "
                 "nothing was tuned on them. Truth: the phantom's `flags` and `extracochlear_contacts`; "
                 "'extracochlear' is positive when at least one contact lies outside. 'true': the true contacts "
                 "with the true array path as centreline; 'found': `find_contacts` on the true label, electrode "
                 f"named. {len(rows)} phantoms in {total / 60:.1f} min on 2 shared cores.")
        update_section("array_kinds", "Abnormal array placements: the array flags on true and found contacts",
                       intro + "\n\n" + body, command="nice -n 19 .venv/bin/python scripts/bench_array_kinds.py "
                       f"--normal {a.normal} --abnormal {a.abnormal} --write")


if __name__ == "__main__":
    main()
