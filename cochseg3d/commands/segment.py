"""``cochseg3d segment INPUT``: electrode label (NIfTI on the source grid), contacts, preview.

The CLI side only (arguments, device, the cohort loop and its shards, the flagged patients);
each patient is one :func:`cochseg3d.segment` call. A folder of patients resumes: patients whose
files are complete in the output folder are skipped (:mod:`cochseg3d.cohort_summary`), and
``summary.csv`` is rewritten after each patient.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from cochseg3d.utils import display_path

NAME = "segment"
HELP = "segment the electrode array of one patient or a folder of patients (DICOM or NIfTI)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path,
                        help="a patient DICOM folder, a NIfTI/NRRD/MHA file, or a folder of many patients")
    parser.add_argument("-o", "--output", type=Path, default=Path("segmentations"),
                        help="output folder (default: ./segmentations)")
    parser.add_argument("--model", type=Path, default=None,
                        help="checkpoint (.pt) from `cochseg3d train`; default: the model shipped in the package")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where the network runs (auto: cuda if available)")
    parser.add_argument("--probabilities", action="store_true", help="also write <case>.prob.nii.gz")
    parser.add_argument("--seg-dicom", action="store_true",
                        help="also write <case>.seg.dcm, a DICOM SEG referencing the source series")
    parser.add_argument("--electrode", default=None,
                        help='implanted array: vendor ("MED-EL", "Cochlear", "AB") or model name; '
                             "its contact count and pitch place contacts that CT cannot separate")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="contact finder calibration (scripts/calibrate_contacts.py --out FILE); "
                             "default: the one shipped in the package")
    parser.add_argument("--threshold", type=float, default=0.5, help="electrode probability threshold")
    parser.add_argument("--batch-size", type=int, default=16, help="sliding-window patches per forward pass")
    parser.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap fraction")
    parser.add_argument("--no-png", action="store_true", help="skip the preview PNG")
    parser.add_argument("--no-array-label", action="store_true",
                        help="skip <case>.array.nii.gz, the physical array fitted through the contacts "
                             "(one label per contact; a few hundred ms per patient)")
    parser.add_argument("--qc-thresholds", type=Path, default=None,
                        help="QC thresholds file (scripts/calibrate_qc.py); default: the one shipped in the package")
    parser.add_argument("--overwrite", action="store_true",
                        help="a folder of patients: segment again the patients whose files are already complete "
                             "in the output folder (by default they are skipped, so a stopped run resumes)")


def _shard(items: list, rank: int, world: int) -> list:
    return items[rank::world]


def _device(choice: str) -> str:
    """The device this process runs on; under torchrun each rank takes its own GPU."""
    import torch

    from cochseg3d.cli import UserError

    device = choice
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device available")
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    return device


def run(args: argparse.Namespace) -> int:
    from functools import partial

    from cochseg3d.cli import UserError
    from cochseg3d.contacts import Calibration, CalibrationError, electrode_spec
    from cochseg3d.dicom import check_output_outside_input
    from cochseg3d.inference import load_model
    from cochseg3d.inputs import case_ids, find_inputs
    from cochseg3d.pipeline import segment, summary
    from cochseg3d.qc import QCThresholds
    from cochseg3d.utils import check_output_folder
    from cochseg3d.volume import remove_stale_temporaries

    if args.electrode:
        electrode_spec(args.electrode)  # fail early on a typo
    try:
        calibration = Calibration.load(args.calibration)  # and on a bad calibration file, before any patient
    except CalibrationError as exc:
        raise UserError(f"--calibration: {exc}") from None
    if not 0.0 < args.threshold < 1.0:
        raise UserError(f"--threshold must lie in (0, 1), got {args.threshold}")
    if not 0.0 <= args.overlap < 1.0:
        raise UserError(f"--overlap must lie in [0, 1), got {args.overlap}")
    if args.input.exists():
        check_output_outside_input(args.input, args.output)  # the input is never written to
    check_output_folder(args.output)  # an existing file there (or above it) is refused before any work
    remove_stale_temporaries(args.output)  # what a killed run left half-written
    # under torchrun every process takes its share of the patients (and its own GPU)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = _device(args.device)
    qc_thresholds = QCThresholds.load(args.qc_thresholds)  # a broken file fails before any patient
    model, pre, info = load_model(args.model, device=device)
    cases = find_inputs(args.input)
    if not cases:
        raise UserError(f"{args.input}: no patients found (need DICOM files, image files or patient folders)")
    mine = _shard(list(zip(cases, case_ids(cases))), rank, world)
    log.info("%d patient(s) to segment%s with %s on %s", len(mine), f" (shard {rank}/{world})" if world > 1 else "",
             info["path"], device)
    one = partial(segment, output=args.output, model=model, preprocessing=pre, device=device,
                  electrode=args.electrode, calibration=calibration, png=not args.no_png, dicom_seg=args.seg_dicom,
                  threshold=args.threshold, batch_size=args.batch_size, overlap=args.overlap,
                  probabilities=args.probabilities, qc_thresholds=qc_thresholds,
                  array_label=not args.no_array_label)
    if len(cases) > 1:
        return _run_cohort(args, mine, lambda src, case_id: summary(one(src, case_id=case_id)), info, rank, world)
    done = []
    for src, case_id in mine:  # one patient: its errors go to the caller as they are
        done.append(summary(one(src, case_id=case_id)))
        print(_done_line(done[-1]))
    _print_qc(done, False)
    return 0


def _done_line(rec: dict) -> str:
    return (f"{rec['case_id']}: {rec['voxels']} voxels ({rec['volume_mm3']:.1f} mm^3), "
            f"{rec['n_contacts']} contacts, QC {rec['qc']['verdict']} -> {rec['files']['label']}")


def _run_cohort(args: argparse.Namespace, mine: list, segment_one, info: dict, rank: int, world: int) -> int:
    """The patients of a folder one by one: done ones skipped (unless --overwrite), failures logged
    and passed over, summary.csv rewritten after each; summary.json and arrays.csv at the end."""
    import time

    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from cochseg3d.cohort_summary import Summary, row
    from cochseg3d.export import write_json
    from cochseg3d.inputs import scrub_path
    from cochseg3d.utils import release_freed_memory

    name = "summary" if world == 1 else f"summary.rank{rank}"
    book = Summary(args.output / f"{name}.csv")  # a foreign summary.csv stops here, before any work
    todo, skipped = _resume(args, mine, book, info)
    done, failed = [], []
    with logging_redirect_tqdm():  # log lines above the bar, not through it
        bar = tqdm(todo, desc="segment", unit="patient", disable=len(todo) < 2)
        for src, case_id in bar:
            bar.set_postfix_str(case_id[:30])  # the patient being segmented; tqdm adds the ETA
            t0 = time.perf_counter()
            where = _relative(src, args.input)
            try:
                rec = segment_one(src, case_id)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one bad patient must not stop the rest
                release_freed_memory()
                log.error("%s failed: %s", case_id, _reason(exc, src))
                err = scrub_path(f"{type(exc).__name__}: {exc}", src, case_id)
                failed.append({"case_id": case_id, "error": err})
                book.update(row(case_id, where, "failed", seconds=time.perf_counter() - t0, error=err))
                continue
            release_freed_memory()  # a night's cohort stays at one patient's memory, not its largest
            done.append(rec)
            tqdm.write(_done_line(rec))
            book.update(row(case_id, where, "ok", record=_written_record(rec), seconds=float(rec["seconds"] or 0.0)))
    whole = done + skipped  # the cohort as the output folder now holds it
    doc = {"model": info["path"], "qc": _qc_summary(whole), "done": done, "skipped": skipped, "failed": failed}
    write_json(doc, args.output / f"{name}.json")
    if world == 1:
        _write_cohort_csv(args.output / "arrays.csv", whole)
    print(f"{len(done)} segmented, {len(skipped)} already done (skipped), {len(failed)} failed; "
          f"summary in {args.output / (name + '.csv')}")
    for f in failed:
        print(f"  failed: {f['case_id']}: {f['error']}")
    _print_qc(whole, True)
    return 1 if failed else 0


def _resume(args: argparse.Namespace, mine: list, book, info: dict) -> tuple[list, list[dict]]:
    """(patients to segment, records of those already done); each skip is one log line."""
    from cochseg3d.cohort_summary import done_record, row, wanted_files
    from cochseg3d.export import output_path

    if args.overwrite:
        return list(mine), []
    todo, skipped, other_model = [], [], 0
    for src, case_id in mine:
        wanted = wanted_files(args.output, case_id, png=not args.no_png, probabilities=args.probabilities,
                              dicom_seg=args.seg_dicom)
        record = done_record(args.output, case_id, wanted)
        if record is None:
            todo.append((src, case_id))
            continue
        log.info("%s: already done in %s, skipped (--overwrite segments it again)", case_id, args.output)
        other_model += record.get("model") not in (None, info["path"])
        files = {kind: str(output_path(args.output, case_id, kind)) for kind in ("label", "contacts")}
        skipped.append({"case_id": case_id, "n_contacts": record.get("n_contacts"), "qc": record["qc"],
                        "files": files})
        book.set(row(case_id, _relative(src, args.input), "skipped-done", record=record,
                     seconds=book.seconds(case_id)))
    if skipped:
        book.write()
    if other_model:
        log.warning("%d skipped patient(s) were segmented with another model than %s; --overwrite redoes them",
                    other_model, info["path"])
    return todo, skipped


def _relative(src: Path, root: Path) -> str:
    """The patient's input below the folder given (folder names are the case ids already)."""
    try:
        rel = src.relative_to(root).as_posix()
    except ValueError:
        rel = src.name
    return display_path(rel if rel != "." else src.name)


def _reason(exc: Exception, src: Path) -> str:
    """The failure in one line naming the input (most messages do already); the exception's name
    only where it is not a plain input problem."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, (ValueError, OSError)):
        text = f"{type(exc).__name__}: {text}"
    where = display_path(src)
    return text if where in text else f"{where}: {text}"


def _written_record(rec: dict, wait_s: float = 30.0) -> dict:
    """The patient's contacts.json as written. Another run into the same folder may be rewriting the
    patient (it removes contacts.json first and writes it last): wait for it, then take what it wrote;
    still none, the summary's own QC and count."""
    import time

    path, deadline = Path(rec["files"]["contacts"]), time.monotonic() + wait_s
    while True:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            if time.monotonic() > deadline:
                log.warning("%s: contacts.json is being rewritten by another run; summary from this run",
                            rec["case_id"])
                return {"case_id": rec["case_id"], "qc": rec.get("qc"), "n_contacts": rec.get("n_contacts")}
            time.sleep(0.1)


def _write_cohort_csv(path: Path, done: list[dict]) -> None:
    """One row per array of the cohort (side, model, insertion angle, flags), from each contacts.json."""
    from cochseg3d.clinical.markups import COHORT_COLUMNS, cohort_rows, csv_text
    from cochseg3d.volume import atomic_write

    rows = []
    for rec in done:
        arrays = _written_record(rec).get("arrays") or []
        rows += cohort_rows({"arrays": arrays}, case_id=rec["case_id"])
    text = csv_text(rows, COHORT_COLUMNS)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _qc_summary(done: list[dict]) -> dict:
    """Verdict counts and the flagged patients with their reasons (for summary.json)."""
    counts = {v: sum(1 for r in done if r["qc"]["verdict"] == v) for v in ("ok", "review", "fail")}
    flagged = [{"case_id": r["case_id"], "verdict": r["qc"]["verdict"], "reasons": r["qc"]["reasons"]}
               for r in done if r["qc"]["verdict"] != "ok"]
    return {**counts, "flagged": flagged}


def _print_qc(done: list[dict], batch: bool) -> None:
    flagged = [r for r in done if r["qc"]["verdict"] != "ok"]
    if not batch:
        for r in done:
            print(f"QC {r['qc']['verdict']}" + "".join(f"\n  - {t}" for t in r["qc"]["reasons"]))
        return
    if not flagged:
        print(f"QC: all {len(done)} segmentations ok")
        return
    print(f"QC: {len(flagged)} of {len(done)} flagged for review:")
    for r in flagged:
        print(f"  {r['case_id']} ({r['qc']['verdict']}): " + "; ".join(r["qc"]["reasons"]))
