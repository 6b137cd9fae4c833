"""``cochseg3d report SEGMENTATIONS``: an HTML page per patient and a cohort index page."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "report"
HELP = "an HTML report per patient (overlays, cochlear measures, QC) and a cohort index, from segment's output"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("segmentations", type=Path, help="the output folder of `cochseg3d segment ... -o FOLDER`")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default: SEGMENTATIONS/report); an existing one must be a report's")
    parser.add_argument("--input", type=Path, default=None,
                        help="the input given to segment (patient or cohort folder), for the image overlays; "
                             "segment keeps input paths out of its files")


def run(args: argparse.Namespace) -> int:
    from cochseg3d.report import write_report
    from cochseg3d.utils import display_path

    res = write_report(args.segmentations, args.out, input=args.input)
    print(f"{len(res.pages)} patient page(s), {len(res.failed)} failed; index: {display_path(res.index)}")
    for case_id, why in res.failed.items():
        print(f"  failed: {case_id}: {why}")
    return 1 if res.failed else 0
