"""Post-processing of the thresholded electrode mask: keep the array, drop noise and other metal.

:func:`postprocess` is what :func:`cochseg3d.inference.run_segmentation` applies to the network's
mask on the canonical grid; the array's limits (radius, shortest path) come from the catalogue.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage


def _array_limits() -> tuple[float, float]:
    """(longest radius, shortest path) a painted electrode array can show, from the catalogue.

    Radius: the thickest carrier's half diameter plus the CBCT blur that paints past the metal (a
    PSF FWHM of up to 0.8 mm). Path: the shortest active length (first to last contact) less the
    thickest diameter, which the skeleton loses at the two ends.
    """
    from cochseg3d.electrodes import CATALOGUE

    widest = max(max(m.diameter_base_mm, m.diameter_tip_mm) for m in CATALOGUE)
    return widest / 2.0 + CBCT_BLUR_MM, min(m.active_length_mm for m in CATALOGUE) - widest


#: how far past the metal CBCT blur paints (PSF FWHM, mm): widens a painted array's radius
CBCT_BLUR_MM = 0.8
#: dropped chains smaller than this (mm^3) are noise, not metal worth reporting
OTHER_METAL_MIN_MM3 = 1.0
#: a second array this far (mm, centre to centre) from the first is the other ear's (bilateral scan):
#: the cochleae lie 60-100 mm apart, and one ear's other metal (screw, lead) within a few cm of its array
BILATERAL_MIN_MM = 40.0


def postprocess(
    mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    *,
    min_component_mm3: float = 0.2,
    keep_distance_mm: float = 3.0,
    max_tube_radius_mm: float | None = None,
    report: dict[str, Any] | None = None,
) -> np.ndarray:
    """Keep the electrode array: its main component and the pieces near it.

    Components smaller than ``min_component_mm3`` are dropped. The rest are grouped into chains whose
    gaps are at most ``keep_distance_mm`` (an array broken into pieces by partial-volume effects,
    or separate contacts blooming into blobs, stays whole). The array is the chain holding the
    longest thin path: a piece no deeper than a catalogue array can be painted
    (``max_tube_radius_mm``, default from :func:`_array_limits`) whose skeleton's longest path is at
    least the shortest catalogue array's. Chains without such a piece (a bone-anchored screw,
    dental fillings: short or thick) are dropped. When no chain qualifies, the chain with the most
    tube-like length (volume / inner radius^2 of its thin pieces) is kept instead: a spiral of
    separate contacts has no long piece. A scan of both ears keeps a second array: a chain at least
    ``BILATERAL_MIN_MM`` from the first that meets the catalogue's limits or holds at least half its
    thin length.

    Args:
        mask: boolean array [k, j, i].
        spacing_mm: voxel size in ITK order (i, j, k), mm.
        report: filled with ``array_rule`` ("catalogue": the kept, most tube-like chain meets the
            catalogue array's limits; "catalogue_disagrees": another chain does and this one does not;
            "tube_length": none does), ``array_path_mm`` (the kept chain's longest thin path),
            ``catalogue_path_mm`` (that of the chain the catalogue's limits would pick) and
            ``other_metal_mm3`` / ``n_other_metal`` (dropped chains of at least
            ``OTHER_METAL_MIN_MM3``), ``n_arrays`` (1, or 2 for a bilateral scan; 0 when empty).

    Returns:
        The cleaned boolean mask, same shape.
    """
    mask = np.asarray(mask, dtype=bool)
    report = {} if report is None else report
    report.update(array_rule=None, array_path_mm=0.0, other_metal_mm3=0.0, n_other_metal=0, n_arrays=0)
    if not mask.any():
        return mask.copy()
    radius, path = _array_limits()
    sampling = tuple(float(s) for s in spacing_mm[::-1])  # numpy axis order
    # work inside the mask's bounding box (plus the joining distance): memory stays ~ the array's size
    idx = np.nonzero(mask.any(axis=(1, 2))), np.nonzero(mask.any(axis=(0, 2))), np.nonzero(mask.any(axis=(0, 1)))
    box = tuple(slice(max(0, int(i[0].min()) - m), int(i[0].max()) + m + 1)
                for i, m in zip(idx, (int(math.ceil(keep_distance_mm / s)) + 1 for s in sampling)))
    out = np.zeros_like(mask)
    out[box] = _postprocess_crop(mask[box], sampling, min_component_mm3=min_component_mm3,
                                 keep_distance_mm=keep_distance_mm,
                                 max_tube_radius_mm=radius if max_tube_radius_mm is None else max_tube_radius_mm,
                                 min_path_mm=path, report=report)
    return out


def _longest_path_mm(piece: np.ndarray, sampling: tuple[float, ...]) -> float:
    """Length of the longest path along the 3D skeleton of one connected piece (mm)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components, dijkstra
    from scipy.spatial import cKDTree
    from skimage.morphology import skeletonize

    pts = np.argwhere(skeletonize(np.pad(piece, 1))) * np.asarray(sampling)
    if len(pts) < 2:  # thinning can erase an even-width bar: its principal extent instead
        vox = np.argwhere(piece) * np.asarray(sampling)
        axis = np.linalg.svd(vox - vox.mean(0), full_matrices=False)[2][0]
        return float(np.ptp(vox @ axis)) if len(vox) > 1 else 0.0
    pairs = cKDTree(pts).query_pairs(float(np.linalg.norm(sampling)) * 1.01, output_type="ndarray")
    if not len(pairs):
        return 0.0
    d = np.linalg.norm(pts[pairs[:, 0]] - pts[pairs[:, 1]], axis=1)
    graph = coo_matrix((d, (pairs[:, 0], pairs[:, 1])), shape=(len(pts),) * 2).tocsr()
    _, part = connected_components(graph, directed=False)
    best = 0.0
    for k in np.unique(part):  # two sweeps: exact on a tree, close on a skeleton's few loops
        nodes = np.nonzero(part == k)[0]
        far = nodes[np.argmax(dijkstra(graph, directed=False, indices=nodes[0])[nodes])]
        best = max(best, float(dijkstra(graph, directed=False, indices=far)[nodes].max()))
    return best


def _postprocess_crop(mask: np.ndarray, sampling: tuple[float, ...], *, min_component_mm3: float,
                      keep_distance_mm: float, max_tube_radius_mm: float, min_path_mm: float,
                      report: dict[str, Any]) -> np.ndarray:
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return mask
    voxel_mm3 = float(np.prod(sampling))
    sizes = np.bincount(labels.ravel())[1:] * voxel_mm3
    candidates = [c for c in range(1, n + 1) if sizes[c - 1] >= min_component_mm3]
    if not candidates:
        return np.zeros_like(mask)
    boxes = ndimage.find_objects(labels)
    thickness, path = _measure_pieces(labels, boxes, sizes, candidates, sampling,
                                      max_tube_radius_mm=max_tube_radius_mm, min_path_mm=min_path_mm)
    tubes = [c for c in candidates if thickness[c] <= max_tube_radius_mm] or candidates
    # volume / radius^2 ~ a tube's length
    length = {c: sizes[c - 1] / max(thickness[c], 1e-3) ** 2 for c in tubes}
    kept_mask = np.isin(labels, candidates)
    block = tuple(max(1, int(0.5 / s)) for s in sampling)
    grown_labels = _grown_labels(kept_mask, sampling, block, keep_distance_mm)
    chain: dict[int, list[int]] = {}
    for c in candidates:
        sl = boxes[c - 1]
        first = np.argwhere(labels[sl] == c)[0] + np.array([x.start for x in sl])
        chain.setdefault(int(grown_labels[tuple(first // np.array(block))]), []).append(c)
    longest = {g: max(path[c] for c in cs) for g, cs in chain.items()}
    # the most thin length in it: one long tube, or separate contacts blooming into blobs, a lead
    # whose last stretch is faint
    group_length = {g: sum(length.get(c, 0.0) for c in cs) for g, cs in chain.items()}
    kept = max(group_length, key=group_length.get)
    second = _second_array(chain, kept, longest, group_length, _chain_centres(labels, chain, sizes, sampling),
                           min_path_mm)
    arrays = (kept,) if second is None else (kept, second)
    _report_chains(chain, arrays, longest, sizes, min_path_mm, report)
    fine = np.repeat(np.repeat(np.repeat(np.isin(grown_labels, arrays), block[0], 0), block[1], 1), block[2], 2)
    return kept_mask & fine[: mask.shape[0], : mask.shape[1], : mask.shape[2]]


def _measure_pieces(labels: np.ndarray, boxes: list, sizes: np.ndarray, candidates: list[int],
                    sampling: tuple[float, ...], *, max_tube_radius_mm: float,
                    min_path_mm: float) -> tuple[dict[int, float], dict[int, float]]:
    """Per candidate piece: inner radius (mm) and longest skeleton path (mm, 0 unless thin)."""
    thickness, path = {}, {}
    for c in candidates:
        sl = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in boxes[c - 1])
        comp = np.pad(labels[sl] == c, 1)
        thickness[c] = float(ndimage.distance_transform_edt(comp, sampling=sampling).max())
        # a piece too small to hold the shortest array's path at one voxel's width is not measured
        thin = thickness[c] <= max_tube_radius_mm and sizes[c - 1] >= min_path_mm * min(sampling) ** 2
        path[c] = _longest_path_mm(labels[boxes[c - 1]] == c, sampling) if thin else 0.0
    return thickness, path


def _grown_labels(kept_mask: np.ndarray, sampling: tuple[float, ...], block: tuple[int, ...],
                  keep_distance_mm: float) -> np.ndarray:
    """Labels of the mask grown by half ``keep_distance_mm``, on a grid of ``block``-sized tiles."""
    # pieces within keep_distance_mm of each other touch once each grows by half that distance, so
    # each component of the grown mask collects one chain of nearby pieces. Growing is done on a
    # grid of ~0.5 mm blocks (max-pooled): distances stay right to a block while the distance
    # transform's memory shrinks by the block volume.
    coarse = _block_any(kept_mask, block)
    csampling = tuple(s * b for s, b in zip(sampling, block))
    grown = ndimage.distance_transform_edt(~coarse, sampling=csampling) <= keep_distance_mm / 2.0
    grown_labels, _ = ndimage.label(grown, structure=np.ones((3, 3, 3), bool))
    return grown_labels


def _report_chains(chain: dict[int, list[int]], arrays: tuple[int, ...], longest: dict[int, float],
                   sizes: np.ndarray, min_path_mm: float, report: dict[str, Any]) -> None:
    """What was kept (the array, or both arrays of a bilateral scan), what the catalogue would pick,
    and the other metal dropped, into ``report``."""
    # the catalogue's pick (a chain holding an array-long thin piece) is reported, not kept: on held-out
    # phantoms it rescued arrays beside dental fillings but lost a clean array painted as separate
    # contacts (BENCHMARKS.md, hard conditions), so where the two disagree QC asks for review
    candidates = [g for g in chain if longest[g] >= min_path_mm]
    catalogue = max(candidates, key=longest.get) if candidates else None
    dropped = [sum(sizes[c - 1] for c in cs) for g, cs in chain.items() if g not in arrays]
    dropped = [v for v in dropped if v >= OTHER_METAL_MIN_MM3]
    rule = "tube_length" if catalogue is None else "catalogue" if catalogue in arrays else "catalogue_disagrees"
    report.update(array_rule=rule, array_path_mm=round(longest[arrays[0]], 2), n_arrays=len(arrays),
                  catalogue_path_mm=round(longest[catalogue], 2) if catalogue is not None else 0.0,
                  other_metal_mm3=round(float(sum(dropped)), 2), n_other_metal=len(dropped))


def _chain_centres(labels: np.ndarray, chain: dict[int, list[int]], sizes: np.ndarray,
                   sampling: tuple[float, ...]) -> dict[int, np.ndarray]:
    """Each chain's centre of mass (mm, crop frame)."""
    comps = [c for cs in chain.values() for c in cs]
    centre = dict(zip(comps, ndimage.center_of_mass(labels > 0, labels, comps)))
    return {g: np.average([centre[c] for c in cs], axis=0, weights=[sizes[c - 1] for c in cs]) * np.asarray(sampling)
            for g, cs in chain.items()}


def _second_array(chain: dict[int, list[int]], kept: int, longest: dict[int, float], group_length: dict[int, float],
                  centres: dict[int, np.ndarray], min_path_mm: float) -> int | None:
    """The other ear's array in a scan of both, or None: far from the first, and array-like."""
    far = [g for g in chain if g != kept and np.linalg.norm(centres[g] - centres[kept]) >= BILATERAL_MIN_MM]
    arrays = [g for g in far if longest[g] >= min_path_mm or group_length[g] >= 0.5 * group_length[kept]]
    return max(arrays, key=group_length.get) if arrays else None


def _block_any(mask: np.ndarray, block: tuple[int, ...]) -> np.ndarray:
    """True where any voxel of a ``block``-sized tile is set (the array padded up to whole tiles)."""
    pad = [(0, (-n) % b) for n, b in zip(mask.shape, block)]
    m = np.pad(mask, pad)
    shape = [m.shape[0] // block[0], block[0], m.shape[1] // block[1], block[1], m.shape[2] // block[2], block[2]]
    return m.reshape(shape).any(axis=(1, 3, 5))
