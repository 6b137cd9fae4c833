"""``cochseg3d convert``: every image volume series of a DICOM folder to NIfTI plus a JSON sidecar."""

from __future__ import annotations

import argparse
import logging

NAME = "convert"
HELP = "convert every image volume series under DIR to OUT/<case>_<series>.nii.gz (+ de-identified JSON)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="DICOM folder (one or many patients, searched recursively)")
    parser.add_argument("output", metavar="OUT", help="output folder (must not be inside DIR)")
    parser.add_argument("--on-gap", choices=["error", "interpolate"], default="error",
                        help="missing slices: skip the series (default) or fill them by interpolation")
    parser.add_argument("--on-nonuniform", choices=["error", "resample"], default="error",
                        help="uneven slice spacing: skip the series (default) or resample it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def sidecar(info, vol) -> dict:
    """De-identified description of a converted series: no names, dates, UIDs or file paths."""
    import hashlib

    import cochseg3d

    s = info.summary()
    return {
        "case_id": info.case_id,
        "series_key": hashlib.sha256(info.series_uid.encode()).hexdigest()[:16],
        "series_number": info.series_number,
        "series_description": info.series_description,
        "modality": info.modality,
        "image_type": list(info.image_type),
        "orientation": info.orientation,
        "files": s["files"],
        "size": list(vol.size),
        "spacing_mm": list(vol.spacing_mm),
        "origin_mm_lps": list(vol.origin_mm),
        "direction_lps": [list(map(float, row)) for row in vol.direction],
        "dtype": str(vol.array.dtype),
        "value_range": [float(vol.array.min()), float(vol.array.max())],
        "slice_spacing_uniform": s["slice_spacing_uniform"],
        "missing_slices": s["missing_slices"],
        "interpolated_slices": vol.meta.get("interpolated_slices", ""),
        "gantry_tilt_corrected": bool(vol.meta.get("tilt_corrected", False)),
        "transfer_syntaxes": s["transfer_syntaxes"],
        "skipped_files": len(info.skipped) + len(info.bad_files),
        "scanner": {k: v for k, v in info.extra.items() if k in (
            "Manufacturer", "ManufacturerModelName", "ConvolutionKernel", "KVP", "SliceThickness", "BodyPartExamined")},
        "converter": f"cochseg3d {cochseg3d.__version__}",
    }


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tqdm.auto import tqdm

    from cochseg3d.dicom import check_output_outside_input
    from cochseg3d.dicom import SeriesGapError, discover, load_series
    from cochseg3d.utils import check_output_folder, display_path, sanitize_case_id
    from cochseg3d.volume import atomic_write, remove_stale_temporaries, write_image

    out = check_output_folder(args.output)
    check_output_outside_input(args.folder, out)
    found = discover(args.folder, progress=not args.no_progress)
    volumes = [s for s in found if s.is_volume]
    if not volumes:
        reasons = "; ".join(str(s) for s in found.all_skipped[:5])
        raise ValueError(f"{display_path(args.folder)}: no image volume series found. Skipped: {reasons or 'nothing'}")
    for line in found.skip_report(10):
        print(line)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # what a killed run left half-written
    used: set[str] = set()
    failures = 0
    for info in tqdm(volumes, desc="converting", unit="series", disable=args.no_progress or None):
        name = sanitize_case_id(info.label)
        if name in used:
            name = sanitize_case_id(f"{name}_{info.series_uid[-6:]}")
        used.add(name)
        try:
            vol = load_series(info, on_gap=args.on_gap, on_nonuniform=args.on_nonuniform)
        except (SeriesGapError, ValueError) as exc:
            failures += 1
            log.error("not converted: %s", exc)
            continue
        nii = write_image(vol, out / f"{name}.nii.gz")
        doc = json.dumps(sidecar(info, vol), indent=2)
        atomic_write(out / f"{name}.json", lambda tmp: tmp.write_text(doc))
        print(f"{nii}: {info.orientation} {'x'.join(map(str, vol.size))} from {len(info.slices)} files")
    others = len(found) - len(volumes)
    print(f"converted {len(volumes) - failures} of {len(volumes)} volume series into {out}"
          + (f"; {others} single-image group(s) left out" if others else "")
          + (f"; {len(found.all_skipped)} file(s) skipped (listed above)" if found.all_skipped else ""))
    return 1 if failures else 0
