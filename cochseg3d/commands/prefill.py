"""``cochseg3d prefill``: threshold pre-fill of the electrode, written on the input's grid."""

from __future__ import annotations

import argparse
import logging

NAME = "prefill"
HELP = "threshold pre-fill of the electrode (label NIfTI on the input's grid)"

log = logging.getLogger(__name__)


def _slices(text: str) -> tuple[int, int]:
    try:
        first, _, last = text.partition(":")
        return int(first), int(last or first)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--slices wants FIRST:LAST coronal indices, got {text!r}") from exc


def _roi(text: str) -> tuple[int, int, int, int]:
    try:
        rows, cols = text.split(",")
        (r0, r1), (c0, c1) = (tuple(int(x) for x in part.split(":")) for part in (rows, cols))
        return r0, r1, c0, c1
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--roi wants ROW0:ROW1,COL0:COL1 coronal pixels, got {text!r}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="patient DICOM folder or image file (NIfTI/NRRD/MHA)")
    parser.add_argument("output", metavar="OUT.nii.gz", help="label file to write (uint8 0/1)")
    parser.add_argument("--on-gap", choices=["error", "interpolate"], default="error",
                        help="DICOM slices missing or unreadable: refuse (default) or fill them by interpolation")
    parser.add_argument("--threshold-hu", default="auto", metavar="X|auto",
                        help="metal threshold in HU, or 'auto' from the image histogram (default)")
    parser.add_argument("--slices", type=_slices, default=None, metavar="FIRST:LAST",
                        help="only these canonical coronal slices (inclusive; default: whole volume)")
    parser.add_argument("--roi", type=_roi, default=None, metavar="ROW0:ROW1,COL0:COL1",
                        help="only inside this box of the coronal slice (pixels, end exclusive; rows run "
                             "superior->inferior, columns patient right->left)")
    parser.add_argument("--min-size", type=int, default=4, metavar="VOXELS",
                        help="drop connected components smaller than this (default 4)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT (a .bak copy is kept)")


def run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    import numpy as np

    from cochseg3d.annotation import load_image, prefill
    from cochseg3d.cli import UserError
    from cochseg3d.utils import check_output_file
    from cochseg3d.volume import write_image

    out = check_output_file(args.output)
    if not out.name.lower().endswith((".nii.gz", ".nii", ".nrrd", ".mha")):
        raise UserError(f"{out}: output must be .nii.gz, .nii, .nrrd or .mha")
    if out.exists():
        if not args.force:
            raise UserError(f"{out}: exists; pass --force to overwrite it (a .bak copy is kept)")
        shutil.copy2(out, out.with_name(out.name + ".bak"))
    image = load_image(args.input, on_gap=args.on_gap)
    label = prefill(image, threshold_hu=args.threshold_hu, slices=args.slices, roi=args.roi,
                    min_size_voxels=args.min_size)
    write_image(label.with_array(label.array.astype(np.uint8)), out)
    n = int(label.array.sum())
    vox_mm3 = float(np.prod(label.spacing_mm))
    print(f"{out}: {n} voxels ({n * vox_mm3:.1f} mm^3) at threshold {label.meta['threshold_hu']:.0f} HU")
    return 0
