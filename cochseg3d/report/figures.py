"""The report's figures, each a PNG as a ``data:`` URI (the pages carry no external files).

Slab overlays through the array (coronal and axial, radiological views), the contacts in the
cochlear frame (3D, with the modiolar axis) and the unrolled cochlea (angle and depth per contact).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from cochseg3d.export import PREVIEW_WINDOW_HU
from cochseg3d.volume import Volume, canonical

MARGIN_MM = 6.0
DPI = 90


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def png_uri(fig) -> str:
    """``fig`` as a base64 PNG ``data:`` URI; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# canonical axes: 0 slices A->P, 1 rows S->I, 2 columns R->L; a view collapses one of them
VIEWS = {
    "coronal": {"axis": 0, "ylabel": "superior → inferior (mm)"},
    "axial": {"axis": 1, "ylabel": "anterior → posterior (mm)"},
}


def _bounds(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask)
    if not rows.size:
        return slice(0, mask.shape[0]), slice(0, mask.shape[1])
    return (slice(max(0, rows.min() - margin), rows.max() + margin + 1),
            slice(max(0, cols.min() - margin), cols.max() + margin + 1))


def overlay(image: Volume, label: Volume, view: str, *, contacts_lps_mm=None, title: str = "") -> str:
    """A slab MIP through the array in ``view`` ("coronal" or "axial"): label outline red, contacts yellow.

    The slab spans the label's extent across the view plus 1 mm (:func:`cochseg3d.export.electrode_slab`);
    the field is cropped to the label plus 6 mm. Patient right is on the image's left; superior up
    (coronal), anterior up (axial).
    """
    from cochseg3d.export import electrode_slab
    from cochseg3d.greylevels import to_hu

    plt = _pyplot()
    axis = VIEWS[view]["axis"]
    can = canonical(to_hu(image)[0])
    lab = np.moveaxis(canonical(label, is_label=True).array > 0, axis, 0)
    img = np.moveaxis(can.array, axis, 0)
    spacing = np.array(can.spacing_mm)[::-1]  # per array axis: slices, rows, columns
    sy, sx = np.delete(spacing, axis)
    k0, k1 = electrode_slab(lab, slice_spacing_mm=float(spacing[axis]))
    mip, lab_mip = img[k0:k1].max(axis=0).astype(np.float32), lab[k0:k1].any(axis=0)
    rs, cs = _bounds(lab_mip, int(round(MARGIN_MM / min(sx, sy))))
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    extent = ((cs.start - 0.5) * sx, (min(cs.stop, mip.shape[1]) - 0.5) * sx,
              (min(rs.stop, mip.shape[0]) - 0.5) * sy, (rs.start - 0.5) * sy)
    lo, hi = PREVIEW_WINDOW_HU
    ax.imshow(mip[rs, cs], cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
    part = lab_mip[rs, cs]
    if part.any():
        yy, xx = np.mgrid[rs.start:rs.start + part.shape[0], cs.start:cs.start + part.shape[1]]
        ax.contour(xx * sx, yy * sy, part.astype(float), levels=[0.5], colors="red", linewidths=0.9)
    if contacts_lps_mm is not None and len(contacts_lps_mm):
        ijk = can.lps_to_index(np.asarray(contacts_lps_mm, float))  # (column, row, slice)
        y = ijk[:, 2] * spacing[0] if axis == 1 else ijk[:, 1] * spacing[1]
        ax.plot(ijk[:, 0] * sx, y, "o", ms=4, mfc="none", mec="yellow", mew=0.9)
        ax.plot(ijk[0, 0] * sx, y[0], "o", ms=6, mfc="none", mec="cyan", mew=1.1)
    ax.set_xlabel("patient right → left (mm)")
    ax.set_ylabel(VIEWS[view]["ylabel"])
    ax.set_title(title or f"{view} slab MIP ({k1 - k0} slices); cyan: most apical contact", fontsize=8)
    fig.tight_layout()
    return png_uri(fig)


def frame_coordinates(array: dict[str, Any]) -> np.ndarray | None:
    """The contacts of one ``arrays`` entry in its cochlear frame (mm), None without a frame."""
    f = array.get("cochlear_frame") or {}
    contacts = array.get("contacts") or []
    if "origin_lps_mm" not in f or not contacts:
        return None
    rows = np.array([f["x_lps"], f["y_lps"], f["z_lps"]], float)
    return (np.array([c["lps_mm"] for c in contacts], float) - np.asarray(f["origin_lps_mm"], float)) @ rows.T


def _inside(array: dict[str, Any]) -> np.ndarray:
    return np.array([bool(c.get("inside_cochlea")) for c in array.get("contacts") or []], bool)


def cochlear_3d(array: dict[str, Any]) -> str | None:
    """The contacts in the cochlear frame (x to the round window, z the modiolar axis to the apex)."""
    q = frame_coordinates(array)
    if q is None:
        return None
    plt = _pyplot()
    inside = _inside(array)
    names = [c["name"] for c in array["contacts"]]
    fig = plt.figure(figsize=(4.8, 4.4))
    ax = fig.add_subplot(projection="3d")
    ax.plot(q[:, 0], q[:, 1], q[:, 2], "-", color="0.5", lw=1)
    ax.scatter(*q[inside].T, c="tab:green", s=22, label="inside the cochlea", depthshade=False)
    ax.scatter(*q[~inside].T, c="tab:red", s=22, label="extracochlear", depthshade=False)
    for i in {0, len(q) - 1}:
        ax.text(*q[i], f" {names[i]}", fontsize=7)
    z0, z1 = min(q[:, 2].min(), 0.0) - 1.0, max(q[:, 2].max(), 0.0) + 1.0
    ax.plot([0, 0], [0, 0], [z0, z1], "b--", lw=1.5, label="modiolar axis (z)")
    ax.plot([0, 2], [0, 0], [0, 0], "k:", lw=1, label="x (round window)")
    span = float(np.ptp(np.vstack([q, [[0, 0, z0], [0, 0, z1]]]), axis=0).max()) / 2 + 0.5
    for setlim, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), (q[:, 0].mean(), q[:, 1].mean(), (z0 + z1) / 2)):
        setlim(c - span, c + span)  # equal scales: the spiral keeps its shape
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_zlabel("z (mm)")
    ax.legend(loc="upper left", fontsize=6)
    ax.set_title(f"cochlear frame (confidence {array['cochlear_frame'].get('confidence')})", fontsize=8)
    fig.tight_layout()
    return png_uri(fig)


def unrolled(array: dict[str, Any]) -> str | None:
    """The unrolled cochlea: angle (deg) per contact from the tip, and the linear depth (mm)."""
    contacts = array.get("contacts") or []
    if not contacts or "angle_deg" not in contacts[0]:
        return None
    plt = _pyplot()
    idx = np.arange(1, len(contacts) + 1)
    ang = np.array([c["angle_deg"] for c in contacts], float)
    dep = np.array([c["depth_mm"] for c in contacts], float)
    inside = _inside(array)
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    ax.plot(idx, ang, "-", color="0.6", lw=1)
    ax.plot(idx[inside], ang[inside], "o", color="tab:green", label="angle, inside")
    ax.plot(idx[~inside], ang[~inside], "o", color="tab:red", label="angle, extracochlear")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(idx, [c["name"] for c in contacts], fontsize=7)
    ax.set_xlabel("contact (apex → base)")
    ax.set_ylabel("angular depth (deg from the round window)")
    right = ax.twinx()
    right.plot(idx, dep, "s--", color="tab:blue", ms=3, lw=0.8, label="depth (mm)")
    right.set_ylabel("linear depth (mm)", color="tab:blue")
    lines = ax.get_legend_handles_labels(), right.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=7, loc="upper right")
    ax.set_title(f"unrolled cochlea: insertion angle {array.get('insertion_angle_deg')} deg", fontsize=8)
    fig.tight_layout()
    return png_uri(fig)
