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
    if str(p).lower().endswith(_LABEL_SUFFIXES):
        return [label_layer(vol, name=name)]
    return [image_layer(vol, name=name, path=str(p))]
