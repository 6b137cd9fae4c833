#!/usr/bin/env python
"""The fitted physical array (:mod:`cochseg3d.clinical.array_label`) against the phantom's truth.

Phantoms: fast CT model, clinical preset (0.2 mm voxels: a contact's 0.4 mm platinum is 2 voxels
across), seeds 987000+ (used only to report). For each, the array is fitted through the TRUE contacts
(true path as centreline), through the contacts found on the TRUE label (electrode named) and, with
``--model``, through the contacts ``segment`` finds with the shipped model. Scores: Dice of the contact
values (1..N) against ``truth/metal`` (voxels at least half platinum), Dice of the whole array against
the truth's silicone + metal tissue, and the mean distance of each contact region's centroid to its
true contact (where the counts agree).

    nice -n 19 .venv/bin/python scripts/bench_array_label.py --n 10 [--model] [--write]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from cochseg3d.clinical.array_label import fit_array_label  # noqa: E402
from cochseg3d.contacts import Contacts, find_contacts  # noqa: E402
from cochseg3d.metrics import dice  # noqa: E402
from cochseg3d.phantom import generate_patient  # noqa: E402
from cochseg3d.phantom.anatomy import METAL, SILICONE  # noqa: E402

SEED0 = 987_000
NOTE = "\n\nContact Dice measures contact placement more than the rasteriser: a 0.4 mm platinum cylinder offset by the found contacts' ~0.1 mm error keeps ~0.6 of its overlap (issue target 0.7 met on true contacts only). Low array Dice on FLEXSOFT (true contacts too) and on 987004/987006 (found) is not yet explained; 987005 with the model (Dice 0, centroid 19 mm) looks like a reversed apex/base order."


def score(case, contacts: Contacts) -> dict:
    a = fit_array_label(contacts, case.label)
    if a.label is None:
        return {"reason": a.reason}
    lab, n = a.label.array, len(contacts.lps_mm)
    phys = np.isin(case.tissue.array, (SILICONE, METAL))
    out = {"dice_contacts": dice((lab >= 1) & (lab <= n), case.metal.array > 0), "dice_array": dice(lab > 0, phys)}
    truth = np.asarray(case.contacts["contacts_lps_mm"])
    if n == len(truth):
        cen = [case.image.index_to_lps(np.argwhere(lab == v)[:, ::-1].mean(0)) for v in range(1, n + 1)]
        out["centroid_mm"] = float(np.mean(np.linalg.norm(np.asarray(cen) - truth, axis=1)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--model", action="store_true", help="also the contacts segment finds with the shipped model")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    net = None
    if a.model:
        from cochseg3d.inference import load_model

        net = load_model()[0]
    rows = []
    for seed in range(SEED0, SEED0 + a.n):
        t0 = time.perf_counter()
        case = generate_patient(seed, preset="clinical")
        c = case.contacts
        row = {"seed": seed, "model": c["model"], "true": score(case, Contacts(
            np.asarray(c["contacts_lps_mm"]), "truth", np.asarray(c["electrode_path_lps_mm"]), info={"model": c["model"]})),
            "found on truth label": score(case, find_contacts(case.label, case.image, electrode=c["model"]))}
        if net is not None:
            import cochseg3d

            res = cochseg3d.segment(case.image, model=net, electrode=c["model"], qc=False, device="cpu")
            row["found by model"] = score(case, res.contacts)
        rows.append(row)
        print(seed, c["model"], {k: v for k, v in row.items() if isinstance(v, dict)}, f"{time.perf_counter() - t0:.0f} s",
              flush=True)
    srcs = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    lines = ["| contacts | n | Dice contacts vs truth/metal (mean, min) | Dice array vs silicone+metal | "
             "centroid error mm (mean) |", "|---|---|---|---|---|"]
    for s in srcs:
        ok = [r[s] for r in rows if "dice_contacts" in r[s]]
        dc = [o["dice_contacts"] for o in ok]
        da = [o["dice_array"] for o in ok]
        ce = [o["centroid_mm"] for o in ok if "centroid_mm" in o]
        lines.append(f"| {s} | {len(ok)}/{len(rows)} | {np.mean(dc):.3f}, {np.min(dc):.3f} | {np.mean(da):.3f} | "
                     f"{np.mean(ce) if ce else float('nan'):.3f} |")
    body = "\n".join(lines) + NOTE
    print(body)
    if a.write:
        from benchlib import update_section

        update_section("array_label", "Fitted physical array (issue 13)", body,
                       command=f"nice -n 19 .venv/bin/python scripts/bench_array_label.py --n {a.n}"
                               + (" --model" if a.model else "") + " --write")


if __name__ == "__main__":
    main()
