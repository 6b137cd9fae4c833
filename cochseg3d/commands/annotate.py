"""``cochseg3d annotate``: open a case in napari with the electrode annotation widget."""

from __future__ import annotations

import argparse

NAME = "annotate"
HELP = "paint and review electrode masks in napari (needs the napari extra)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", metavar="CASE", help="patient DICOM folder, image file, or an *.annotation.json")
    parser.add_argument("--store", default=None, metavar="DIR",
                        help="annotation store folder (default: ./annotations, or the record's folder)")
    parser.add_argument("--prediction", default=None, metavar="LABEL",
                        help="a model's label/probability NIfTI on the case's grid, to review")
    parser.add_argument("--autosave-s", type=float, default=120.0, metavar="S",
                        help="autosave interval in seconds, 0 to switch off (default 120)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cochseg3d.cli import UserError

    case = Path(args.case)
    if not case.exists():
        raise FileNotFoundError(f"{case}: no such file or folder")
    try:
        import napari
        from napari_cochseg3d.launch import open_case
    except ImportError as exc:
        raise UserError(f"napari and the napari-cochseg3d plugin are needed ({exc}); "
                        "install them with: pip install -e .[napari] -e napari_plugin") from exc
    viewer = napari.Viewer(title=f"cochseg3d annotate {case.name}")
    open_case(viewer, case, store=args.store, prediction=args.prediction, autosave_s=args.autosave_s)
    napari.run()
    return 0
