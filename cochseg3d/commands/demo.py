"""``cochseg3d demo``: the whole system on synthetic phantoms, end to end, with a report."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "demo"
HELP = "end-to-end demo on synthetic phantoms: DICOM -> annotate -> train -> segment -> evaluate -> report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default ./demo_out); "
                        "rerunning reuses finished stages")
    parser.add_argument("--patients", type=int, default=None, help="cohort size (default 16; 8 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small cohort, few epochs (about 2 minutes)")
    parser.add_argument("--seed", type=int, default=0, help="cohort and split seed")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def run(args: argparse.Namespace) -> int:
    import logging

    from cochseg3d.demo import run_demo

    if not args.verbose:
        # one line per stage and the progress bars; the stages' own INFO lines with -v
        logging.getLogger("cochseg3d").setLevel(logging.WARNING)
    run_demo(args.out, patients=args.patients, quick=args.quick, seed=args.seed, device=args.device)
    return 0
