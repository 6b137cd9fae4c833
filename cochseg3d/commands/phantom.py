"""``cochseg3d phantom``: write a synthetic post-operative temporal-bone CBCT cohort with ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "phantom"
HELP = "generate synthetic post-operative CBCT patients (DICOM + truth label, metal, contacts)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output folder (one sub-folder per patient + cohort.json)")
    parser.add_argument("--patients", type=int, default=4, help="number of patients (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed; same seed, same cohort (default 0)")
    parser.add_argument("--preset", choices=("small", "clinical"), default="small",
                        help="small: 96^3 at 0.4 mm (fast); clinical: 200^3 at 0.2 mm")
    parser.add_argument("--orientation", choices=("axial", "coronal", "sagittal", "oblique", "mixed"), default="axial",
                        help="acquisition orientation of the written series; mixed draws one per patient")
    parser.add_argument("--vendor", choices=("MED-EL", "Cochlear", "AB"), default=None,
                        help="electrode vendor for every patient (default: drawn per patient)")
    parser.add_argument("--ct-model", choices=("fast", "rtk"), default="fast",
                        help="CBCT model: fast (image domain, default) or rtk (itk-rtk projection physics + FDK; "
                             "~1 min per clinical patient)")
    hard = parser.add_argument_group("hard conditions (issue 12; off by default, 'random' draws per patient)")
    hard.add_argument("--motion-mm", type=_float_or_random, default=0.0, metavar="MM|random",
                      help="patient motion during the scan: peak-to-peak displacement of the cochlea (mm)")
    hard.add_argument("--screw", action="store_const", const=True, default=False,
                      help="a titanium bone-anchored hearing-implant screw in the temporal bone")
    hard.add_argument("--screw-random", dest="screw", action="store_const", const="random",
                      help="a screw in about half the patients (drawn)")
    hard.add_argument("--dental-fillings", type=_int_or_random, default=0, metavar="N|random",
                      help="N amalgam dental fillings low in the field")
    hard.add_argument("--fov-truncation", type=_float_or_random, default=0.0, metavar="T|random",
                      help="cut the measured field's radius by this fraction (0-0.6): head partly outside the field")
    parser.add_argument("--array-kind", choices=("normal", "fold_over", "partial", "kink", "random"), default="normal",
                        help="array placement: normal (default), tip fold-over, partial insertion (extracochlear "
                             "contacts), a kink in the basal turn, or random (drawn per patient)")
    parser.add_argument("--bilateral", action="store_true",
                        help="both ears implanted, in one axial scan wide enough for both (issue 13)")
    parser.add_argument("--preview", action="store_true", help="also write <patient>/preview.png")
    parser.add_argument("--no-clutter", action="store_true",
                        help="write only the image series (no localizer, ._ file or README.txt)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _number_or_random(kind: type, what: str):
    def parse(text: str):
        if text == "random":
            return text
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} or 'random', got {text!r}") from None

    return parse


_float_or_random = _number_or_random(float, "a number")
_int_or_random = _number_or_random(int, "a whole number")


def run(args: argparse.Namespace) -> int:
    from cochseg3d.cli import UserError
    from cochseg3d.phantom import generate_cohort

    if args.patients < 1:
        raise UserError(f"--patients must be at least 1, got {args.patients}")
    if args.seed < 0:
        raise UserError(f"--seed must be 0 or more, got {args.seed}")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if args.bilateral and args.orientation != "axial":
        raise UserError(f"--bilateral scans are axial; drop --orientation {args.orientation}")
    overrides = {"vendor": args.vendor} if args.vendor else {}
    if args.array_kind != "normal":
        overrides["array_kind"] = args.array_kind
    for key in ("motion_mm", "screw", "dental_fillings", "fov_truncation"):
        if getattr(args, key):
            overrides[key] = getattr(args, key)
    folders = generate_cohort(out, patients=args.patients, seed=args.seed, preset=args.preset,
                              orientation=args.orientation, clutter=not args.no_clutter, preview=args.preview,
                              progress=not args.no_progress, ct_model=args.ct_model, bilateral=args.bilateral,
                              **overrides)
    print(f"wrote {len(folders)} phantom patient(s) to {out.resolve()}")
    print(f"  index: {(out / 'cohort.json').resolve()}")
    print(f"  e.g. DICOM: {folders[0] / 'DICOM'}   truth: {folders[0] / 'truth'}")
    if args.preview:
        print(f"  previews: {out / '*' / 'preview.png'}")
    return 0
