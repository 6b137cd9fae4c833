"""``cochseg3d export-bundle OUT``: the segmentation model as a MONAI Bundle folder."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "export-bundle"
HELP = ("write the model as a MONAI Bundle into OUT (run it with "
        "`python -m monai.bundle run --config_file OUT/configs/inference.json --dataset_dir IN/`)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUT", type=Path, help="bundle folder to write (new or empty)")
    parser.add_argument("--model", type=Path, default=None,
                        help="checkpoint (.pt) from `cochseg3d train`; default: the model shipped in the package")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a folder that is not empty (the bundle's own files are replaced)")


def run(args: argparse.Namespace) -> int:
    from cochseg3d.bundle import export_bundle
    from cochseg3d.utils import display_path

    out = export_bundle(args.output, model=args.model, overwrite=args.overwrite)
    print(f"bundle written to {display_path(out)}; run it with:\n"
          f"  python -m monai.bundle run --config_file {display_path(out / 'configs' / 'inference.json')} "
          "--dataset_dir IN/ --output_dir LABELS/")
    return 0
