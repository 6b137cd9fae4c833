"""Electrode annotation without a GUI: threshold pre-fill, the label store, PNG / labelme I/O.

Everything here works on the canonical coronal stack (see :mod:`cochseg3d.volume`):
``label[k, row, col]`` with ``k`` anterior -> posterior, rows superior -> inferior and columns patient
right -> left. Only the store converts: the label is written on the image's SOURCE grid, so it
overlays the original series in any viewer.

Store layout (one case)::

    <store>/<case_id>.label.nii.gz        uint8 0/1 on the image's source grid
    <store>/<case_id>.annotation.json     record: image, series_uid, annotated_slices (canonical k), ...
    <store>/backups/<case_id>.<stamp>.*   the previous files, kept before every overwrite

The napari plugin (``napari_plugin/``) is a thin Qt layer over :class:`AnnotationSession`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from cochseg3d.metal import auto_threshold_hu, remove_small_components
from cochseg3d.utils import sanitize_case_id
from cochseg3d.volume import (
    CANONICAL_DIRECTION,
    Grid,
    Volume,
    atomic_write,
    canonical,
    from_canonical,
    read_image,
    write_image,
)

log = logging.getLogger(__name__)

RECORD_FORMAT = "cochseg3d.annotation"
RECORD_VERSION = 1
LABEL_SUFFIX = ".label.nii.gz"
CANONICAL_LABEL_SUFFIX = ".canonical-label.nii.gz"
RECORD_SUFFIX = ".annotation.json"
BACKUP_DIR = "backups"
ELECTRODE_LABELS = ("electrode",)

#: a slice range ``(first, last)``, both inclusive, in canonical coronal indices
SliceRange = tuple[int, int]
#: an in-plane box ``(row0, row1, col0, col1)``, half-open, in coronal-slice pixels
Box = tuple[int, int, int, int]


def as_canonical(image: Volume) -> Volume:
    """``canonical(image)``, or ``image`` itself (no copy) when it already is a canonical stack
    that remembers its source grid (``meta["source_grid"]``)."""
    if "source_grid" in image.meta and np.allclose(image.direction, CANONICAL_DIRECTION, atol=1e-6):
        return image
    return canonical(image)


# --- pre-fill ---------------------------------------------------------------------------------
def scope_range(shape: Sequence[int], slices: int | SliceRange | None) -> SliceRange:
    """``(first, last)`` inclusive coronal indices of a pre-fill scope, clipped to the volume.

    Args:
        shape: canonical array shape ``(K, rows, cols)``.
        slices: ``None`` for the whole volume, ``k`` for one slice, ``(first, last)`` for a range.
    """
    n = int(shape[0])
    if slices is None:
        return 0, n - 1
    if isinstance(slices, (int, np.integer)):
        first = last = int(slices)
    else:
        first, last = (int(s) for s in slices)
        first, last = min(first, last), max(first, last)
    if last < 0 or first >= n:
        raise ValueError(f"slice range {first}..{last} lies outside the volume's 0..{n - 1} coronal slices")
    return max(first, 0), min(last, n - 1)


def roi_mask(roi: Box | np.ndarray | None, plane: tuple[int, int]) -> np.ndarray | None:
    """The in-plane bool mask of a box ``(row0, row1, col0, col1)`` or bool mask; ``None`` for no ROI."""
    if roi is None:
        return None
    if isinstance(roi, np.ndarray) and roi.dtype == bool:
        if roi.shape[-2:] != plane:
            raise ValueError(f"ROI mask shape {roi.shape} does not match the coronal slice {plane}")
        return roi
    r0, r1, c0, c1 = (int(v) for v in roi)
    m = np.zeros(plane, bool)
    m[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)] = True
    if not m.any():
        raise ValueError(f"ROI {tuple(roi)} does not overlap the coronal slice of {plane[0]}x{plane[1]} pixels")
    return m


def prefill_region(
    array: np.ndarray,
    *,
    threshold_hu: float,
    slices: int | SliceRange | None = None,
    roi: Box | np.ndarray | None = None,
    min_size_voxels: int = 1,
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Threshold pre-fill of one scope of a canonical coronal stack.

    Args:
        array: canonical image ``[k, row, col]`` in HU.
        threshold_hu: voxels ``>=`` this become electrode.
        slices: scope; ``None`` whole volume, ``k`` one slice, ``(first, last)`` inclusive range.
        roi: optional in-plane region of interest (box ``(row0, row1, col0, col1)`` or a bool mask
            of the slice shape, or of the scope's shape); nothing outside it is painted.
        min_size_voxels: connected components (26-connected within the scope; 8-connected on a
            single slice) smaller than this are dropped.

    Returns:
        ``(region, block)``: the index slices of the scope and the uint8 0/1 mask inside it.
    """
    first, last = scope_range(array.shape, slices)
    region = (slice(first, last + 1), slice(None), slice(None))
    block = np.asarray(array[region]) >= float(threshold_hu)
    roi_m = roi_mask(roi, tuple(array.shape[1:]))
    if roi_m is not None:
        block &= roi_m if roi_m.ndim == 2 else roi_m[region] if roi_m.shape == array.shape else roi_m
    if min_size_voxels > 1 and block.any():
        # label only the bounding box of the candidates: metal is sparse, the volume is not
        nz = [np.flatnonzero(block.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        box = tuple(slice(int(n[0]), int(n[-1]) + 1) for n in nz)
        block[box] = remove_small_components(block[box], min_size_voxels=min_size_voxels)
    return region, block.astype(np.uint8)


def prefill_canonical(
    array: np.ndarray,
    *,
    threshold_hu: float | str | None = "auto",
    slices: int | SliceRange | None = None,
    roi: Box | np.ndarray | None = None,
    min_size_voxels: int = 4,
) -> np.ndarray:
    """Full-size uint8 0/1 pre-fill of a canonical coronal stack (zeros outside the scope).

    Args:
        array: canonical image ``[k, row, col]`` in HU.
        threshold_hu: a number (HU), or ``"auto"`` / ``None`` for :func:`cochseg3d.metal.auto_threshold_hu`
            of the whole image (not just the scope, whose histogram may show no bone or no metal).
        slices, roi, min_size_voxels: see :func:`prefill_region`.
    """
    thr = resolve_threshold(array, threshold_hu)
    out = np.zeros(array.shape, np.uint8)
    region, block = prefill_region(array, threshold_hu=thr, slices=slices, roi=roi, min_size_voxels=min_size_voxels)
    out[region] = block
    return out


def resolve_threshold(image: Volume | np.ndarray, threshold_hu: float | str | None) -> float:
    """A number from ``threshold_hu`` (HU), computing the automatic one for ``"auto"`` / ``None``."""
    if threshold_hu is None or (isinstance(threshold_hu, str) and threshold_hu.strip().lower() == "auto"):
        return float(auto_threshold_hu(image))
    try:
        return float(threshold_hu)
    except ValueError as exc:
        raise ValueError(f"threshold {threshold_hu!r} is neither a number (HU) nor 'auto'") from exc


def prefill(
    image: Volume,
    *,
    threshold_hu: float | str | None = "auto",
    slices: int | SliceRange | None = None,
    roi: Box | np.ndarray | None = None,
    min_size_voxels: int = 4,
) -> Volume:
    """Threshold pre-fill of ``image``; the label comes back on the image's own (source) grid.

    Args:
        image: CT/CBCT volume in HU on any grid.
        threshold_hu: HU number or ``"auto"``.
        slices: scope in canonical coronal indices (``None`` = whole volume).
        roi: in-plane region of interest on the coronal slice (see :func:`prefill_region`).
        min_size_voxels: smallest connected component kept.

    Returns:
        uint8 0/1 label Volume with ``image``'s size, spacing, origin and direction;
        ``meta["threshold_hu"]`` holds the threshold used.
    """
    if slices is None and roi is None and "source_grid" not in image.meta:
        # the whole volume: threshold the source grid itself (no resampling of oblique series)
        thr = resolve_threshold(image, threshold_hu)
        _, block = prefill_region(image.array, threshold_hu=thr, min_size_voxels=min_size_voxels)
        out = image.with_array(block)
    else:
        can = as_canonical(image)
        thr = resolve_threshold(can, threshold_hu)
        lab = prefill_canonical(can.array, threshold_hu=thr, slices=slices, roi=roi, min_size_voxels=min_size_voxels)
        out = from_canonical(can.with_array(lab), Grid.from_dict(can.meta["source_grid"]), is_label=True)
        out.array = out.array.astype(np.uint8)
    out.meta = {k: v for k, v in image.meta.items() if k != "source_grid"}
    out.meta["threshold_hu"] = thr
    return out


# --- store -------------------------------------------------------------------------------------
@dataclass
class Annotation:
    """One case's annotation as stored.

    Attributes:
        image_path: the image it belongs to (DICOM folder or image file).
        label: uint8 0/1 label on the image's SOURCE grid.
        annotated_slices: canonical coronal indices ``k`` that were reviewed (only these are training data).
        record: the JSON record as read.
        json_path: where the record lives.
    """

    image_path: Path
    label: Volume
    annotated_slices: list[int]
    record: dict[str, Any] = field(default_factory=dict)
    json_path: Path | None = None

    @property
    def case_id(self) -> str:
        return str(self.record.get("case_id", ""))

    @property
    def threshold_hu(self) -> float | None:
        t = self.record.get("threshold_hu")
        return None if t is None else float(t)

    def canonical_label(self) -> np.ndarray:
        """The label as a canonical coronal stack ``[k, row, col]`` (uint8).

        For an oblique source the stack saved alongside is used, so reopening gives back exactly
        what was painted (going through the oblique grid would resample it twice).
        """
        name = self.record.get("label_canonical")
        if name and self.json_path is not None and (self.json_path.parent / name).is_file():
            return read_image(self.json_path.parent / name).array.astype(np.uint8)
        return canonical(self.label, is_label=True).array.astype(np.uint8)


def record_paths(store: str | os.PathLike, case_id: str) -> tuple[Path, Path]:
    """``(label_path, json_path)`` of ``case_id`` in ``store`` (the id is sanitised)."""
    cid = sanitize_case_id(case_id)
    store = Path(store)
    return store / f"{cid}{LABEL_SUFFIX}", store / f"{cid}{RECORD_SUFFIX}"


def case_id_for(image: Volume | None = None, path: str | os.PathLike | None = None) -> str:
    """The sanitised case id of an image: ``meta["case_id"]`` if present, else its file/folder name."""
    if image is not None and image.meta.get("case_id"):
        return sanitize_case_id(str(image.meta["case_id"]))
    if path is not None:
        name = Path(path).name
        for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        if name.upper() == "DICOM" and Path(path).parent.name:
            name = Path(path).parent.name
        return sanitize_case_id(name)
    return "case"


def _backup(paths: Iterable[Path], store: Path, case_id: str, *, keep: int) -> list[Path]:
    existing = [p for p in paths if p.exists()]
    if not existing:
        return []
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    bdir = store / BACKUP_DIR
    bdir.mkdir(parents=True, exist_ok=True)
    out = []
    for p in existing:
        dst = bdir / f"{case_id}.{stamp}{p.name[len(case_id):]}"
        shutil.copy2(p, dst)
        out.append(dst)
    # keep the newest `keep` generations per case
    for suffix in (LABEL_SUFFIX, RECORD_SUFFIX, CANONICAL_LABEL_SUFFIX):
        gens = sorted(bdir.glob(f"{case_id}.*{suffix}"))
        for old in gens[: max(0, len(gens) - keep)]:
            old.unlink(missing_ok=True)
    return out


def save_annotation(
    label: Volume | np.ndarray,
    *,
    image: Volume,
    store: str | os.PathLike,
    annotated_slices: Iterable[int],
    case_id: str | None = None,
    image_path: str | os.PathLike | None = None,
    threshold_hu: float | None = None,
    autosave: bool = False,
    extra: dict[str, Any] | None = None,
    keep_backups: int = 20,
) -> Path:
    """Write the label (on the image's source grid) and its JSON record, atomically, with backups.

    Args:
        label: a canonical coronal stack array ``[k, row, col]`` (as the napari layer holds it) or a
            label Volume on the image's source grid or on its canonical grid.
        image: the annotated image (any grid; its source grid is where the label is written).
        store: folder of the annotation store.
        annotated_slices: canonical coronal indices that were reviewed.
        case_id: defaults to :func:`case_id_for` (sanitised; never the patient's name).
        image_path: the image's DICOM folder or file (default ``image.meta["source"|"source_path"]``).
        threshold_hu: the pre-fill threshold used, for the record.
        autosave: marks the record as written by autosave.
        extra: more record entries.
        keep_backups: how many earlier generations to keep in ``store/backups``.

    Returns:
        Path of the JSON record.
    """
    store = Path(store)
    can = as_canonical(image)
    source_grid = Grid.from_dict(can.meta["source_grid"])
    if isinstance(label, Volume):
        if label.grid.allclose(source_grid):
            src_label = label.with_array(label.array)
        elif label.grid.allclose(can.grid):
            src_label = from_canonical(can.with_array(label.array), source_grid, is_label=True)
        else:
            raise ValueError("label Volume lies neither on the image's source grid nor on its canonical grid")
    else:
        arr = np.asarray(label)
        if arr.shape != can.array.shape:
            raise ValueError(f"label shape {arr.shape} differs from the canonical image's {can.array.shape}")
        src_label = from_canonical(can.with_array(arr), source_grid, is_label=True)
    src_label.array = (np.asarray(src_label.array) > 0).astype(np.uint8)
    src_label.meta = {}
    cid = sanitize_case_id(case_id) if case_id else case_id_for(image, image_path)
    if image_path is None:
        image_path = image.meta.get("source") or image.meta.get("source_path")
    label_path, json_path = record_paths(store, cid)
    slices = sorted({int(k) for k in annotated_slices})
    n_slices = can.array.shape[0]
    bad = [k for k in slices if not 0 <= k < n_slices]
    if bad:
        raise ValueError(f"annotated slices {bad} lie outside the volume's 0..{n_slices - 1} coronal slices")
    lab_can = canonical(src_label, is_label=True).array if not isinstance(label, np.ndarray) else (np.asarray(label) > 0)
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "case_id": cid,
        "image": str(Path(image_path).resolve()) if image_path else None,
        "image_relative": _relpath(image_path, store) if image_path else None,
        "series_uid": image.meta.get("series_uid"),
        "label": label_path.name,
        "annotated_slices": slices,
        "slice_pixels": {str(k): int(np.count_nonzero(lab_can[k])) for k in slices},
        "threshold_hu": None if threshold_hu is None else float(threshold_hu),
        "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "autosave": bool(autosave),
        "label_voxels": int(np.count_nonzero(src_label.array)),
        "canonical_shape": [int(s) for s in can.array.shape],
        "source_grid": source_grid.to_dict(),
        "orientation": "canonical coronal stack LIP: k anterior->posterior, rows superior->inferior, cols right->left",
    }
    # an oblique source grid is resampled on the way out and back; keep the painted stack itself too
    canon_path = store / f"{cid}{CANONICAL_LABEL_SUFFIX}" if not source_grid.is_axis_aligned() else None
    if canon_path is not None:
        record["label_canonical"] = canon_path.name
    if extra:
        record.update(extra)
    store.mkdir(parents=True, exist_ok=True)
    _backup([label_path, json_path] + ([canon_path] if canon_path else []), store, cid, keep=keep_backups)
    write_image(src_label, label_path)
    if canon_path is not None:
        write_image(can.with_array(np.asarray(lab_can, dtype=np.uint8)), canon_path)
    text = json.dumps(record, indent=2)
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(text))
    log.info("saved annotation %s (%d annotated slices, %d voxels)", json_path, len(slices), record["label_voxels"])
    return json_path


def _relpath(path: str | os.PathLike, start: Path) -> str | None:
    try:
        return os.path.relpath(Path(path).resolve(), start.resolve())
    except ValueError:  # another drive (Windows)
        return None


def load_annotation(json_path: str | os.PathLike) -> Annotation:
    """Read an annotation record and its label (on the source grid).

    Raises:
        FileNotFoundError: the record or its label file is missing.
        ValueError: the record is not a cochseg3d annotation or the label does not match it.
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: no such annotation record")
    try:
        record = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ValueError(f"{json_path}: not a cochseg3d annotation record (format {record.get('format')!r})"
                         if isinstance(record, dict) else f"{json_path}: not a cochseg3d annotation record")
    label_path = json_path.parent / str(record.get("label") or "")
    if not label_path.is_file():
        raise FileNotFoundError(f"{json_path}: its label file {label_path} is missing")
    label = read_image(label_path)
    label.array = label.array.astype(np.uint8)
    label.meta = {"source_path": str(label_path)}
    if "source_grid" in record and not label.grid.allclose(Grid.from_dict(record["source_grid"])):
        raise ValueError(f"{label_path}: its grid differs from the one recorded in {json_path.name}")
    n = int(np.count_nonzero(label.array))
    if record.get("label_voxels") is not None and n != int(record["label_voxels"]):
        log.warning("%s: label has %d voxels, the record says %d (label written after the record?)",
                    label_path, n, record["label_voxels"])
    image_path = _resolve_image(record, json_path.parent)
    return Annotation(image_path=image_path, label=label,
                      annotated_slices=sorted(int(k) for k in record.get("annotated_slices", [])),
                      record=record, json_path=json_path)


def _resolve_image(record: dict[str, Any], store: Path) -> Path:
    rel, absolute = record.get("image_relative"), record.get("image")
    if rel:
        cand = (store / rel).resolve()
        if cand.exists() or not absolute:
            return cand
    return Path(absolute) if absolute else Path()


def find_annotations(folder: str | os.PathLike) -> list[Path]:
    """Annotation records (``*.annotation.json``) under ``folder``, backups excluded, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    out = []
    for p in folder.rglob(f"*{RECORD_SUFFIX}"):
        rel = p.relative_to(folder).parts
        if any(part == BACKUP_DIR or part.startswith(".") for part in rel):
            continue
        out.append(p)
    return sorted(out)


# --- PNG masks (notebook workflow) and labelme -------------------------------------------------
_SLICE_NAME = re.compile(r"^(?P<case>.+)_(?P<k>\d+)$")


def slice_png_name(case_id: str, k: int) -> str:
    """``<case>_<slice>.png``, the notebook workflow's mask name."""
    return f"{sanitize_case_id(case_id)}_{int(k)}.png"


def parse_slice_name(path: str | os.PathLike) -> tuple[str, int]:
    """``(case_id, k)`` from ``<case>_<slice>.png`` / ``.json``.

    Raises:
        ValueError: the name does not end in ``_<number>``.
    """
    stem = Path(path).name.rsplit(".", 1)[0]
    m = _SLICE_NAME.match(stem)
    if not m:
        raise ValueError(f"{path}: name is not <case>_<slice>.png (the slice number is missing)")
    return m.group("case"), int(m.group("k"))


def export_pngs(
    label: np.ndarray,
    *,
    slices: Iterable[int],
    out_dir: str | os.PathLike,
    case_id: str,
    image: np.ndarray | None = None,
    image_dir: str | os.PathLike | None = None,
    window_hu: tuple[float, float] = (-1000.0, 3000.0),
) -> list[Path]:
    """Write coronal mask slices as the notebook workflow's PNGs.

    Args:
        label: canonical label stack ``[k, row, col]``.
        slices: coronal indices to export (normally the annotated ones).
        out_dir: folder of the masks ``<case>_<k>.png`` (uint8 0/255, the slice's size, rows superior
            -> inferior, cols right -> left; neither flipped nor transposed).
        case_id: case id in the file names (sanitised).
        image: optional canonical image stack ``[k, row, col]`` (HU) to export alongside.
        image_dir: where the image PNGs go (same names), windowed to ``window_hu``.
        window_hu: ``(low, high)`` HU mapped to 0..255 for the image PNGs.

    Returns:
        The mask paths written. An existing mask that differs is first copied to
        ``out_dir/backups/<time>/`` (it may be someone's hand-made mask).
    """
    from PIL import Image

    out_dir = Path(out_dir)
    written = []
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    for k in sorted({int(s) for s in slices}):
        if not 0 <= k < label.shape[0]:
            raise ValueError(f"slice {k} lies outside the volume's 0..{label.shape[0] - 1} coronal slices")
        mask = np.where(np.asarray(label[k]) > 0, 255, 0).astype(np.uint8)
        p = out_dir / slice_png_name(case_id, k)
        if p.exists():
            try:
                same = np.array_equal(np.asarray(Image.open(p).convert("L")), mask)
            except OSError:
                same = False
            if not same:
                (out_dir / BACKUP_DIR / stamp).mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, out_dir / BACKUP_DIR / stamp / p.name)
        atomic_write(p, lambda tmp, m=mask: Image.fromarray(m, mode="L").save(tmp, format="PNG"))
        written.append(p)
        if image is not None and image_dir is not None:
            lo, hi = window_hu
            g = np.clip((np.asarray(image[k], dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)
            g8 = np.round(g * 255.0).astype(np.uint8)
            atomic_write(Path(image_dir) / p.name,
                         lambda tmp, m=g8: Image.fromarray(m, mode="L").save(tmp, format="PNG"))
    return written


def read_png_mask(path: str | os.PathLike, *, slice_shape: tuple[int, int]) -> np.ndarray:
    """A bool mask from a PNG (grey, RGB or RGBA; > 127 is electrode) of the coronal slice's size."""
    from PIL import Image

    from cochseg3d.utils import read_picture

    path = Path(path)
    with read_picture(path) as im:
        if im.mode in ("RGBA", "LA"):
            im = im.convert("RGBA")
            arr = np.asarray(im)
            g = np.where(arr[..., 3] > 0, arr[..., :3].max(axis=-1), 0)
        else:
            g = np.asarray(im.convert("L"))
    if g.shape != tuple(slice_shape):
        raise ValueError(f"{path}: mask is {g.shape[0]}x{g.shape[1]} pixels (rows x cols), "
                         f"the coronal slice is {slice_shape[0]}x{slice_shape[1]}")
    return g > 127


def read_labelme(
    path: str | os.PathLike, *, slice_shape: tuple[int, int], labels: Sequence[str] = ELECTRODE_LABELS
) -> np.ndarray:
    """Rasterise a labelme JSON's electrode shapes (polygon, circle, rectangle, ...) to a bool mask.

    labelme points are ``(x, y)`` = ``(col, row)`` pixels; rasterised with PIL as labelme itself does,
    so masks match what labelme exports.
    """
    from PIL import Image, ImageDraw

    from cochseg3d.utils import not_regular_reason

    path = Path(path)
    kind = not_regular_reason(path)
    if kind is not None:
        raise ValueError(f"{path}: {kind}")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise ValueError(f"{path}: not a labelme file (no 'shapes' list)")
    try:
        h, w = (int(doc.get("imageHeight") or slice_shape[0]), int(doc.get("imageWidth") or slice_shape[1]))
    except (TypeError, ValueError):
        raise ValueError(f"{path}: imageHeight/imageWidth are not whole numbers") from None
    if (h, w) != tuple(slice_shape):
        raise ValueError(f"{path}: labelme image is {h}x{w} pixels (rows x cols), "
                         f"the coronal slice is {slice_shape[0]}x{slice_shape[1]}")
    wanted = {s.lower() for s in labels}
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    n = 0
    for i, shape in enumerate(doc["shapes"]):
        if not isinstance(shape, dict):
            raise ValueError(f"{path}: shapes[{i}] is not an object")
        if str(shape.get("label", "")).strip().lower() not in wanted:
            continue
        try:
            xy = [(float(p[0]), float(p[1])) for p in shape.get("points") or []]
        except (TypeError, ValueError, IndexError, KeyError):
            raise ValueError(f"{path}: shapes[{i}] 'points' must be [x, y] number pairs") from None
        if not all(math.isfinite(v) for pt in xy for v in pt):
            raise ValueError(f"{path}: shapes[{i}] 'points' are not finite numbers")
        kind = shape.get("shape_type") or "polygon"
        if kind == "circle" and len(xy) >= 2:
            (cx, cy), (px, py) = xy[:2]
            d = math.hypot(cx - px, cy - py)
            draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
        elif kind == "rectangle" and len(xy) >= 2:
            (x0, y0), (x1, y1) = xy[:2]
            draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
        elif kind in ("line", "linestrip") and len(xy) >= 2:
            draw.line(xy=xy, fill=1, width=1)
        elif kind == "point" and xy:
            (cx, cy) = xy[0]
            draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], outline=1, fill=1)
        elif len(xy) >= 3:
            draw.polygon(xy=xy, outline=1, fill=1)
        else:
            log.warning("%s: skipped a %s shape with %d points", path, kind, len(xy))
            continue
        n += 1
    if n == 0:
        log.warning("%s: no shape labelled %s", path, "/".join(sorted(wanted)))
    return np.asarray(img) > 0


def read_slice_masks(
    paths: Iterable[str | os.PathLike],
    *,
    shape: Sequence[int],
    case_id: str | None = None,
) -> dict[int, np.ndarray]:
    """Read PNG masks and labelme JSONs named ``<case>_<slice>.*`` into ``{k: bool mask}``.

    Args:
        paths: files and/or folders (folders are searched for ``*.png`` and ``*.json``).
        shape: canonical volume shape ``(K, rows, cols)``; each mask must be ``rows x cols``.
        case_id: if given, only files of this case are read (others are skipped).

    Raises:
        ValueError: a mask's size differs from the slice, its slice number lies outside the volume,
            or two files give the same slice.
    """
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in (".png", ".json"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    want = sanitize_case_id(case_id) if case_id else None
    out: dict[int, np.ndarray] = {}
    origin: dict[int, Path] = {}
    plane = (int(shape[1]), int(shape[2]))
    for f in files:
        cid, k = parse_slice_name(f)
        if want is not None and sanitize_case_id(cid) != want:
            log.info("skipped %s (case %s, not %s)", f, cid, want)
            continue
        if not 0 <= k < int(shape[0]):
            raise ValueError(f"{f}: slice {k} lies outside the volume's 0..{int(shape[0]) - 1} coronal slices")
        if k in out:
            raise ValueError(f"{f}: slice {k} is also given by {origin[k]}")
        mask = read_labelme(f, slice_shape=plane) if f.suffix.lower() == ".json" else read_png_mask(f, slice_shape=plane)
        out[k], origin[k] = mask, f
    return out


# --- review of a model prediction --------------------------------------------------------------
def prediction_slices(prediction: np.ndarray, *, threshold: float = 0.5, min_pixels: int = 1) -> list[int]:
    """Canonical coronal indices where a prediction (probability or 0/1) shows electrode."""
    counts = (np.asarray(prediction) >= threshold).reshape(prediction.shape[0], -1).sum(axis=1)
    return [int(k) for k in np.flatnonzero(counts >= max(1, min_pixels))]


def accept_prediction(
    label: np.ndarray, prediction: np.ndarray, *, slices: Iterable[int], threshold: float = 0.5
) -> list[int]:
    """Copy the prediction into ``label`` (in place) on ``slices``; returns the slices written."""
    if label.shape != prediction.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from the label's {label.shape}")
    done = []
    for k in sorted({int(s) for s in slices}):
        label[k] = (np.asarray(prediction[k]) >= threshold).astype(label.dtype)
        done.append(k)
    return done


# --- session: the state behind the napari widget -----------------------------------------------
class Autosaver:
    """Calls ``save()`` when there are unsaved edits and ``interval_s`` has passed since the last save."""

    def __init__(self, save: Callable[[], Any], *, interval_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._save, self.interval_s, self._clock = save, float(interval_s), clock
        self.dirty = False
        self.last_save = clock()

    def mark_dirty(self) -> None:
        self.dirty = True

    def mark_saved(self) -> None:
        self.dirty, self.last_save = False, self._clock()

    def maybe_save(self) -> bool:
        """Save if due; returns whether it saved."""
        if not self.dirty or self._clock() - self.last_save < self.interval_s:
            return False
        self._save()
        self.mark_saved()
        return True


class AnnotationSession:
    """One case being annotated: the canonical image, its label stack and the annotated slices.

    ``label`` is the array a napari Labels layer paints into (``[k, row, col]``, uint8).
    """

    def __init__(self, image: Volume, *, store: str | os.PathLike | None = None,
                 case_id: str | None = None, image_path: str | os.PathLike | None = None) -> None:
        self.image = as_canonical(image)
        self.image_path = Path(image_path) if image_path else (
            Path(image.meta.get("source") or image.meta.get("source_path")) if
            (image.meta.get("source") or image.meta.get("source_path")) else None)
        self.case_id = sanitize_case_id(case_id) if case_id else case_id_for(image, self.image_path)
        self.store = Path(store) if store else None
        self.label = np.zeros(self.image.array.shape, np.uint8)
        self.annotated: set[int] = set()
        self.threshold_hu: float | None = None
        self._auto: float | None = None

    @classmethod
    def open(cls, path: str | os.PathLike, *, store: str | os.PathLike | None = None) -> "AnnotationSession":
        """Open a DICOM folder or image file; reload its annotation from ``store`` if one exists."""
        image = load_image(path)
        s = cls(image, store=store, image_path=path)
        if s.store is not None and s.json_path.exists():
            s.load()
        return s

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(x) for x in self.label.shape)  # type: ignore[return-value]

    @property
    def json_path(self) -> Path:
        if self.store is None:
            raise ValueError("no annotation store set")
        return record_paths(self.store, self.case_id)[1]

    def auto_threshold(self) -> float:
        """The automatic metal threshold of the image (HU), computed once."""
        if self._auto is None:
            self._auto = float(auto_threshold_hu(self.image))
        return self._auto

    def prefill_region(self, *, threshold_hu: float | str | None = "auto", slices: int | SliceRange | None = None,
                       roi: Box | np.ndarray | None = None, min_size_voxels: int = 4
                       ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """Pre-fill block for a scope (not yet applied); records the threshold used."""
        thr = self.auto_threshold() if threshold_hu in (None, "auto") else float(threshold_hu)
        self.threshold_hu = thr
        return prefill_region(self.image.array, threshold_hu=thr, slices=slices, roi=roi,
                              min_size_voxels=min_size_voxels)

    def prefill(self, **kwargs: Any) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """Apply :meth:`prefill_region` to ``label``, replacing the scope (inside the ROI, if one is given)."""
        region, block = self.prefill_region(**kwargs)
        within = roi_mask(kwargs.get("roi"), self.shape[1:])
        if within is None:
            self.label[region] = block
        else:
            view = self.label[region]
            view[:, within] = block[:, within] if within.ndim == 2 else block[within]
        return region, block

    def mark(self, k: int, annotated: bool = True) -> None:
        if not 0 <= int(k) < self.shape[0]:
            raise ValueError(f"slice {k} lies outside the volume's 0..{self.shape[0] - 1} coronal slices")
        (self.annotated.add if annotated else self.annotated.discard)(int(k))

    def save(self, *, autosave: bool = False) -> Path:
        if self.store is None:
            raise ValueError("no annotation store set; choose a folder first")
        return save_annotation(self.label, image=self.image, store=self.store,
                               annotated_slices=self.annotated, case_id=self.case_id,
                               image_path=self.image_path, threshold_hu=self.threshold_hu, autosave=autosave)

    def load(self, json_path: str | os.PathLike | None = None) -> Annotation:
        """Replace ``label`` (in place) and the annotated slices with a stored annotation."""
        ann = load_annotation(json_path or self.json_path)
        src = Grid.from_dict(self.image.meta["source_grid"])
        if not ann.label.grid.allclose(src):
            raise ValueError(f"{ann.json_path}: its label grid differs from this image's grid")
        lab = ann.canonical_label()
        if lab.shape != self.shape:
            raise ValueError(f"{ann.json_path}: label shape {lab.shape} differs from the image's {self.shape}")
        self.label[...] = lab
        self.annotated = set(ann.annotated_slices)
        self.threshold_hu = ann.threshold_hu
        return ann

    def import_masks(self, paths: Iterable[str | os.PathLike], *, any_case: bool = False) -> list[int]:
        """Write PNG / labelme masks into ``label`` and mark their slices; returns the slices."""
        masks = read_slice_masks(paths, shape=self.shape, case_id=None if any_case else self.case_id)
        for k, m in masks.items():
            self.label[k] = m.astype(np.uint8)
            self.annotated.add(k)
        return sorted(masks)

    def export_pngs(self, out_dir: str | os.PathLike, *, image_dir: str | os.PathLike | None = None) -> list[Path]:
        if not self.annotated:
            raise ValueError("no slice is marked annotated; mark slices before exporting")
        return export_pngs(self.label, slices=self.annotated, out_dir=out_dir, case_id=self.case_id,
                           image=self.image.array if image_dir else None, image_dir=image_dir)


def load_image(path: str | os.PathLike, **load_options: Any) -> Volume:
    """A DICOM folder or image file as a Volume (``cochseg3d.dicom.load_input`` when available;
    ``load_options`` such as ``on_gap`` go to it)."""
    path = Path(path)
    try:
        from cochseg3d.dicom import load_input
    except ImportError:
        load_input = None
    if load_input is not None:
        return load_input(path, **load_options)
    if path.is_dir():
        raise ValueError(f"{path}: reading DICOM folders needs cochseg3d.dicom (not installed)")
    vol = read_image(path)
    vol.meta.setdefault("source", str(path))
    return vol
