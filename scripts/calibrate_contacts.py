"""Calibrate where a merged electrode array's contacts sit inside its bright band.

Where contacts merge (Cochlear, AB at CBCT resolution) the contact finder places the first and
last contacts at fixed distances inside the band's two ends (``band_to_first_mm`` and
``band_to_last_mm`` of its calibration, cochseg3d/contacts/calibration.json), along the label's
centreline moved outward by ``radial_offset_mm`` (beside a perimodiolar array the modiolar wall
blooms into the label, which pulls its centreline toward the spiral's centre). These depend on
the scanner's blur and the arrays' design; this script measures them on phantoms the default
model never saw (seeds 800000 + i, disjoint from training and from the held-out tests),
segmented by the shipped model exactly as `cochseg3d segment` would:

    .venv/bin/python scripts/calibrate_contacts.py [--patients 240] [--cohort DIR] [--model CKPT]
        [--work DIR] [--base FILE] [--out FILE]

First the radial offset per model (centreline without the shift), then the band ends along the
shifted centreline: per model at a reference bloom, plus how they grow with the label's bloom
(``bloom.slope_first`` / ``bloom.slope_last``, pooled over models). It logs the median and
spread per vendor and per model (4 cases or more) and writes a calibration file: the measured
tables over the switches and constants of ``--base`` (default: the shipped calibration), with
the seeds, model and date as its source, to ``--out`` (default build/calibration.json; the shipped
file only where ``--out`` names it), and the per-case measurements to WORK/calibration_cases.json
(WORK: build/calibration). `cochseg3d segment --calibration FILE` uses the file.
Rerun it after changing the phantom's CBCT model, the default model or the centreline tracking;
`--cohort` measures on scans of your own scanner whose contact positions are known."""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

log = logging.getLogger("calibrate_contacts")

#: seeds of the calibration phantoms (training: seed * 1000 + i; held-out tests: 900000 + ...)
SEED_BASE = 800_000
RTK_SEED_BASE = 840_000
RNG_SEED = 20261127


def calibration_cohort(work: Path, n: int, rtk: int = 0) -> Path:
    """Phantoms randomised like the default model's training data (WORK/cohort_N).

    ``rtk`` > 0: a cross-simulator cohort as a model trained with ``--rtk-fraction`` saw, ``n``
    fast-model and ``rtk`` itk-rtk patients, all with scanner realism (WORK/cohort_N_rtkM; itk-rtk
    seeds RTK_SEED_BASE + i), so no table is measured on one simulator alone.
    """
    from train_default_model import make_cohort, random_overrides, scanner_overrides

    rng = np.random.default_rng(RNG_SEED)
    if rtk <= 0:
        specs = [(SEED_BASE + i, *random_overrides(rng)) for i in range(n)]
        cohort = work / f"cohort_{n}"
    else:
        specs = [(SEED_BASE + i, *scanner_overrides(rng)) for i in range(n)]
        for i in range(rtk):
            orientation, ov = scanner_overrides(rng)
            specs.append((RTK_SEED_BASE + i, orientation, {**ov, "ct_model": "rtk"}))
        cohort = work / f"cohort_{n}_rtk{rtk}"
    if not (cohort / "cohort.json").is_file():
        make_cohort(cohort, specs)
    return cohort


def segment_cohort(cohort: Path, pred: Path, model_path: Path) -> None:
    """Every case of ``cohort`` segmented as `cochseg3d segment` would (kept between runs)."""
    from cochseg3d.inference import load_model
    from cochseg3d.pipeline import segment_path

    model, pre, _ = load_model(model_path)
    for e in json.loads((cohort / "cohort.json").read_text()):
        if not (pred / f"{e['case_id']}.nii.gz").is_file():
            segment_path(cohort / e["dicom"], pred, model, preprocessing=pre, case_id=e["case_id"], png=False)


def _cases(cohort: Path, pred: Path):
    """(entry, truth, label, image) of each case of ``cohort`` with its segmentation in ``pred``."""
    from cochseg3d.dicom import load_input
    from cochseg3d.volume import read_image

    from tqdm.auto import tqdm

    entries = json.loads((cohort / "cohort.json").read_text())
    for e in tqdm(entries, desc="measuring", unit="patient"):
        truth = json.loads((cohort / e["contacts"]).read_text())
        yield e, truth, read_image(pred / f"{e['case_id']}.nii.gz"), load_input(cohort / e["dicom"])


def measure_radial(cohort: Path, pred: Path, cal) -> list[dict]:
    """Per case: how far the uncorrected centreline runs inside the true array's curve, in mm.

    At each true contact, the nearest centreline point's offset along the array's principal
    normal (toward its centre of curvature, from the true path over 1 mm either side); contacts
    whose nearest centreline point is over 0.5 mm away are skipped. ``cal``: the calibration
    measured with (its radial offsets left out).
    """
    from cochseg3d.contacts import find_contacts

    unshifted = cal.replace(radial_offset_mm={})
    rows = []
    for e, truth, label, image in _cases(cohort, pred):
        found = find_contacts(label, image, electrode=e["model"], calibration=unshifted)
        curve = found.centreline_lps_mm
        path = np.asarray(truth["electrode_path_lps_mm"])
        step = float(np.median(np.linalg.norm(np.diff(path, axis=0), axis=1)))
        w = max(1, int(round(1.0 / step)))
        inward = []
        for p in np.asarray(truth["contacts_lps_mm"]):
            j = int(np.argmin(np.linalg.norm(path - p, axis=1)))
            a, b = max(j - w, 0), min(j + w, len(path) - 1)
            t0, t1 = path[j] - path[a], path[b] - path[j]
            if min(np.linalg.norm(t0), np.linalg.norm(t1)) == 0:
                continue
            k = t1 / np.linalg.norm(t1) - t0 / np.linalg.norm(t0)
            if np.linalg.norm(k) < 1e-6 or not len(curve):
                continue
            q = curve[np.argmin(np.linalg.norm(curve - p, axis=1))]
            if np.linalg.norm(q - p) < 0.5:
                inward.append(float((q - p) @ (k / np.linalg.norm(k))))
        if inward:
            rows.append({"case_id": e["case_id"], "vendor": truth["vendor"], "model": truth["model"],
                         "inward_mm": float(np.mean(inward))})
    return rows


def measure(cohort: Path, pred: Path, cal) -> list[dict]:
    """Per merged-array case: band start -> first contact and last contact -> band end, in mm,
    along the centreline as ``cal`` (its radial offsets) moves it."""
    from cochseg3d.contacts import find_contacts

    rows = []
    for e, truth, label, image in _cases(cohort, pred):
        found = find_contacts(label, image, electrode=e["model"], calibration=cal)
        if found.method != "pitch":
            continue  # separate contacts: peaks, dips or blobs, no band to calibrate
        curve, step = found.centreline_lps_mm, 0.05
        start, end = found.info.get("band_mm") or (None, None)
        tc = np.asarray(truth["contacts_lps_mm"])
        dist = np.linalg.norm(curve[None] - tc[[0, -1], None], axis=2)
        s_first, s_last = dist.argmin(axis=1) * step
        ok_first, ok_last = dist.min(axis=1) < 0.5  # the true contact lies on the centreline
        rows.append({
            "case_id": e["case_id"], "vendor": truth["vendor"], "model": truth["model"],
            "band_to_first_mm": float(s_first - start) if start is not None and ok_first else None,
            "last_to_band_end_mm": float(end - s_last) if end is not None and ok_last else None,
            "bloom_mm": found.info.get("bloom_mm"), "spacing_mm": float(max(image.spacing_mm)),
        })
    return rows


def summarise(rows: list[dict], keys: tuple[str, ...], *, min_n: int = 4) -> dict:
    """Median, median absolute deviation and count per vendor and per model (``min_n`` cases or more)."""
    groups: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in rows:
        for key in keys:
            if r.get(key) is not None:
                groups[r["vendor"]][key].append(r[key])
                groups[r["model"]][key].append(r[key])
                groups["default"][key].append(r[key])
    out = {}
    for name, d in sorted(groups.items()):
        stats = {key: {"median": round(float(np.median(v)), 3),
                       "mad": round(float(np.median(np.abs(np.asarray(v) - np.median(v)))), 3), "n": len(v)}
                 for key, v in d.items() if len(v) >= min_n or name in ("Cochlear", "AB", "MED-EL", "default")}
        if stats:
            out[name] = stats
    return out


def bloom_slopes(rows: list[dict]) -> tuple[dict[str, float], list[dict]]:
    """How each band-end distance grows with the label's bloom (its half-width at the apex).

    One slope per end, pooled over models (each model's median taken off first; values over
    0.4 mm from it left out), about the median bloom. Returns the calibration's ``bloom`` entry
    (``slope_first``, ``slope_last``, ``ref_mm``) and the rows with the distances brought to that
    reference bloom.
    """
    ref = float(np.median([r["bloom_mm"] for r in rows])) if rows else 0.0
    out = {"ref_mm": round(ref, 3)}
    adjusted = [dict(r) for r in rows]
    for key, name in (("band_to_first_mm", "slope_first"), ("last_to_band_end_mm", "slope_last")):
        have = [r for r in rows if r[key] is not None]
        by_model: dict[str, list[float]] = collections.defaultdict(list)
        for r in have:
            by_model[r["model"]].append(r[key])
        y = np.array([r[key] - np.median(by_model[r["model"]]) for r in have])
        x = np.array([r["bloom_mm"] - ref for r in have])
        ok = np.abs(y) < 0.4
        slope = float(np.polyfit(x[ok], y[ok], 1)[0]) if ok.sum() >= 10 and np.ptp(x[ok]) > 0 else 0.0
        out[name] = round(slope, 3)
        for r in adjusted:
            if r[key] is not None:
                r[key] = r[key] - slope * (r["bloom_mm"] - ref)
    return out, adjusted


def constants(radial: dict, bands: dict, *, min_radial_mm: float = 0.02) -> dict[str, dict[str, float]]:
    """The calibration's tables from the summaries: models only for the radial offset (where it
    is at least ``min_radial_mm``), models then vendors then a default for the band ends."""
    models = {m for m in radial if m not in ("Cochlear", "AB", "MED-EL", "default")}
    out: dict[str, dict[str, float]] = {
        "radial_offset_mm": {m: radial[m]["inward_mm"]["median"] for m in sorted(models)
                             if abs(radial[m]["inward_mm"]["median"]) >= min_radial_mm}}
    for key, name in (("band_to_first_mm", "band_to_first_mm"), ("last_to_band_end_mm", "band_to_last_mm")):
        out[name] = {g: st[key]["median"] for g, st in bands.items() if key in st}
    return out


def calibration_document(base, tables: dict[str, dict[str, float]], bloom: dict[str, float],
                         source: dict) -> dict:
    """The calibration file's content: ``base``'s switches and constants, the measured tables and
    bloom slopes, and where they came from (checked by :meth:`Calibration.from_dict`)."""
    from cochseg3d.contacts import Calibration

    doc = base.to_dict()
    doc.update(tables)
    doc["bloom"] = dict(bloom)
    doc["source"] = source
    Calibration.from_dict(doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    from train_default_model import WEIGHTS

    from cochseg3d.contacts import Calibration
    from cochseg3d.volume import atomic_write

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=240, help="calibration phantoms to generate")
    ap.add_argument("--rtk", type=int, default=0,
                    help="also this many itk-rtk phantoms (all with scanner realism): for a model trained across "
                         "both CT models")
    ap.add_argument("--cohort", type=Path, default=None,
                    help="measure on this cohort instead (cohort.json with dicom / contacts per case, as "
                         "`cochseg3d phantom` writes; e.g. your scanner's scans with known contact positions)")
    ap.add_argument("--model", type=Path, default=WEIGHTS / "default.pt", help="checkpoint that segments")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "calibration")
    ap.add_argument("--base", type=Path, default=None,
                    help="calibration whose switches and constants are kept (default: the shipped one)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "calibration.json",
                    help="calibration file to write (default: build/calibration.json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("cochseg3d").setLevel(logging.WARNING)
    base = Calibration.load(args.base)
    cohort = args.cohort or calibration_cohort(args.work, args.patients, args.rtk)
    pred = args.work / f"pred_{cohort.name}"
    segment_cohort(cohort, pred, args.model)

    radial = summarise(measure_radial(cohort, pred, base), ("inward_mm",))
    # the band ends are measured along the centreline as the finder will use it: shifted outward
    shifted = base.replace(radial_offset_mm=constants(radial, {})["radial_offset_mm"])
    rows = measure(cohort, pred, shifted)
    bloom, adjusted = bloom_slopes(rows)
    bands = summarise(adjusted, ("band_to_first_mm", "last_to_band_end_mm"))
    for name, d in list(radial.items()) + list(bands.items()):
        for key, st in d.items():
            log.info("%-22s %-20s median %+.3f mm  mad %.3f  n %d", name, key, st["median"], st["mad"], st["n"])
    cohort_source = str(args.cohort) if args.cohort else {"seeds": [SEED_BASE, SEED_BASE + args.patients - 1],
                                                       **({"rtk_seeds": [RTK_SEED_BASE, RTK_SEED_BASE + args.rtk - 1]}
                                                          if args.rtk else {})}
    source = {"script": "scripts/calibrate_contacts.py", "cohort": cohort_source, "model": str(args.model),
              "date": datetime.date.today().isoformat(), "cases": len(rows),
              "base": str(args.base) if args.base else "shipped calibration (switches and constants)"}
    doc = calibration_document(base, constants(radial, bands), bloom, source)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=1) + "\n"))
    details = args.work / "calibration_cases.json"
    atomic_write(details, lambda tmp: Path(tmp).write_text(json.dumps(
        {"radial": radial, "bands_at_reference_bloom": bands, "cases": rows, "source": source}, indent=1)))
    log.info("written %s (cases: %s)", args.out, details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
