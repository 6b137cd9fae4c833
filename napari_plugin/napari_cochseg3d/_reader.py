"""napari reader: a patient DICOM folder or a NIfTI/NRRD/MHA file, shown as the coronal stack."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from cochseg3d.volume import is_image_file

log = logging.getLogger(__name__)

_LABEL_SUFFIXES = (".label.nii.gz", "_label.nii.gz", "-label.nii.gz", ".seg.nii.gz")


def _looks_like_dicom_folder(path: Path, *, probe: int = 50) -> bool:
    n = 0
    for p in sorted(path.rglob("*")):
        if not p.is_file():
            continue
        if p.suffix.lower() == ".dcm":
            return True
        try:
            with open(p, "rb") as fh:
                head = fh.read(132)
            if head[128:132] == b"DICM":
                return True
        except OSError:
            pass
        n += 1
        if n >= probe:
            break
    return False


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list] | None:
    """Return a reader for a DICOM folder or a 3D image file, else ``None``."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir():
        return read_case if _looks_like_dicom_folder(p) else None
    if p.is_file() and (is_image_file(p) or p.suffix.lower() == ".dcm"):
        return read_case
    return None


def read_case(path: str | list[str]) -> list[tuple]:
    """Layer data for napari: the image (or a label file as a Labels layer)."""
    from cochseg3d.annotation import case_id_for, load_image

    from napari_cochseg3d.layers import image_layer, label_layer

    if isinstance(path, list):
        path = path[0]
    p = Path(path)
    vol = load_image(p)  # a single .dcm file opens the series it belongs to
    name = case_id_for(vol, p)
    array = _array_layer(p, p, name)
    if array is not None:  # a fitted physical array opened by itself
        return [array]
    contacts = contacts_file_of(p)
    if contacts is not None:  # a `cochseg3d segment` output: the label, its contacts and the fitted array
        layers = segment_output_layers(vol, contacts, name=name)
        beside = _array_layer(p.with_name(p.name[: -len(".nii.gz")] + ".array.nii.gz"), p, name)
        return layers + ([beside] if beside is not None else [])
    if str(p).lower().endswith(_LABEL_SUFFIXES):
        return [label_layer(vol, name=name)]
    return [image_layer(vol, name=name, path=str(p))]


def _array_layer(array_path: Path, opened: Path, name: str) -> tuple | None:
    """``<case>.array.nii.gz`` with its ``.array.ctbl`` as a named Labels layer; None when ``array_path``
    is not such a pair. A table that cannot be read leaves the array unnamed (one warning)."""
    from cochseg3d.export import OUTPUT_SUFFIXES

    suffix = OUTPUT_SUFFIXES["array"]
    if not array_path.name.endswith(suffix) or not array_path.is_file():
        return None
    ctbl = array_path.with_name(array_path.name[: -len(suffix)] + OUTPUT_SUFFIXES["array_colors"])
    if not ctbl.is_file():
        return None
    from cochseg3d.annotation import load_image
    from cochseg3d.clinical.array_label import read_colour_table

    from napari_cochseg3d.layers import array_label_layer, label_layer

    vol = load_image(array_path)
    layer_name = f"{name} array" if array_path != opened else name
    try:
        table = read_colour_table(ctbl.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("%s: %s; the array is shown without contact names", ctbl, exc)
        return label_layer(vol, name=layer_name)
    return array_label_layer(vol, table, name=layer_name)


def contacts_file_of(path: Path) -> Path | None:
    """``<case>.contacts.json`` beside a ``<case>.nii.gz`` (what ``cochseg3d segment`` writes), else None."""
    from cochseg3d.export import OUTPUT_SUFFIXES

    label_suffix = OUTPUT_SUFFIXES["label"]
    if not path.name.lower().endswith(label_suffix) or path.name.lower().endswith(".prob.nii.gz"):
        return None
    case = path.name[: -len(label_suffix)]
    json_path = path.with_name(case + OUTPUT_SUFFIXES["contacts"])
    return json_path if json_path.is_file() else None


def side_names(record: dict, n: int) -> list[str] | None:
    """A scan of both ears: each contact named by its array's side and number ("R E1", "L E3"), as
    contacts.json lists the arrays (right first, as the contacts); None for one array."""
    if not record.get("bilateral"):
        return None
    from cochseg3d.sides import side_name

    names = [side_name(a.get("side"), c.get("name", f"E{i + 1}"))
             for a in record.get("arrays") or [] for i, c in enumerate(a.get("contacts") or [])]
    return names if len(names) == n else None


def segment_output_layers(label, contacts_json: Path, *, name: str) -> list[tuple]:
    """The label as a Labels layer and the saved contacts as a Points layer named E1..EN, on one stack."""
    import json

    import numpy as np

    from napari_cochseg3d.layers import (
        canonical_label,
        contact_names_for,
        contacts_to_data,
        points_kwargs,
        world_transform,
    )

    try:
        record = json.loads(contacts_json.read_text())
        lps = np.asarray(record.get("contacts_lps_mm") or [], dtype=float).reshape(-1, 3)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{contacts_json}: not a cochseg3d contacts file ({exc})") from None
    can = canonical_label(label)
    transform = world_transform(can)
    labels = (np.asarray(can.array).astype(np.uint8),
              {"name": name, "opacity": 0.6, **transform,
               "metadata": {"cochseg3d": {"volume_grid": can.grid.to_dict(), "qc": record.get("qc")}}}, "labels")
    info = {"model": record.get("model_assumed"), "electrode": record.get("electrode_assumed")}
    names = side_names(record, len(lps)) or contact_names_for(len(lps), record.get("electrode_hint"), info)
    points = (contacts_to_data(can, lps), {**points_kwargs(can, lps, names, name=f"{name} contacts"), **transform},
              "points")
    return [labels, points]
