"""The physical array fitted to the image (issue 13): a label of the array at its catalogue size.

Besides the label of the visible metal (bloom included), ``segment`` writes the array as built: a
tube along a smooth centreline through the found contacts, apex -> base, at the catalogue's carrier
diameter (:mod:`cochseg3d.electrodes`, tapering from tip to base, the lead's beyond the carrier),
each contact a cylinder of the catalogue's contact length and platinum radius on the tube's axis.
Label values: contact ``i`` (apex first) is ``i + 1``, the carrier is ``N + 1``, 0 elsewhere.

The centreline is a cubic spline through the contacts, extended at the apex by the catalogue's tip
offset along the first contact's tangent and at the base along the contact finder's centreline as
far as the visible-metal label reaches (never further than the image shows metal). A voxel belongs
to a part when its centre lies inside it, the rule the phantom's metal truth follows; a contact
whose cylinder holds no voxel centre (coarse grids) still gets the voxel nearest its centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import interpolate
from scipy.spatial import cKDTree

from cochseg3d.contacts.centreline import cumulative_arc
from cochseg3d.electrodes import ElectrodeModel, find_model
from cochseg3d.volume import Volume

STEP_MM = 0.05  # centreline sampling; the nearest sample stands in for the curve
#: a basal extension stops after this much centreline outside the visible metal
GAP_MM = 1.0
_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255))
CARRIER_RGB = (200, 200, 200)


@dataclass(frozen=True)
class ArrayLabel:
    """The fitted physical array of one patient.

    Attributes:
        label: uint8 label on the segment label's grid (contacts 1..N apex first, carrier N + 1), or
            None when no array could be fitted.
        names: segment names by label value - 1 (the contacts in the vendor's numbering, then "carrier").
        reason: why there is no label (None when there is one).
        info: the model used, the centreline's length, voxels per value.
    """

    label: Volume | None
    names: list[str] = field(default_factory=list)
    reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """contacts.json's ``array_label``: the values and names, or the reason there is none."""
        if self.label is None:
            return {"written": False, "reason": self.reason}
        return {"written": True, "values": {str(v + 1): n for v, n in enumerate(self.names)}, **self.info}


def _resample(points: np.ndarray, step: float) -> np.ndarray:
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    s_new = np.append(np.arange(0.0, s[-1], step), s[-1])
    return np.stack([np.interp(s_new, s, points[:, d]) for d in range(3)], axis=1)


def _spline_through(pts: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Dense samples of a spline through ``pts`` (chord-length knots) and each point's sample index."""
    u = cumulative_arc(pts)
    spl = interpolate.make_interp_spline(u, pts, k=min(3, len(pts) - 1))
    # dense in u first, so the arc length (not the chord) sets each contact's position
    n = max(int(u[-1] / (step / 4)), 2 * len(pts))
    uu = np.union1d(np.linspace(0.0, u[-1], n), u)
    dense = spl(uu)
    return dense, np.searchsorted(uu, u)


def _visible_run(points: np.ndarray, visible: Volume | None) -> int:
    """How many leading ``points`` lie on or next to the visible metal, before a gap of GAP_MM."""
    if visible is None:
        return len(points)
    mask = np.asarray(visible.array) > 0
    ijk = np.rint(visible.lps_to_index(points)).astype(int)
    shape = np.array(mask.shape[::-1])
    near = np.zeros(len(points), bool)
    for off in np.stack(np.meshgrid(*(np.arange(-1, 2),) * 3, indexing="ij"), -1).reshape(-1, 3):
        q = ijk + off
        ok = np.all((q >= 0) & (q < shape), axis=1)
        near[ok] |= mask[q[ok, 2], q[ok, 1], q[ok, 0]]
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1) if len(points) > 1 else np.zeros(0)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    last_on = -1
    for n in np.flatnonzero(near):
        if last_on >= 0 and s[n] - s[last_on] > GAP_MM:
            break
        if last_on < 0 and s[n] > GAP_MM:
            return 0
        last_on = n
    return last_on + 1


def fitted_centreline(contacts_lps: np.ndarray, model: ElectrodeModel, centreline_lps: np.ndarray | None = None,
                      visible: Volume | None = None, *, step: float = STEP_MM) -> tuple[np.ndarray, np.ndarray]:
    """The array's centreline, tip -> basal end, every ~``step`` mm, and the contacts' arc lengths.

    Args:
        contacts_lps: (N >= 2, 3) contact centres, apex -> base, LPS mm.
        model: the catalogue entry (tip offset, contact length).
        centreline_lps: the contact finder's centreline, apex -> base; where it runs on beyond the last
            contact, the array follows it (as far as ``visible`` shows metal).
        visible: the visible-metal label; None keeps the whole basal centreline.

    Returns:
        ``(points, s_contacts)``: (M, 3) LPS mm from the tip, and each contact's arc length from the tip.
    """
    pts = np.asarray(contacts_lps, float)
    dense, at = _spline_through(pts, step)
    t0 = _unit(dense[min(at[0] + 1, len(dense) - 1)] - dense[at[0]])
    tip = pts[0] - model.tip_offset_mm * t0
    base_end = pts[-1] + 0.5 * model.contact_len_mm * _unit(pts[-1] - pts[-2])
    tail = np.zeros((0, 3))
    if centreline_lps is not None and len(centreline_lps) > 1:
        cl = np.asarray(centreline_lps, float)
        n0 = int(np.argmin(np.linalg.norm(cl - pts[-1], axis=1)))
        tail = cl[n0 + 1:]
        far = np.flatnonzero(np.linalg.norm(tail - pts[-1], axis=1) > step)  # past the last contact
        tail = tail[far[0]:] if len(far) else tail[:0]
        tail = tail[:_visible_run(tail, visible)]
    if not len(tail) or np.linalg.norm(tail[-1] - pts[-1]) < 0.5 * model.contact_len_mm:
        tail = base_end[None]
    curve = np.concatenate([tip[None], dense, tail])
    keep = np.concatenate([[True], np.linalg.norm(np.diff(curve, axis=0), axis=1) > 1e-9])
    curve, idx = curve[keep], np.cumsum(keep) - 1
    s_all = cumulative_arc(curve)
    s_contacts = s_all[idx[at + 1]]
    out = _resample(curve, step)
    return out, s_contacts


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def rasterise(grid: Volume, curve: np.ndarray, s_contacts: np.ndarray, model: ElectrodeModel) -> np.ndarray:
    """Label values on ``grid``'s voxels for the array along ``curve`` (sampled every ~STEP_MM from the tip).

    Only voxels within reach of the curve are looked at (the curve's samples dilated by the largest
    radius in index space), so the cost follows the array's length, not the grid's size.
    """
    shape = np.asarray(grid.array.shape)  # (k, j, i)
    out = np.zeros(tuple(shape), np.uint8)
    s_curve = cumulative_arc(curve)
    r_curve = model.carrier_radius_mm(s_curve)
    r_max = float(r_curve.max())
    sp = np.asarray(grid.spacing_mm)
    reach = np.ceil(r_max / sp).astype(int) + 1
    centre = np.unique(np.rint(grid.lps_to_index(curve)).astype(int), axis=0)
    offs = np.stack(np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij"), -1).reshape(-1, 3)
    dims = shape[::-1]  # (i, j, k)
    keys = []
    for chunk in np.array_split(centre, max(1, len(centre) // 2000)):
        cand = (chunk[:, None, :] + offs[None]).reshape(-1, 3)
        cand = cand[np.all((cand >= 0) & (cand < dims), axis=1)]
        keys.append(np.unique(np.ravel_multi_index(cand.T, dims)))
    if not keys or not sum(len(k) for k in keys):
        return out
    vox = np.stack(np.unravel_index(np.unique(np.concatenate(keys)), dims), axis=1)
    dist, near = cKDTree(curve).query(grid.index_to_lps(vox), distance_upper_bound=r_max + 1e-6)
    hit = np.isfinite(dist)
    vox, dist, s = vox[hit], dist[hit], s_curve[near[hit]]
    inside = dist <= r_curve[near[hit]]
    n = len(s_contacts)
    c = np.clip(np.searchsorted(s_contacts, s), 1, max(n - 1, 1))
    c = np.where(np.abs(s - s_contacts[c - 1]) <= np.abs(s - s_contacts[np.minimum(c, n - 1)]), c - 1,
                 np.minimum(c, n - 1))
    r_contact = np.minimum(model.carrier_radius_mm(s_contacts[c]), model.contact_radius_mm)
    in_contact = inside & (np.abs(s - s_contacts[c]) <= 0.5 * model.contact_len_mm) & (dist <= r_contact)
    value = np.where(in_contact, c + 1, n + 1).astype(np.uint8)
    out[vox[inside, 2], vox[inside, 1], vox[inside, 0]] = value[inside]
    return out


def _ensure_contacts(label: np.ndarray, grid: Volume, contacts_lps: np.ndarray) -> None:
    """A contact no voxel centre falls in (coarse grids) gets the voxel nearest its centre."""
    present = np.bincount(label.ravel(), minlength=len(contacts_lps) + 2)
    ijk = np.rint(grid.lps_to_index(contacts_lps)).astype(int)
    for n, (i, j, k) in enumerate(ijk):
        if not present[n + 1] and 0 <= k < label.shape[0] and 0 <= j < label.shape[1] and 0 <= i < label.shape[2]:
            label[k, j, i] = n + 1


def _model_of(contacts: Any) -> tuple[str | None, ElectrodeModel | None]:
    """The vendor and the catalogue entry the contacts were found for (None where unknown)."""
    from cochseg3d.clinical.measures import vendor_of

    vendor, name = vendor_of(dict(getattr(contacts, "info", {}) or {}))
    try:
        return vendor, find_model(str(name)) if name else None
    except ValueError:
        return vendor, None


def fit_array_label(contacts: Any, visible: Volume) -> ArrayLabel:
    """The fitted physical array of ``contacts`` (:class:`cochseg3d.contacts.Contacts`) on ``visible``'s grid.

    Args:
        contacts: the contacts found (apex -> base), their centreline and the electrode model in ``info``.
        visible: the visible-metal label (``segment``'s label): the output grid and how far the lead shows.

    Returns:
        :class:`ArrayLabel`; its ``label`` is None, with the ``reason``, when fewer than two contacts
        were found or the electrode model is not in the catalogue.
    """
    from cochseg3d.clinical.measures import contact_names

    pts = np.asarray(contacts.lps_mm, float).reshape(-1, 3)
    if len(pts) < 2:
        return ArrayLabel(None, reason=f"{len(pts)} contact(s) found: an array needs two to fix its course")
    vendor, model = _model_of(contacts)
    if model is None:
        return ArrayLabel(None, reason="electrode model unknown: no catalogue diameter or contact size")
    centreline = getattr(contacts, "centreline_lps_mm", None)
    curve, s_contacts = fitted_centreline(pts, model, centreline, visible)
    lab = rasterise(visible, curve, s_contacts, model)
    _ensure_contacts(lab, visible, pts)
    names = [*contact_names(len(pts), vendor or model.vendor), "carrier"]
    counts = np.bincount(lab.ravel(), minlength=len(pts) + 2)[1:]
    info = {"model": model.model, "centreline_length_mm": round(float(np.sum(np.linalg.norm(np.diff(curve, axis=0),
                                                                                               axis=1))), 2),
            "voxels": {str(v + 1): int(n) for v, n in enumerate(counts)}}
    return ArrayLabel(visible.with_array(lab), names, None, info)


def colours(names: list[str]) -> dict[int, tuple[str, tuple[int, int, int, int]]]:
    """``{value: (name, rgba)}`` of each label value (the carrier last), as :func:`colour_table` writes them."""
    # a bilateral scan's label holds two arrays, each with its carrier ("R carrier", "L carrier")
    rgb = [CARRIER_RGB if v == len(names) or names[v - 1].endswith("carrier") else _COLOURS[(v - 1) % len(_COLOURS)]
           for v in range(1, len(names) + 1)]
    return {v: (name.replace(" ", "_"), (*rgb[v - 1], 255)) for v, name in enumerate(names, start=1)}


def colour_table(names: list[str]) -> str:
    """A 3D Slicer colour table (``.ctbl``: ``value name R G B A``) naming each label value."""
    lines = ["# cochseg3d fitted physical array: contacts apex first, then the carrier",
             f"# {len(names) + 1} values", "0 background 0 0 0 0"]
    lines += [f"{v} {name} {r} {g} {b} {a}" for v, (name, (r, g, b, a)) in colours(names).items()]
    return "\n".join(lines) + "\n"


def read_colour_table(text: str) -> dict[int, tuple[str, tuple[int, int, int, int]]]:
    """A ``.ctbl`` (``value name R G B A`` lines, ``#`` comments) as ``{value: (name, rgba)}``."""
    table = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        f = line.split()
        try:
            if len(f) != 6:
                raise ValueError
            table[int(f[0])] = (f[1], tuple(int(x) for x in f[2:]))
        except ValueError:
            raise ValueError(f"colour table line {n}: not 'value name R G B A': {line!r}") from None
    return table
