"""The annotation store: one case's label (on the image's source grid) and its JSON record, with backups."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cochseg3d.annotation.prefill import as_canonical
from cochseg3d.utils import sanitize_case_id
from cochseg3d.volume import Grid, Volume, atomic_write, canonical, from_canonical, read_image, write_image

log = logging.getLogger(__name__)

RECORD_FORMAT = "cochseg3d.annotation"
RECORD_VERSION = 1
LABEL_SUFFIX = ".label.nii.gz"
CANONICAL_LABEL_SUFFIX = ".canonical-label.nii.gz"
RECORD_SUFFIX = ".annotation.json"
BACKUP_DIR = "backups"


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
    src_label = _on_source_grid(label, can, source_grid)
    cid = sanitize_case_id(case_id) if case_id else case_id_for(image, image_path)
    if image_path is None:
        image_path = image.meta.get("source") or image.meta.get("source_path")
    label_path, json_path = record_paths(store, cid)
    slices = _checked_slices(annotated_slices, can.array.shape[0])
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


def _on_source_grid(label: Volume | np.ndarray, can: Volume, source_grid: Grid) -> Volume:
    """The painted label as a 0/1 uint8 Volume on the image's source grid (no meta)."""
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
    return src_label


def _checked_slices(annotated_slices: Iterable[int], n_slices: int) -> list[int]:
    """The reviewed coronal indices, sorted and unique; refused when one lies outside the stack."""
    slices = sorted({int(k) for k in annotated_slices})
    bad = [k for k in slices if not 0 <= k < n_slices]
    if bad:
        raise ValueError(f"annotated slices {bad} lie outside the volume's 0..{n_slices - 1} coronal slices")
    return slices


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
