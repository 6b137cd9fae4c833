"""Tiny inputs the bad-input corpus breaks: a 16x16x4 DICOM series, NIfTI files, PNG folders, cohorts.

Every DICOM file carries the marker :data:`SECRET` in PatientName and its patient folder is named
after it, so an output that leaks a name or an input path is found by a plain search.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRBigEndian, RLELossless, generate_uid

from cochseg3d.phantom.dicom_write import write_series
from cochseg3d.volume import Volume

#: in PatientName and the patient folder's name; must never reach an output file
SECRET = "SECRET7Q"
PATIENT_NAME = f"Doe^Jane^{SECRET}"
PATIENT_DIR = f"Doe_Jane_{SECRET}"
SHAPE = (4, 16, 16)  # k, j, i
SPACING = (0.4, 0.4, 0.4)


def volume(seed: int = 0, shape=SHAPE) -> Volume:
    """Soft tissue with a bright wire through the middle (something `prefill` can find)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(-50, 80, shape).astype(np.int16)
    arr[:, shape[1] // 2, 3:-3] = 3000
    return Volume(arr, SPACING, (-3.0, -3.0, 0.0), np.eye(3))


def series(folder: Path, seed: int = 0, *, n: int | None = None, patient_id: str = "PAT01", **kw) -> list[Path]:
    """A good CT series (``n`` slices, default 4) of patient ``patient_id`` in ``folder``."""
    shape = (n or SHAPE[0],) + SHAPE[1:]
    kw.setdefault("extra", {})["PatientName"] = PATIENT_NAME
    return write_series(volume(seed, shape), folder, patient_id=patient_id, uid_seed=f"bad{seed}", **kw)


def patient(root: Path, seed: int = 0, **kw) -> tuple[Path, list[Path]]:
    """``root/in/<PATIENT_DIR>`` holding a good series; returns (patient folder, files)."""
    folder = root / "in" / PATIENT_DIR
    return folder, series(folder, seed, **kw)


def edit(path: Path, dest: Path | None = None, *, new_series: bool = False, **values) -> Path:
    """Rewrite one DICOM file with header ``values`` changed (optionally as another series)."""
    ds = pydicom.dcmread(path)
    if new_series:
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(path), "other"])
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(dest or path)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber = 77
    for key, value in values.items():
        setattr(ds, key, value)
    dest = dest or path
    ds.save_as(dest)
    return dest


def extra_file(folder: Path, files: list[Path], name: str = "extra.dcm", **values) -> Path:
    """A copy of the first slice as a separate one-file series with ``values`` changed."""
    return edit(files[0], folder / name, new_series=True, **values)


def rle(files: list[Path]) -> None:
    """Recompress a series in place as RLE Lossless."""
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(RLELossless)
        ds.save_as(f)


def rle_bomb(folder: Path, files: list[Path], *, n: int = 6, side: int = 60000) -> list[Path]:
    """``n`` RLE files of another series whose header claims side x side pixels (a few bytes each)."""
    out = []
    uid = generate_uid(entropy_srcs=["bomb"])
    for k in range(n):
        ds = pydicom.dcmread(files[k % len(files)])
        ds.compress(RLELossless)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["bomb", str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [0, 0, 0.5 * k]
        ds.Rows = ds.Columns = side
        p = folder / f"bomb_{k}.dcm"
        ds.save_as(p)
        out.append(p)
    return out


def corrupt_fragment(path: Path) -> None:
    """Keep an RLE file's header, replace its compressed data by a broken fragment."""
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\x02\x00\x00\x00" + b"\x40" * 60 + b"\x7f\x01" * 8])
    ds.save_as(path)


def big_endian(files: list[Path]) -> None:
    """Rewrite a series in place as Explicit VR Big Endian (pixel bytes swapped too)."""
    for f in files:
        ds = pydicom.dcmread(f)
        arr = ds.pixel_array
        for _ in ds:  # decode every raw element so it is re-encoded in the new byte order
            pass
        ds.PixelData = arr.astype(">i2" if ds.PixelRepresentation else ">u2").tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        ds.preamble = b"\0" * 128
        pydicom.dcmwrite(f, ds, implicit_vr=False, little_endian=False, force_encoding=True)


def no_preamble(files: list[Path], *, keep_meta: bool) -> None:
    """Rewrite a series without the 128-byte preamble (and, unless ``keep_meta``, without file meta)."""
    for f in files:
        ds = pydicom.dcmread(f)
        ds.preamble = None
        if not keep_meta:
            del ds.file_meta
        pydicom.dcmwrite(f, ds, implicit_vr=not keep_meta, little_endian=True, enforce_file_format=False)


def truncate(path: Path, keep: float | int) -> None:
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:n])


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


# --- NIfTI -------------------------------------------------------------------------------------------
def nifti(path: Path, arr: np.ndarray | None = None, spacing=SPACING) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(volume().array if arr is None else arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def flip_byte(path: Path, at: float) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# --- PNG / labelme training folders ----------------------------------------------------------------
def png_folder(root: Path, n: int = 2) -> Path:
    """``root/images/p<k>_0.png`` + ``root/masks/<same>``: ``n`` patients of one slice (the notebook layout)."""
    from PIL import Image

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k in range(n):
        img = np.full((32, 32), 60, np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        img[10:20, 12:14] = 250
        mask[10:20, 12:14] = 255
        Image.fromarray(img).save(root / "images" / f"p{k}_0.png")
        Image.fromarray(mask).save(root / "masks" / f"p{k}_0.png")
    return root


def png_config(path: Path, data: Path, **train) -> Path:
    """A train config on a PNG folder, small enough to fail (or finish) fast."""
    import yaml

    cfg = {"data": {"source": "png", "path": str(data), "png_pixel_spacing_mm": 0.3, "split": [0.5, 0.5, 0.0],
                    "cache_rate": 0.0, "foreground_crop": False},
           "preprocessing": {"roi_size": [32, 32]},
           "model": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
           "train": {"epochs": 1, "batch_size": 2, "device": "cpu", "val_patient_every": 0, **train}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


# --- evaluate: a phantom truth cohort and predictions -------------------------------------------------
def truth_cohort(root: Path, cases=("c1",), *, contacts: bool = True) -> tuple[Path, Path]:
    """(truth folder with cohort.json, prediction folder) of tiny label volumes."""
    truth, pred = root / "in" / "truth", root / "in" / "pred"
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[2:6, 4, 4] = 1
    entries = []
    for c in cases:
        nifti(truth / c / "truth" / "label.nii.gz", lab)
        nifti(pred / f"{c}.nii.gz", lab)
        e = {"case_id": c, "label": f"{c}/truth/label.nii.gz", "dicom": f"{c}/dicom"}
        if contacts:
            (truth / c / "truth" / "contacts.json").write_text(json.dumps(
                {"vendor": "v", "model": "m", "contacts_lps_mm": [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]}))
            e["contacts"] = f"{c}/truth/contacts.json"
        entries.append(e)
    (truth / "cohort.json").write_text(json.dumps(entries))
    return truth, pred
