"""``cochseg3d inspect``: list the image series in a DICOM folder and what was skipped, and why."""

from __future__ import annotations

import argparse

NAME = "inspect"
HELP = "list the image series of a DICOM folder (one row per series) and every skipped file with its reason"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="patient DICOM folder (searched recursively)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--progress", action="store_true", help="progress bar while reading headers")
    parser.add_argument("--all-skips", action="store_true", help="list every skipped file, however many")


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def run(args: argparse.Namespace) -> int:
    import json

    from cochseg3d.dicom import discover
    from cochseg3d.utils import display_path

    found = discover(args.folder, progress=args.progress)
    if args.json:
        doc = {
            "folder": display_path(args.folder),
            "series": [s.summary() for s in found],
            "skipped": [{"file": display_path(s.path), "reason": s.reason} for s in found.skipped],
        }
        print(json.dumps(doc, indent=2))
        return 0
    header = ["case", "series", "description", "modality", "orientation", "files", "size", "spacing_mm", "uniform"]
    rows = []
    for s in found:
        d = s.summary()
        uniform = "yes" if d["slice_spacing_uniform"] else f"no ({d['missing_slices']} missing)"
        if d["gantry_tilt"]:
            uniform += ", tilt"
        rows.append([
            d["case_id"], d["label"], d["series_description"][:30], d["modality"], d["orientation"],
            str(d["files"]), "x".join(map(str, d["size"])), "x".join(_fmt(v) for v in d["spacing_mm"]), uniform,
        ])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if not rows:
        print("(no image series)")
    report = found.skip_report(None if args.all_skips else 30)
    if report:
        print("\n" + "\n".join(report))
    return 0
