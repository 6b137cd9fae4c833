"""``cochseg3d select-coronal``: the seed workflow's file filter (copy the coronal DICOM files)."""

from __future__ import annotations

import argparse

NAME = "select-coronal"
HELP = "copy the DICOM files whose orientation is coronal (1,0,0,0,0,-1) from DIR to OUT; DIR is never modified"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="DICOM folder (searched recursively, read only)")
    parser.add_argument("output", metavar="OUT", help="folder to copy the coronal files into (not inside DIR)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="largest difference of any direction cosine from (1,0,0,0,0,-1) (default 0.05)")
    parser.add_argument("--verbose-skips", action="store_true", help="list every file not copied and why")


def run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from cochseg3d.dicom import check_output_outside_input, coronal_file_filter
    from cochseg3d.volume import atomic_write

    src, out = Path(args.folder), Path(args.output)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder")
    check_output_outside_input(src, out)
    keep, other = coronal_file_filter(src, tolerance=args.tolerance)
    for path in keep:
        atomic_write(out / path.relative_to(src), lambda tmp, p=path: shutil.copy2(p, tmp))
    print(f"copied {len(keep)} coronal file(s) to {out}; {len(other)} other file(s) left in place")
    if args.verbose_skips:
        for s in other:
            print(f"  {s}")
    return 0
