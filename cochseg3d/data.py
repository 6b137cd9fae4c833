"""Training data: annotated coronal slices (2D) or 2k+1 slice stacks (2.5D) and MONAI transforms.

Sources (``DataConfig.source``):

* ``phantom``: patients generated in memory by :func:`cochseg3d.phantom.generate_patient`;
* ``cohort``: a phantom cohort folder (``cohort.json`` + DICOM + ``truth/label.nii.gz``);
* ``annotations``: an annotation store (``<case>.annotation.json`` + label NIfTI on the source grid);
* ``png``: the notebook workflow's folders of image PNGs and mask PNGs of the same names.

Every volume is read, checked (label on the image's grid), and brought to the canonical coronal
stack (``array[k]`` = coronal slice k, rows superior -> inferior, cols right -> left). A training item
is one coronal slice: ``image`` (2k+1, rows, cols) in HU, ``label`` (1, rows, cols) 0/1, carrying an
affine with the slice's pixel size in mm so MONAI's ``Spacingd`` resamples it physically.

The split is by patient, seeded, and written to the run folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cochseg3d.config import Config, DataConfig
from cochseg3d.utils import read_cohort_json, read_picture, sanitize_case_id
from cochseg3d.volume import Volume, canonical, read_image

log = logging.getLogger(__name__)


@dataclass
class Patient:
    """One patient's training material.

    Attributes:
        case_id: sanitised id (never PatientName).
        source: the file/folder it came from (for messages).
        image: canonical CT (HU); ``None`` for PNG patients.
        label: canonical 0/1 label on ``image``'s grid; ``None`` for PNG patients.
        slices: canonical coronal indices ``k`` that are annotated and used for training.
        fully_labelled: every slice of ``label`` is truth (phantoms), not just ``slices``.
        png_items: for PNG patients, ready slice items.
    """

    case_id: str
    source: str
    image: Volume | None = None
    label: Volume | None = None
    slices: list[int] = field(default_factory=list)
    fully_labelled: bool = False
    png_items: list[dict[str, Any]] = field(default_factory=list)


# --- loading ------------------------------------------------------------------------------------
def _load_image_input(path: Path) -> Volume:
    """A DICOM folder or an image file as a Volume (cochseg3d.dicom when available)."""
    try:
        from cochseg3d.dicom import load_input
    except ImportError:  # the DICOM module is optional for plain image files
        if path.is_dir():
            raise
        return read_image(path)
    return load_input(path)


def check_same_grid(image: Volume, label: Volume, *, image_path: Any, label_path: Any) -> None:
    """Raise ValueError naming ``label_path`` if the label is not on the image's grid."""
    if not label.grid.allclose(image.grid, atol_mm=1e-2):
        g, h = label.grid, image.grid
        raise ValueError(
            f"{label_path}: label is on another grid than its image {image_path} "
            f"(label size {g.size}, spacing {tuple(round(s, 4) for s in g.spacing_mm)} mm, origin "
            f"{tuple(round(o, 2) for o in g.origin_mm)}; image size {h.size}, spacing "
            f"{tuple(round(s, 4) for s in h.spacing_mm)} mm, origin {tuple(round(o, 2) for o in h.origin_mm)})"
        )


def _select_slices(label_can: np.ndarray, *, negative_fraction: float, seed: int) -> list[int]:
    """Electrode slices plus a seeded draw of background-only slices (fully labelled volumes)."""
    has = label_can.reshape(label_can.shape[0], -1).any(axis=1)
    pos = np.flatnonzero(has)
    neg = np.flatnonzero(~has)
    n_neg = min(len(neg), int(round(negative_fraction * len(pos))))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(neg, size=n_neg, replace=False) if n_neg else np.array([], dtype=int)
    return sorted(int(k) for k in np.concatenate([pos, chosen]))


def _canonical_pair(image: Volume, label: Volume) -> tuple[Volume, Volume]:
    can = canonical(image)
    lab = canonical(label, is_label=True)
    lab.array = (lab.array > 0).astype(np.uint8)
    return can, lab


def load_phantom_patients(cfg: DataConfig, *, progress: bool = False) -> list[Patient]:
    """``cfg.phantom_patients`` phantom patients generated in memory (seeds from ``phantom_seed``)."""
    from cochseg3d.phantom import generate_patient

    seeds = range(cfg.phantom_seed, cfg.phantom_seed + cfg.phantom_patients)
    if progress:
        from tqdm.auto import tqdm

        seeds = tqdm(seeds, desc="phantoms", unit="patient", leave=False)
    out = []
    for seed in seeds:
        case = generate_patient(seed, preset=cfg.phantom_preset, **cfg.phantom_overrides)
        image, label = _canonical_pair(case.image, case.label)
        out.append(Patient(sanitize_case_id(case.case_id), f"phantom seed {seed}", image, label,
                           _select_slices(label.array, negative_fraction=cfg.negative_fraction, seed=seed),
                           fully_labelled=True))
    return out


def load_cohort(cfg: DataConfig, *, progress: bool = False) -> list[Patient]:
    """Patients of a phantom cohort folder (``cohort.json``: DICOM folder + truth label per case)."""
    root = Path(cfg.path or "")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: cohort folder does not exist (data.path)")
    index = root / "cohort.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: no cohort.json in the cohort folder (write one with `cochseg3d phantom`)")
    entries = read_cohort_json(index, required=("dicom", "label"), paths=("dicom", "label"))
    if not entries:
        raise ValueError(f"{index}: the cohort lists no cases")
    if progress:
        from tqdm.auto import tqdm

        entries = tqdm(entries, desc="load cohort", unit="patient", leave=False)
    out = []
    for n, e in enumerate(entries):
        img_path, lab_path = e["dicom"], e["label"]
        for p in (img_path, lab_path):
            if not p.exists():
                raise FileNotFoundError(f"{p}: listed in {index} but missing")
        image, label = _load_image_input(img_path), read_image(lab_path)
        check_same_grid(image, label, image_path=img_path, label_path=lab_path)
        image, label = _canonical_pair(image, label)
        out.append(Patient(sanitize_case_id(e.get("case_id") or img_path.parent.name), str(img_path), image, label,
                           _select_slices(label.array, negative_fraction=cfg.negative_fraction, seed=n),
                           fully_labelled=True))
    return out


def load_annotation_store(cfg: DataConfig, *, progress: bool = False) -> list[Patient]:
    """Patients of an annotation store: the annotated coronal slices of each labelled image."""
    from cochseg3d.annotation import find_annotations, load_annotation

    root = Path(cfg.path or "")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: annotation folder does not exist (data.path)")
    records = list(find_annotations(root))
    if not records:
        raise ValueError(f"{root}: no annotations found (expected <case>.annotation.json + label NIfTI)")
    if progress:
        from tqdm.auto import tqdm

        records = tqdm(records, desc="load annotations", unit="patient", leave=False)
    out = []
    for rec in records:
        ann = load_annotation(rec)
        image = _load_image_input(Path(ann.image_path))
        check_same_grid(image, ann.label, image_path=ann.image_path, label_path=rec)
        image = canonical(image)
        # the store's own canonical stack: exact for oblique series (no second resampling)
        lab = (ann.canonical_label() > 0).astype(np.uint8)
        if lab.shape != image.array.shape:
            raise ValueError(f"{rec}: canonical label {lab.shape} does not match its image {ann.image_path} "
                             f"{image.array.shape}")
        label = image.with_array(lab)
        slices = sorted({int(k) for k in ann.annotated_slices})
        if not slices:
            log.warning("%s: no annotated slices; skipped", rec)
            continue
        bad = [k for k in slices if not 0 <= k < image.array.shape[0]]
        if bad:
            raise ValueError(f"{rec}: annotated slices {bad} outside the {image.array.shape[0]} coronal slices")
        case_id = sanitize_case_id(ann.case_id or Path(rec).name.split(".")[0])
        out.append(Patient(case_id, str(rec), image, label, slices, fully_labelled=False))
    if not out:
        raise ValueError(f"{root}: the annotation set is empty (no record lists an annotated slice)")
    return out


def _png_case(stem: str) -> tuple[str, int | None]:
    case, _, idx = stem.rpartition("_")
    if case and idx.isdigit():
        return case, int(idx)
    return stem, None


def load_png_folder(cfg: DataConfig) -> list[Patient]:
    """The notebook workflow's PNG pairs: ``images/<case>_<slice>.png`` + ``masks/<same name>``.

    Masks are 0/255 (> 127 is electrode, as cochseg3d.annotation reads them). The pixel size comes from ``cfg.png_pixel_spacing_mm`` (PNGs carry none).
    """
    root = Path(cfg.path or "")
    img_dir, mask_dir = root / cfg.png_images, root / cfg.png_masks
    for d in (root, img_dir, mask_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: PNG folder does not exist (data.path / png_images / png_masks)")
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise ValueError(f"{img_dir}: no PNG images")
    spacing = float(cfg.png_pixel_spacing_mm or 1.0)
    by_case: dict[str, Patient] = {}
    for n, f in enumerate(files):
        m = mask_dir / f.name
        if not m.exists():
            raise FileNotFoundError(f"{m}: mask missing for image {f}")
        # a corrupt / truncated PNG or a pipe is named with its reason, not a PIL traceback
        img = np.asarray(read_picture(f).convert("L"), dtype=np.float32)
        mask = np.asarray(read_picture(m).convert("L")) > 127
        if mask.shape != img.shape:
            raise ValueError(f"{m}: mask is {mask.shape[1]}x{mask.shape[0]} pixels but image {f} is "
                             f"{img.shape[1]}x{img.shape[0]}")
        case, idx = _png_case(f.stem)
        case = sanitize_case_id(case)
        pat = by_case.setdefault(case, Patient(case, str(img_dir)))
        k = idx if idx is not None else n
        pat.slices.append(k)
        pat.png_items.append(_item(img[None], mask[None], (spacing, spacing), case, k))
    return list(by_case.values())


def load_patients(cfg: DataConfig, *, progress: bool = False) -> list[Patient]:
    """Every patient of the configured source, checked; raises naming the file on bad input."""
    loaders: dict[str, Callable[..., list[Patient]]] = {
        "phantom": lambda: load_phantom_patients(cfg, progress=progress),
        "cohort": lambda: load_cohort(cfg, progress=progress),
        "annotations": lambda: load_annotation_store(cfg, progress=progress),
        "png": lambda: load_png_folder(cfg),
    }
    patients = loaders[cfg.source]()
    ids = [p.case_id for p in patients]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"{cfg.path or cfg.source}: duplicate case ids {dup}")
    if not any(p.slices for p in patients):
        raise ValueError(f"{cfg.path or cfg.source}: no annotated slices to train on")
    return patients


# --- split --------------------------------------------------------------------------------------
def split_patients(case_ids: Sequence[str], *, proportions: Sequence[float], seed: int) -> dict[str, list[str]]:
    """Seeded patient split into train/val/test by ``proportions`` (each non-empty part gets >= 1).

    Raises:
        ValueError: too few patients for the non-zero parts.
    """
    ids = sorted(case_ids)
    tr, va, te = (float(p) for p in proportions)
    total = tr + va + te
    n = len(ids)
    need = 1 + (va > 0) + (te > 0)
    if n < need:
        raise ValueError(f"{n} patient(s) cannot be split into train/val/test {list(proportions)} "
                         f"(need at least {need}; set data.split)")
    n_val = max(1, int(round(n * va / total))) if va > 0 else 0
    n_test = max(1, int(round(n * te / total))) if te > 0 else 0
    while n - n_val - n_test < 1:
        if n_test >= n_val and n_test > 1:
            n_test -= 1
        else:
            n_val -= 1
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    return {"val": sorted(shuffled[:n_val]), "test": sorted(shuffled[n_val:n_val + n_test]),
            "train": sorted(shuffled[n_val + n_test:])}


def write_split(split: dict[str, list[str]], path: str | os.PathLike) -> Path:
    from cochseg3d.volume import atomic_write

    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(split, indent=2) + "\n"))


# --- items --------------------------------------------------------------------------------------
def _item(image: np.ndarray, label: np.ndarray, spacing_rc_mm: tuple[float, float], case_id: str, k: int
          ) -> dict[str, Any]:
    """A slice item: MetaTensors with an affine holding the pixel size (rows, cols) in mm."""
    from monai.data import MetaTensor

    affine = np.diag([float(spacing_rc_mm[0]), float(spacing_rc_mm[1]), 1.0, 1.0])
    return {
        "image": MetaTensor(np.ascontiguousarray(image, dtype=np.float32), affine=affine),
        "label": MetaTensor(np.ascontiguousarray(label, dtype=np.float32), affine=affine),
        "case_id": case_id,
        "slice": int(k),
    }


def stack_indices(k: int, n: int, context: int) -> np.ndarray:
    """Slice indices ``k-context .. k+context`` clamped to ``[0, n)`` (edge slices repeat)."""
    return np.clip(np.arange(k - context, k + context + 1), 0, n - 1)


def slice_items(patient: Patient, *, context: int) -> list[dict[str, Any]]:
    """Training items of ``patient``'s selected slices: image (2k+1, rows, cols) HU, label (1, rows, cols)."""
    if patient.png_items:
        return list(patient.png_items)
    assert patient.image is not None and patient.label is not None
    vol, lab = patient.image.array, patient.label.array
    # canonical spacing is (i=cols, j=rows, k=slices)
    spacing_rc = (patient.image.spacing_mm[1], patient.image.spacing_mm[0])
    n = vol.shape[0]
    return [_item(vol[stack_indices(k, n, context)], lab[k][None], spacing_rc, patient.case_id, k)
            for k in patient.slices]


# --- transforms ---------------------------------------------------------------------------------
class HeadMask:
    """Foreground selector for ``CropForegroundd``: pixels above a threshold (Otsu if none).

    Works on the windowed image in [0, 1]; picklable so DataLoader workers can use it.
    """

    def __init__(self, threshold: float | None) -> None:
        self.threshold = threshold

    def __call__(self, x: Any) -> Any:
        if self.threshold is not None:
            return x > self.threshold
        from skimage.filters import threshold_otsu

        arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
        if arr.max() <= arr.min():
            return x > -1  # flat slice: keep it whole
        return x > float(threshold_otsu(arr))


def intensity_window(config: Config) -> tuple[float, float]:
    """The grey-value range mapped to [0, 1]: the HU window, or ``png_window`` for PNG data."""
    if config.data.source == "png":
        return tuple(config.data.png_window)  # type: ignore[return-value]
    return tuple(config.preprocessing.window_hu)  # type: ignore[return-value]


def stride_product(config: Config) -> int:
    return int(math.prod(int(s) for s in config.model.strides))


def build_transforms(config: Config, *, train: bool):
    """The MONAI dictionary transform chain for training (random patches, augmentation) or validation.

    Deterministic part (cached by CacheDataset): HU window -> [0, 1] (the same mapping as
    ``Preprocessing.normalize``), in-plane resampling to ``preprocessing.spacing_mm`` (labels nearest),
    crop to the head, pad to ``roi_size``. Training then draws ``samples_per_slice`` patches of
    ``roi_size`` (electrode-centred with probability pos/(pos+neg)) and augments them; validation pads
    to a multiple of the network's stride.
    """
    from monai import transforms as T

    d, p, a = config.data, config.preprocessing, config.data.augment
    keys = ["image", "label"]
    lo, hi = intensity_window(config)
    chain: list[Any] = [T.ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)]
    crop = []
    if d.foreground_crop:
        thr = None if d.crop_threshold_hu is None else (float(d.crop_threshold_hu) - lo) / (hi - lo)
        crop = [T.CropForegroundd(keys, source_key="image", select_fn=HeadMask(thr), margin=int(d.crop_margin_px),
                                  allow_smaller=True)]
    if d.resize_to is not None:
        # the notebook workflow: crop, then resize whatever came out to a fixed size (distorting)
        chain += crop + [T.Resized(keys, spatial_size=tuple(d.resize_to), mode=("bilinear", "nearest"))]
    else:
        chain += [T.Spacingd(keys, pixdim=(p.spacing_mm, p.spacing_mm), mode=("bilinear", "nearest"),
                             dtype=np.float32)] + crop
    chain.append(T.SpatialPadd(keys, spatial_size=tuple(p.roi_size)))
    # plain tensors from here: the pixel size has done its job, and metadata tracking costs time per patch
    chain.append(T.EnsureTyped(keys, dtype=np.float32, track_meta=False))
    if train:
        # electrode / background pixel indices once, in the cached part: patch sampling is then cheap
        chain.append(T.FgBgToIndicesd("label", fg_postfix="_fg", bg_postfix="_bg"))
        pos, neg = d.pos_neg_ratio
        chain.append(T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=tuple(p.roi_size), pos=pos,
                                              neg=neg, num_samples=int(d.samples_per_slice),
                                              fg_indices_key="label_fg", bg_indices_key="label_bg"))
        chain.append(T.DeleteItemsd(["label_fg", "label_bg"]))
        if a.enabled:
            lo_zoom, hi_zoom = a.zoom_range
            chain += [
                T.RandAffined(keys, prob=a.affine_prob, rotate_range=math.radians(a.rotate_deg),
                              scale_range=((lo_zoom - 1.0, hi_zoom - 1.0),) * 2, shear_range=(a.shear, a.shear),
                              mode=("bilinear", "nearest"), padding_mode="zeros",
                              spatial_size=tuple(p.roi_size), cache_grid=True),
                T.RandFlipd(keys, spatial_axis=1, prob=a.flip_lr_prob),
                T.RandScaleIntensityd("image", factors=a.intensity_scale, prob=a.intensity_scale_prob),
                T.RandShiftIntensityd("image", offsets=a.intensity_shift, prob=a.intensity_shift_prob),
                T.RandGaussianNoised("image", std=a.noise_std, prob=a.noise_prob),
                T.RandGaussianSmoothd("image", sigma_x=tuple(a.blur_sigma), sigma_y=tuple(a.blur_sigma),
                                      prob=a.blur_prob),
            ]
    else:
        chain.append(T.DivisiblePadd(keys, k=stride_product(config)))
    return T.Compose(chain)


def make_dataset(items: list[dict[str, Any]], config: Config, *, train: bool, progress: bool = False):
    """A MONAI CacheDataset over ``items`` with :func:`build_transforms`."""
    from monai.data import CacheDataset

    return CacheDataset(items, transform=build_transforms(config, train=train), cache_rate=config.data.cache_rate,
                        num_workers=0, progress=progress, copy_cache=True)


@dataclass
class Datasets:
    """Everything training needs from the data side."""

    patients: dict[str, Patient]
    split: dict[str, list[str]]
    train_items: list[dict[str, Any]]
    val_items: list[dict[str, Any]]
    test_items: list[dict[str, Any]]


def prepare(config: Config, *, split: dict[str, list[str]] | None = None, progress: bool = False) -> Datasets:
    """Load and check every patient, split by patient (or reuse ``split``), and build slice items.

    Raises:
        FileNotFoundError / ValueError: bad input, naming the file, before any training starts.
    """
    d = config.data
    patients = {p.case_id: p for p in load_patients(d, progress=progress)}
    for p in patients.values():  # the HU the network sees, as inference measures them
        if p.image is not None:
            p.image = config.preprocessing.hu(p.image)
    if split is None:
        if d.split_by == "slice":
            split = {"train": sorted(patients), "val": [], "test": []}
        else:
            split = split_patients(list(patients), proportions=d.split, seed=d.split_seed)
    missing = sorted(set(sum(split.values(), [])) - set(patients))
    if missing:
        raise ValueError(f"the saved split names patients that the data lacks: {missing}")
    ctx = config.preprocessing.context
    parts = {name: [it for cid in ids for it in slice_items(patients[cid], context=ctx)] for name, ids in split.items()}
    if d.split_by == "slice":
        # the notebook workflow's per-image split, kept only to reproduce its (leaky) baseline
        log.warning("data.split_by=slice: slices of one patient land in train and test; baseline use only")
        items = parts["train"]
        order = np.random.default_rng(d.split_seed).permutation(len(items))
        n = len(items)
        n_val = max(1, int(round(n * d.split[1] / sum(d.split))))
        n_test = max(1, int(round(n * d.split[2] / sum(d.split))))
        parts = {"val": [items[i] for i in order[:n_val]], "test": [items[i] for i in order[n_val:n_val + n_test]],
                 "train": [items[i] for i in order[n_val + n_test:]]}
    if not parts["train"]:
        raise ValueError(f"{d.path or d.source}: no training slices after the split")
    log.info("patients: %d train, %d val, %d test; slices: %d / %d / %d", len(split["train"]), len(split["val"]),
             len(split["test"]), len(parts["train"]), len(parts["val"]), len(parts["test"]))
    return Datasets(patients, split, parts["train"], parts["val"], parts["test"])
