"""``cochseg3d coronal``: a patient's coronal slices as NIfTI slabs or windowed PNGs."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from pathlib import Path

    from cochseg3d.volume import Volume

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
    from pathlib import Path

    import yaml

    from cochseg3d.dicom import check_output_outside_input
    from cochseg3d.utils import check_output_folder, display_path
    from cochseg3d.volume import atomic_write, remove_stale_temporaries

    src, out = Path(args.input), check_output_folder(args.output)
    if not src.exists():
        raise FileNotFoundError(f"{display_path(src)}: no such file or folder")
    check_output_outside_input(src, out)
    loaders = _loaders(src, args.on_gap)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # what a killed run left half-written
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
        name, manifest_entry = _write_case(vol, case, out, args)
        manifest[name] = manifest_entry
    # YAML, not JSON: OUT may become a mask folder whose *.json files are read as labelme annotations
    doc = yaml.safe_dump(manifest, sort_keys=False)
    atomic_write(out / "coronal_slices.yaml", lambda tmp: tmp.write_text(doc))
    if failures:
        print(f"{len(failures)} of {len(loaders)} patient(s) failed: {', '.join(failures)} (reasons above)")
    return 1 if failures else 0


def _loaders(src: "Path", on_gap: str) -> list[tuple[str | None, Callable[[], "Volume"]]]:
    """(case, load) per patient of ``src``: each patient's main series in a folder, or the one file."""
    from collections import defaultdict

    from cochseg3d.dicom import discover, load_input, load_main_series

    if not src.is_dir():
        return [(None, lambda: load_input(src, on_gap=on_gap))]
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
    return [(case, lambda infos=infos: load_main_series(infos, on_gap=on_gap))
            for case, infos in sorted(by_case.items())]


def _write_case(vol: "Volume", case: str | None, out: "Path", args: argparse.Namespace) -> tuple[str, dict]:
    """One patient's coronal slices (all, or those with metal) into ``out``; its name and manifest entry."""
    from tqdm.auto import tqdm

    from cochseg3d.utils import sanitize_case_id
    from cochseg3d.volume import canonical

    case = sanitize_case_id(case or vol.meta.get("case_id", "case"))
    can = canonical(vol)
    n = can.array.shape[0]
    if args.metal_only:
        from cochseg3d.metal import metal_slices

        ks = metal_slices(vol)
    else:
        ks = list(range(n))
    for k in tqdm(ks, desc=case, unit="slice", disable=None, leave=False):
        _write_slice(can, k, case, out, args.png, args.window)
    what = "slices with metal" if args.metal_only else "coronal slices"
    print(f"{case}: {len(ks)} {what} of {n} -> {out}")
    return case, {"slices": [int(k) for k in ks], "of": n,
                  "pixel_spacing_mm_row_col": [float(can.spacing_mm[1]), float(can.spacing_mm[0])],
                  "slice_spacing_mm": float(can.spacing_mm[2]), "metal_only": bool(args.metal_only),
                  "series_number": vol.meta.get("series_number")}


def _write_slice(can: "Volume", k: int, case: str, out: "Path", png: bool, window: tuple[float, float]) -> "Path":
    """Coronal slice ``k`` of the stack ``can``: a windowed 8-bit PNG, or a one-slice NIfTI slab on its grid."""
    import numpy as np

    from cochseg3d.volume import Volume, atomic_write, write_image

    if png:
        from PIL import Image

        lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
        img = np.clip((can.array[k].astype(np.float32) - lo) / (hi - lo) * 255.0, 0, 255)
        return atomic_write(out / f"{case}_{k}.png",
                            lambda tmp: Image.fromarray(np.rint(img).astype(np.uint8)).save(tmp, "PNG"))
    origin = np.asarray(can.origin_mm) + k * can.spacing_mm[2] * can.direction[:, 2]
    slab = Volume(can.array[k : k + 1], can.spacing_mm, tuple(origin), can.direction,
                  {"case_id": case, "coronal_index": k})
    return write_image(slab, out / f"{case}_{k}.nii.gz")
