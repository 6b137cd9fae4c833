"""``cochseg3d evaluate PRED_DIR TRUTH_DIR``: segmentation and contact metrics against phantom truth."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "evaluate"
HELP = "compare `segment` outputs with a phantom cohort's truth: per-case table and summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred_dir", type=Path, help="folder of <case>.nii.gz (+ <case>.contacts.json) from `segment`")
    parser.add_argument("truth_dir", type=Path, help="phantom cohort folder: <case>/truth/label.nii.gz, contacts.json")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="write OUTPUT.csv and OUTPUT.json (default: PRED_DIR/evaluation)")
    parser.add_argument("--gate-mm", type=float, default=1.0, help="contact matching distance gate, mm")


def run(args: argparse.Namespace) -> int:
    import csv
    import io
    import json
    import math

    from cochseg3d.metrics import COLUMNS, evaluate_folders, format_table, summarize
    from cochseg3d.utils import check_output_folder
    from cochseg3d.volume import atomic_write

    stem = args.output or (args.pred_dir / "evaluation")
    check_output_folder(Path(f"{stem}.csv").parent)  # before the work, not after it
    rows = evaluate_folders(args.pred_dir, args.truth_dir, gate_mm=args.gate_mm, progress=True)
    summary = summarize(rows)
    print(format_table(rows + summary))
    cols = list(COLUMNS) + ["n", "failed", "error"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows + summary:
        w.writerow(r)
    csv_path = atomic_write(Path(f"{stem}.csv"), lambda tmp: Path(tmp).write_text(buf.getvalue()))

    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    payload = {"pred_dir": str(args.pred_dir), "truth_dir": str(args.truth_dir), "gate_mm": args.gate_mm,
               "cases": [{k: clean(v) for k, v in r.items()} for r in rows],
               "summary": [{k: clean(v) for k, v in r.items()} for r in summary]}
    json_path = atomic_write(Path(f"{stem}.json"), lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1)))
    print(f"written {csv_path} and {json_path}")
    return 1 if any("error" in r for r in rows) else 0
