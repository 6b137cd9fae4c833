"""``cochseg3d coronal``: a patient's coronal slices as NIfTI slabs or windowed PNGs."""

from __future__ import annotations

import argparse
import logging

NAME = "coronal"
HELP = "write the coronal slices of each patient (DICOM folder or image file) as NIfTI slabs or PNGs"

log = logging.getLogger(__name__)


def _window(text: str) -> tuple[float, float]:
    try:
        c, w = (float(x) for x in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--window wants CENTER,WIDTH in HU, got {text!r}") from exc
    if w <= 0:
        raise argparse.ArgumentTypeError(f"--window width must be positive, got {w}")
    return c, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT",
                        help="DICOM folder (one or many patients; each patient's main volume) or image file")
    parser.add_argument("output", metavar="OUT", help="output folder: <case>_<k>.nii.gz or <case>_<k>.png")
    parser.add_argument("--on-gap", choices=["error", "interpolate"], default="error",
                        help="DICOM slices missing or unreadable: refuse (default) or fill them by interpolation")
    parser.add_argument("--png", action="store_true", help="write windowed 8-bit PNGs instead of NIfTI slabs")
    parser.add_argument("--window", type=_window, default=(500.0, 4000.0), metavar="CENTER,WIDTH",
                        help="PNG window in HU (default 500,4000: bone and metal apart)")
    parser.add_argument("--metal-only", action="store_true",
                        help="only the slices that show the electrode array (metal threshold from the data)")


def run(args: argparse.Namespace) -> int:
    from collections import defaultdict
    from pathlib import Path

    import numpy as np
    import yaml
    from tqdm.auto import tqdm

    from cochseg3d.dicom import check_output_outside_input, discover, load_input, load_main_series
    from cochseg3d.utils import check_output_folder, display_path, sanitize_case_id
    from cochseg3d.volume import Volume, atomic_write, canonical, remove_stale_temporaries, write_image

    src, out = Path(args.input), check_output_folder(args.output)
    if not src.exists():
        raise FileNotFoundError(f"{display_path(src)}: no such file or folder")
    check_output_outside_input(src, out)
    loaders = []
    if src.is_dir():
        found = discover(src)
        for line in found.skip_report(10):
            print(line)
        by_case = defaultdict(list)
        for info in found:
            if info.is_volume:
                by_case[info.case_id].append(info)
        if not by_case:
            reasons = "; ".join(str(s) for s in found.all_skipped[:5])
            raise ValueError(f"{src}: no image volume series found. Skipped: {reasons or 'nothing'}")
        for case, infos in sorted(by_case.items()):
            loaders.append((case, lambda infos=infos: load_main_series(infos, on_gap=args.on_gap)))
    else:
        loaders.append((None, lambda: load_input(src, on_gap=args.on_gap)))

    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # what a killed run left half-written
    lo, hi = args.window[0] - args.window[1] / 2, args.window[0] + args.window[1] / 2
    manifest = {}
    failures = []
    for case, load in loaders:
        try:
            vol = load()
        except ValueError as exc:  # one bad patient does not sink the others
            if len(loaders) == 1:
                raise
            log.error("%s: not written: %s", case, exc)
            failures.append(case)
            continue
        case = sanitize_case_id(case or vol.meta.get("case_id", "case"))
        can = canonical(vol)
        n = can.array.shape[0]
        if args.metal_only:
            from cochseg3d.metal import metal_slices

            ks = metal_slices(vol)
        else:
            ks = list(range(n))
        written = []
        for k in tqdm(ks, desc=case, unit="slice", disable=None, leave=False):
            if args.png:
                from PIL import Image

                img = np.clip((can.array[k].astype(np.float32) - lo) / (hi - lo) * 255.0, 0, 255)
                path = out / f"{case}_{k}.png"
                atomic_write(path, lambda tmp, a=img: Image.fromarray(np.rint(a).astype(np.uint8)).save(tmp, "PNG"))
            else:
                origin = np.asarray(can.origin_mm) + k * can.spacing_mm[2] * can.direction[:, 2]
                slab = Volume(can.array[k : k + 1], can.spacing_mm, tuple(origin), can.direction,
                              {"case_id": case, "coronal_index": k})
                path = write_image(slab, out / f"{case}_{k}.nii.gz")
            written.append(path.name)
        manifest[case] = {
            "slices": [int(k) for k in ks],
            "of": n,
            "pixel_spacing_mm_row_col": [float(can.spacing_mm[1]), float(can.spacing_mm[0])],
            "slice_spacing_mm": float(can.spacing_mm[2]),
            "metal_only": bool(args.metal_only),
            "series_number": vol.meta.get("series_number"),
        }
        what = "slices with metal" if args.metal_only else "coronal slices"
        print(f"{case}: {len(ks)} {what} of {n} -> {out}")
    # YAML, not JSON: OUT may become a mask folder whose *.json files are read as labelme annotations
    doc = yaml.safe_dump(manifest, sort_keys=False)
    atomic_write(out / "coronal_slices.yaml", lambda tmp: tmp.write_text(doc))
    if failures:
        print(f"{len(failures)} of {len(loaders)} patient(s) failed: {', '.join(failures)} (reasons above)")
    return 1 if failures else 0
