"""Volumes as napari layer data: the canonical coronal stack in physical mm (no Qt here)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cochseg3d.annotation import as_canonical
from cochseg3d.metal import threshold_levels
from cochseg3d.volume import Volume

#: key under which layers keep their cochseg3d context in ``layer.metadata``
META_KEY = "cochseg3d"
#: world axes of the canonical stack, in napari's (k, row, col) order
AXIS_LABELS = ("posterior (mm)", "inferior (mm)", "left (mm)")


def world_transform(can: Volume) -> dict[str, tuple]:
    """napari ``scale``, ``translate`` and ``units`` of a canonical stack, in mm along (P, I, L).

    Canonical index axes are k -> +P, row -> -S (inferior), col -> +L (LPS), so the world
    coordinates are LPS y, -z and x of the voxel centres.
    """
    sx, sy, sz = can.spacing_mm
    ox, oy, oz = can.origin_mm
    return {"scale": (sz, sy, sx), "translate": (oy, -oz, ox), "units": ("mm", "mm", "mm")}


def bone_metal_window(can: Volume) -> tuple[float, float]:
    """Contrast limits (HU) that show soft tissue dark, bone grey and the electrode white."""
    lv = threshold_levels(can)
    lo = lv["tissue"] - 400.0
    hi = lv["metal"] if lv["has_metal"] else lv["bone"] + 500.0
    return float(lo), float(max(hi, lo + 1.0))


def image_layer(image: Volume, *, name: str, path: str | None = None) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari ``LayerDataTuple`` of ``image`` as the coronal stack with mm scale and a bone/metal window."""
    can = as_canonical(image)
    kwargs = {
        "name": name,
        **world_transform(can),
        "contrast_limits": bone_metal_window(can),
        "colormap": "gray",
        "metadata": {META_KEY: {"volume": can, "path": path, "case_id": name}},
    }
    return can.array, kwargs, "image"


def canonical_label(label: Volume) -> Volume:
    """A label volume (any grid) as the coronal stack, nearest-neighbour."""
    if "source_grid" in label.meta:
        return as_canonical(label)
    from cochseg3d.volume import canonical

    return canonical(label, is_label=True)


def label_layer(label: Volume, *, name: str) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari ``LayerDataTuple`` of a label volume (any grid) as a Labels layer on the coronal stack."""
    can = canonical_label(label)
    kwargs = {"name": name, **world_transform(can), "metadata": {META_KEY: {"volume_grid": can.grid.to_dict()}}}
    return np.asarray(can.array).astype(np.uint8), kwargs, "labels"


def array_label_layer(label: Volume, table: dict[int, tuple[str, tuple]], *, name: str) -> tuple[np.ndarray, dict[str, Any], str]:
    """The fitted physical array as a Labels layer: each value named and coloured as its colour table says
    (``cochseg3d.clinical.array_label.read_colour_table``), so napari's status bar names the contact."""
    layer = label_layer(label, name=name)
    layer[1].update(array_label_kwargs(table))
    return layer


def array_label_kwargs(table: dict[int, tuple[str, tuple]]) -> dict[str, Any]:
    """A Labels layer's colours and per-value names (features) from a colour table ``{value: (name, rgba)}``."""
    values = sorted(table)
    colours = {None: (0, 0, 0, 0), **{v: tuple(c / 255 for c in rgba) for v, (_, rgba) in table.items()}}
    return {"colormap": colours, "features": {"index": values, "name": [table[v][0] for v in values]}, "opacity": 0.8}


def contacts_to_data(can: Volume, lps_mm: np.ndarray) -> np.ndarray:
    """Contact centres (LPS mm) as continuous ``(k, row, col)`` indices of the stack ``can``."""
    lps = np.asarray(lps_mm, dtype=float).reshape(-1, 3)
    return can.lps_to_index(lps)[:, ::-1]  # (i, j, k) -> numpy's (k, j, i)


def contact_names_for(n: int, electrode: str | None, info: dict[str, Any]) -> list[str]:
    """E1..EN in the vendor's numbering: the chosen ``electrode``'s, else the one the finder assumed
    (``info``: :class:`cochseg3d.contacts.Contacts` info, ``model``/``electrode`` keys)."""
    from cochseg3d.clinical.measures import contact_names, vendor_of

    vendor = None
    if electrode:
        from cochseg3d.electrodes import VENDORS, find_model

        try:
            vendor = electrode if electrode in VENDORS else find_model(electrode).vendor
        except ValueError:
            vendor = None
    if vendor is None:
        vendor = vendor_of(info)[0]
    return contact_names(n, vendor)


def points_kwargs(can: Volume, lps_mm: np.ndarray, names: list[str], *, name: str) -> dict[str, Any]:
    """Keyword arguments of the contacts Points layer: one labelled point per contact on ``can``'s stack."""
    lps = np.asarray(lps_mm, dtype=float).reshape(-1, 3)
    return {"name": name, "features": {"name": list(names)}, "size": 2.0 * float(min(can.spacing_mm)),
            "face_color": "yellow", "border_color": "black",
            "text": {"string": "{name}", "color": "yellow", "size": 10, "anchor": "upper_left"},
            "metadata": {META_KEY: {"lps_mm": lps.tolist()}}}
