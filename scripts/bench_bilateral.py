#!/usr/bin/env python
"""Bilateral scans: both arrays found, each on its side, with the shipped model, from DICOM.

N bilateral phantoms (:func:`cochseg3d.phantom.bilateral.generate_bilateral`: both ears in one axial
scan, each ear a patient of its own, one scanner) are written as DICOM folders and segmented with
:func:`cochseg3d.segment` (shipped model, no electrode named). Scored per case: two arrays kept, and
per side the found contacts against that side's true ones (recall and mean error at a 1 mm gate) and
against the other side's (a swapped side matches nothing there). The peer, measured in the same
run on the same label: post-processing that keeps one array (``BILATERAL_MIN_MM`` = inf), as before.
Found contacts above the true count are the blind finder's (an array whose contacts do not separate
is read as a 22-contact one), the same on each ear segmented alone.

Seeds 991000+ (fast CT model) and 991500+ (itk-rtk), drawn after the rule was written; nothing is
tuned on them.

    nice -n 19 .venv/bin/python scripts/bench_bilateral.py --fast 10 --rtk 4 [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import cochseg3d  # noqa: E402
from cochseg3d.metrics import match_contacts  # noqa: E402
from cochseg3d.phantom import write_patient  # noqa: E402
from cochseg3d.phantom.bilateral import generate_bilateral  # noqa: E402

SEEDS = {"fast": 991_000, "rtk": 991_500}


def score(res, truth: dict) -> dict:
    """Arrays kept, and each side's contacts against both sides' truth."""
    row = {"n_arrays": len(res.arrays) or 1, "qc": res.qc["verdict"], "sides": {}}
    arrays = dict(res.arrays) or {_nearer_side(res.contacts, truth): res.contacts}
    for side in ("right", "left"):
        found = arrays.get(side)
        t = truth["arrays"][side]
        m = match_contacts(found.lps_mm if found is not None else np.zeros((0, 3)), t["contacts_lps_mm"])
        other = truth["arrays"]["left" if side == "right" else "right"]
        swapped = match_contacts(found.lps_mm if found is not None else np.zeros((0, 3)), other["contacts_lps_mm"])
        row["sides"][side] = {"model": t["model"], "n_found": 0 if found is None else int(len(found.lps_mm)),
                              "n_true": len(t["contacts_lps_mm"]), "recall": m["recall"],
                              "error_mm": m["mean_error_mm"], "matched_other_side": swapped["n_matched"]}
    return row


def _nearer_side(contacts, truth: dict) -> str:
    """The side whose true contacts the one kept array matches most."""
    n = {s: match_contacts(contacts.lps_mm, truth["arrays"][s]["contacts_lps_mm"])["n_matched"] for s in ("right", "left")}
    return max(n, key=n.get)


def run_case(seed: int, ct_model: str, work: Path) -> dict:
    from cochseg3d import postprocess as pp

    t0 = time.perf_counter()
    case = generate_bilateral(seed, ct_model=ct_model)
    folder = write_patient(case, work)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = cochseg3d.segment(folder / "DICOM", work / "out", case_id=case.case_id)
    row = {"seed": seed, "ct_model": ct_model, "generate_s": round(t_gen, 1),
           "segment_s": round(time.perf_counter() - t0, 1), **score(res, case.contacts)}
    saved, pp.BILATERAL_MIN_MM = pp.BILATERAL_MIN_MM, float("inf")
    try:  # the peer: one array kept, as before
        row["peer"] = score(cochseg3d.segment(folder / "DICOM", None, case_id=case.case_id), case.contacts)
    finally:
        pp.BILATERAL_MIN_MM = saved
    return row


def table(rows: list[dict]) -> str:
    out = ["| CT model | n | both arrays kept | each array on its side | contact recall R / L "
           "| mean error mm R / L | contacts found / true | contacts matched to the other side | peer (one array kept): recall R / L |",
           "|---|---|---|---|---|---|---|---|---|"]
    for ct in SEEDS:
        rs = [r for r in rows if r["ct_model"] == ct]
        if not rs:
            continue

        def mean(key, side, src=None):
            vals = [(r[src] if src else r)["sides"][side][key] for r in rs]
            vals = [v for v in vals if v == v]
            return f"{np.mean(vals):.2f}" if vals else "-"

        both = sum(r["n_arrays"] == 2 for r in rs)
        right = sum(r["sides"]["right"]["recall"] > 0 and r["sides"]["left"]["recall"] > 0 for r in rs)
        found = sum(r["sides"][s]["n_found"] for r in rs for s in ("right", "left"))
        true = sum(r["sides"][s]["n_true"] for r in rs for s in ("right", "left"))
        swapped = sum(r["sides"][s]["matched_other_side"] for r in rs for s in ("right", "left"))
        out.append(f"| {ct} | {len(rs)} | {both}/{len(rs)} | {right}/{len(rs)} | {mean('recall', 'right')} / "
                   f"{mean('recall', 'left')} | {mean('error_mm', 'right')} / {mean('error_mm', 'left')} | {found} / {true} | {swapped} | "
                   f"{mean('recall', 'right', 'peer')} / {mean('recall', 'left', 'peer')} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", type=int, default=10, help="bilateral phantoms, fast CT model")
    ap.add_argument("--rtk", type=int, default=4, help="bilateral phantoms, itk-rtk CT model")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ct, n in (("fast", a.fast), ("rtk", a.rtk)):
            for i in range(n):
                rows.append(run_case(SEEDS[ct] + i, ct, Path(tmp)))
                r = rows[-1]
                print(ct, r["seed"], r["n_arrays"], {s: (v["n_found"], v["n_true"], round(v["recall"], 2))
                                                    for s, v in r["sides"].items()}, flush=True)
    body = table(rows)
    print(body)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1, default=str))
    if a.write:
        from benchlib import update_section

        update_section("bilateral", "Bilateral scans (two arrays in one scan)", __doc__.split("\n\n")[1] + "\n\n" + body,
                       command=f"nice -n 19 .venv/bin/python scripts/bench_bilateral.py --fast {a.fast} --rtk {a.rtk} "
                               "--write")


if __name__ == "__main__":
    main()
