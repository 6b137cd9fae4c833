"""Writing phantom patients: DICOM series with clutter, truth on the series' grid, previews, cohorts."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from cochseg3d.volume import Volume, atomic_write, canonical, remove_stale_temporaries, write_image

from .generate import PhantomCase, generate_patient

log = logging.getLogger(__name__)

#: AppleDouble header of a macOS ``._`` resource-fork file (what Finder leaves on FAT / network drives)
_APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + b"\x00\x02" + b"\x00" * 40


def patient_seed(seed: int, index: int) -> int:
    """Independent per-patient seed derived from the cohort seed and the patient index."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_series_grid(folder: Path, series_uid: str) -> sitk.Image:
    """The series ``series_uid`` in ``folder`` as SimpleITK's ImageSeriesReader reads it."""
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid)
    if not names:
        raise FileNotFoundError(f"{folder}: series {series_uid} not found")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    return reader.Execute()


def _localizer(image: Volume, n: int) -> Volume:
    """A coarse 1-3 slice scout: ray sums through the volume, like a CBCT localizer radiograph."""
    can = canonical(image)
    proj = can.array.astype(np.float32).mean(axis=0)[::4, ::4]  # coronal projection, 4x coarser
    arr = np.repeat(proj[None], n, axis=0)
    arr = np.clip(arr, -1024, 3000).astype(np.int16)
    sp = (can.spacing_mm[0] * 4, can.spacing_mm[1] * 4, 5.0)
    return Volume(arr, sp, can.origin_mm, can.direction)


def write_patient(case: PhantomCase, out: str | os.PathLike, *, clutter: bool = True, preview: bool = False) -> Path:
    """Write ``out/<case_id>/DICOM/*.dcm`` and ``out/<case_id>/truth/*`` (and ``preview.png``).

    The truth NIfTIs take their geometry from reading the written series back with SimpleITK, so
    they overlay the series exactly. Clutter (``clutter=True``): a 1-3 slice localizer series
    (ImageType LOCALIZER, its own SeriesInstanceUID), a macOS ``._`` file and a README.txt.

    Returns:
        The patient folder.
    """
    from cochseg3d.phantom.dicom_write import write_series

    root = Path(out) / case.case_id
    dicom = root / "DICOM"
    truth = root / "truth"
    remove_stale_temporaries(root, recursive=True)  # a killed run's leftovers beside the patient's files
    orient = case.params.get("orientation", "axial")
    image_type = ["ORIGINAL", "PRIMARY", "AXIAL"] if orient == "axial" else ["DERIVED", "SECONDARY", "REFORMATTED"]
    seed = f"{case.case_id}|{case.params.get('seed')}"
    study_uid = _uid(seed, "study")
    series_uid = _uid(seed, "series")
    frame_uid = _uid(seed, "frame")
    paths = write_series(case.image, dicom, patient_id=case.case_id, study_uid=study_uid, series_uid=series_uid,
                         frame_of_reference_uid=frame_uid, series_number=2,
                         series_description=f"CBCT temporal bone {orient}", uid_seed=seed, image_type=image_type)
    written = list(paths)
    if clutter:
        n = 1 + int(case.params.get("seed", 0)) % 3
        written += write_series(_localizer(case.image, n), dicom, patient_id=case.case_id, study_uid=study_uid,
                              series_uid=_uid(seed, "localizer"), frame_of_reference_uid=frame_uid,
                              series_number=1, series_description="Localizer", uid_seed=seed + "|localizer",
                              image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"])
        first = paths[0].name
        written.append(atomic_write(dicom / f"._{first}",
                                    lambda tmp: Path(tmp).write_bytes(_APPLEDOUBLE + b"\x00" * 4000)))
        written.append(atomic_write(dicom / "README.txt", lambda tmp: Path(tmp).write_text(
            "Exported by a synthetic CBCT scanner (cochseg3d phantom). Not patient data.\n")))
    _clear_previous(dicom, keep=written)
    ref = read_series_grid(dicom, series_uid)
    geo = dict(spacing_mm=ref.GetSpacing(), origin_mm=ref.GetOrigin(),
               direction=np.asarray(ref.GetDirection()).reshape(3, 3))
    write_image(Volume(case.label.array.astype(np.uint8), **geo), truth / "label.nii.gz")
    write_image(Volume(case.metal.array.astype(np.uint8), **geo), truth / "metal.nii.gz")
    _write_json(truth / "contacts.json", case.contacts)
    _write_json(truth / "params.json", case.params)
    if preview:
        save_preview(case, root / "preview.png")
    return root


_OWN = re.compile(r"^(CT\d{4}_[0-9a-f]{6}_\d{5}\.dcm|\._CT\d{4}_[0-9a-f]{6}_\d{5}\.dcm|README\.txt)$")


def _clear_previous(dicom: Path, keep: list[Path]) -> None:
    """Remove files an earlier phantom run wrote here that this one did not rewrite, so a rewrite never
    mixes two series; only once the new series is whole (a kill before leaves each file old or new)."""
    kept = {Path(p).name for p in keep}
    for f in dicom.iterdir():
        if f.is_file() and _OWN.match(f.name) and f.name not in kept:
            f.unlink()


def _uid(seed: str, what: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[seed, what])


def save_preview(case: PhantomCase, path: str | os.PathLike) -> Path:
    """PNG: coronal slice, coronal slab (max over ~4 mm) and axial slice through the electrode, truth outlined.

    Oblique series are shown on their axis-aligned resampling.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = canonical(case.image)
    lab = canonical(case.label, is_label=True).array > 0
    a = img.array.astype(np.float32)
    ks = np.nonzero(lab.any(axis=(1, 2)))[0]
    kc = int(np.median(ks)) if len(ks) else a.shape[0] // 2
    # the slice with most label among those near the electrode's middle
    if len(ks):
        counts = lab.sum(axis=(1, 2))
        kc = int(np.argmax(counts))
    half = max(1, int(round(2.0 / img.spacing_mm[2])))
    k0, k1 = max(0, kc - half), min(a.shape[0], kc + half + 1)
    slab = a[k0:k1].max(axis=0)
    slab_lab = lab[k0:k1].any(axis=0)
    off = float(case.params.get("offset_hu", 0.0))
    vmin, vmax = -1000 + off, 3000 + off
    aspect = img.spacing_mm[1] / img.spacing_mm[0]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), dpi=110)
    axes[0].imshow(a[kc], cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect)
    axes[0].set_title(f"coronal slice k={kc}")
    axes[1].imshow(slab, cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect)
    axes[1].contour(slab_lab, levels=[0.5], colors="r", linewidths=0.6)
    axes[1].set_title(f"coronal slab max k={k0}..{k1 - 1}, label outline")
    # axial view (rows anterior -> posterior, cols right -> left) through the most labelled slice
    ax_img = sitk.GetArrayFromImage(sitk.DICOMOrient(case.image.to_sitk(), "LPS"))
    ax_lab = sitk.GetArrayFromImage(sitk.DICOMOrient(case.label.to_sitk(), "LPS")) > 0
    kz = int(np.argmax(ax_lab.sum(axis=(1, 2)))) if ax_lab.any() else ax_img.shape[0] // 2
    axes[2].imshow(ax_img[kz], cmap="gray", vmin=vmin, vmax=vmax)
    axes[2].contour(ax_lab[kz], levels=[0.5], colors="r", linewidths=0.6)
    axes[2].set_title(f"axial slice {kz} (rows A->P), label outline")
    for ax in axes:
        ax.set_axis_off()
    ears = case.contacts["arrays"].values() if case.contacts.get("bilateral") else [case.contacts]
    what = "; ".join(f"{c['vendor']} {c['model']}, {c['side']} ear, AID {c['insertion_angle_deg']:.0f} deg" for c in ears)
    fig.suptitle(f"{case.case_id}: {what}, {case.params.get('orientation')} (rows S->I, cols R->L)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def generate_cohort(out: str | os.PathLike, *, patients: int, seed: int, preset: str = "small",
                    orientation: str = "axial", clutter: bool = True, preview: bool = False,
                    progress: bool = True, ct_model: str = "fast", bilateral: bool = False,
                    **overrides: Any) -> list[Path]:
    """Generate and write ``patients`` phantoms under ``out`` and an index ``out/cohort.json``.

    Patient ``n`` uses seed :func:`patient_seed` ``(seed, n)`` and case id ``phantom_s<seed>_<n+1>``;
    ``orientation="mixed"`` draws each patient's orientation from its own seed; ``ct_model``: "fast"
    or "rtk" (see :func:`generate_patient`); ``bilateral``: both ears in one axial scan
    (:func:`.bilateral.generate_bilateral`; the index names the right ear's array).

    Returns:
        The patient folders.
    """
    from tqdm import tqdm

    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    if bilateral and orientation != "axial":
        raise ValueError(f"a bilateral phantom is scanned axially, not {orientation}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # a killed run's half-written cohort.json
    index, folders = [], []
    for n in tqdm(range(patients), desc="phantom", unit="patient", disable=not progress):
        case_id = f"phantom_s{int(seed)}_{n + 1:03d}"
        if bilateral:
            from .bilateral import generate_bilateral

            case = generate_bilateral(patient_seed(seed, n), preset=preset, case_id=case_id, ct_model=ct_model,
                                      **overrides)
        else:
            case = generate_patient(patient_seed(seed, n), preset=preset, orientation=orientation, case_id=case_id,
                                    ct_model=ct_model, **overrides)
        first = case.contacts["arrays"]["right"] if bilateral else case.contacts
        folder = write_patient(case, out, clutter=clutter, preview=preview)
        folders.append(folder)
        rel = folder.relative_to(out)
        index.append({"case_id": case.case_id, "dicom": str(rel / "DICOM"),
                      "label": str(rel / "truth" / "label.nii.gz"),
                      "metal": str(rel / "truth" / "metal.nii.gz"), "contacts": str(rel / "truth" / "contacts.json"),
                      "vendor": first["vendor"], "model": first["model"],
                      "orientation": case.params["orientation"], "seed": case.params["seed"],
                      "ct_model": case.params["ct_model"], **({"bilateral": True} if bilateral else {})})
        log.debug("%s: %s", case.case_id, {k: round(v, 3) for k, v in case.timings.items()})
    _write_json(out / "cohort.json", index)
    return folders
