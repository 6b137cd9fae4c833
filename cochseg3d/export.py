"""Everything ``segment`` writes: the label as NIfTI, contacts JSON, preview PNG, DICOM SEG.

Each writer is atomic (a temporary beside the target, then a rename), so a killed run leaves the
old file or the new one. Records carry the sanitised case id, never the input path (folder names
often hold a patient's name); the path goes to the log only.
"""

from __future__ import annotations

import json
import math
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cochseg3d.volume import Volume, atomic_write, canonical, write_image

log = logging.getLogger(__name__)

#: contacts.json's description of its two coordinate lists
COORDINATE_SYSTEMS = {"lps": "DICOM/ITK patient LPS, mm", "ras": "NIfTI/3D Slicer RAS, mm"}
#: a patient's files in an output folder, ``<case><suffix>``, by the kind write_outputs returns them under
OUTPUT_SUFFIXES = {"label": ".nii.gz", "probability": ".prob.nii.gz", "contacts": ".contacts.json",
                   "markups": ".contacts.mrk.json", "contacts_csv": ".contacts.csv", "png": ".png", "seg": ".seg.dcm",
                   "array": ".array.nii.gz", "array_colors": ".array.ctbl"}


#: the grey-value window of the previews: bone and metal apart
PREVIEW_WINDOW_HU = (-500.0, 3000.0)


def output_path(out_dir: str | Path, case_id: str, kind: str) -> Path:
    """Where :func:`write_outputs` puts the patient's file of ``kind`` (a key of OUTPUT_SUFFIXES)."""
    return Path(out_dir) / f"{case_id}{OUTPUT_SUFFIXES[kind]}"


def write_label(label: Volume, path: str | Path) -> Path:
    """The label (or probability map) as NIfTI on its own grid."""
    return write_image(label, Path(path))


def contacts_record(contacts: Any, *, case_id: str, series: dict[str, Any], electrode: str | None,
                    label_volume_mm3: float, model: str | None, qc: dict[str, Any] | None,
                    image: Any = None) -> dict[str, Any]:
    """The contacts.json record: case id, series, contacts in LPS and RAS, the QC verdict, and the
    cochlear measures (the round window measured on ``image`` when given)."""
    record = contacts.to_json(case_id=case_id, series=series, coordinate_systems=COORDINATE_SYSTEMS,
                              electrode_hint=electrode, label_volume_mm3=label_volume_mm3, model=model)
    if qc is not None:
        record["qc"] = qc
    record["arrays"] = _arrays(contacts, case_id, image)
    return record


def _arrays(contacts: Any, case_id: str, image: Any = None) -> list[dict[str, Any]]:
    """Issue 13's per-array measures in the cochlear frame; a failure there costs the measures only."""
    from cochseg3d.clinical import measure_arrays

    if not len(contacts.lps_mm):
        return []
    try:
        return measure_arrays(contacts, image)["arrays"]
    except Exception as exc:  # the label and contacts are still written
        log.warning("%s: cochlear measures not computed (%s)", case_id, exc)
        return []


def write_json(record: Any, path: str | Path) -> Path:
    """``record`` as indented JSON (contacts.json, summary.json)."""
    text = json.dumps(record, indent=1)
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))


def electrode_slab(mask: np.ndarray, *, slice_spacing_mm: float, pad_mm: float = 1.0) -> tuple[int, int]:
    """Coronal slices ``[k0, k1)`` spanning a canonical mask plus ``pad_mm`` (the middle one if empty)."""
    ks = np.flatnonzero(np.asarray(mask).any(axis=(1, 2)))
    if not ks.size:
        k0 = mask.shape[0] // 2
        return k0, k0 + 1
    pad = int(math.ceil(pad_mm / slice_spacing_mm))
    return max(0, int(ks.min()) - pad), min(mask.shape[0], int(ks.max()) + pad + 1)


def preview_png(
    image: Volume,
    label: Volume,
    path: str | Path,
    *,
    contacts_lps_mm: np.ndarray | None = None,
    title: str = "",
    window_hu: tuple[float, float] = PREVIEW_WINDOW_HU,
) -> Path:
    """Coronal slab MIP through the electrode with the label outline (and contacts), as PNG.

    The slab spans the label's anterior-posterior extent plus 1 mm; the left panel shows the whole
    coronal field, the right one zooms onto the array. Axes are in mm (patient right on the left of
    the image, superior up, as a radiologist reads a coronal view).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    can = canonical(image)
    lab = canonical(label, is_label=True).array > 0
    sx, sy, sz = can.spacing_mm  # cols (R->L), rows (S->I), slices (A->P)
    k0, k1 = electrode_slab(lab, slice_spacing_mm=sz)
    mip = can.array[k0:k1].max(axis=0).astype(np.float32)
    lab_mip = lab[k0:k1].any(axis=0)
    extent = (-0.5 * sx, (mip.shape[1] - 0.5) * sx, (mip.shape[0] - 0.5) * sy, -0.5 * sy)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), dpi=100)
    for n, ax in enumerate(axes):
        ax.imshow(mip, cmap="gray", vmin=window_hu[0], vmax=window_hu[1], extent=extent, interpolation="nearest")
        if lab_mip.any():
            ax.contour(np.arange(mip.shape[1]) * sx, np.arange(mip.shape[0]) * sy, lab_mip.astype(float),
                       levels=[0.5], colors="red", linewidths=0.8)
        if contacts_lps_mm is not None and len(contacts_lps_mm):
            ijk = can.lps_to_index(np.asarray(contacts_lps_mm))
            ax.plot(ijk[:, 0] * sx, ijk[:, 1] * sy, "o", ms=3 if n else 1.5, mfc="none", mec="yellow", mew=0.8)
            ax.plot(ijk[0, 0] * sx, ijk[0, 1] * sy, "o", ms=5 if n else 2.5, mfc="none", mec="cyan", mew=1.0)
        ax.set_xlabel("mm (patient right -> left)")
        ax.set_ylabel("mm (superior -> inferior)")
    if lab_mip.any():
        rows, cols = np.nonzero(lab_mip)
        m = 3.0
        axes[1].set_xlim(cols.min() * sx - m, cols.max() * sx + m)
        axes[1].set_ylim(rows.max() * sy + m, rows.min() * sy - m)
        axes[1].set_title("electrode (cyan: most apical contact)")
    axes[0].set_title(title or f"coronal MIP, slices {k0}-{k1 - 1}")
    fig.tight_layout()
    out = Path(path)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return out


def write_dicom_seg(label: Volume, source_folder: str | Path, series_uid: str, path: str | Path) -> Path:
    """DICOM SEG (binary, highdicom) of ``label`` referencing the source series' images.

    Each source image is matched to the label's slice at its ImagePositionPatient, so the SEG is
    only written when the label lies on the series' own grid (as :func:`cochseg3d.segment` delivers it).

    Raises:
        ValueError: the series is not found in ``source_folder`` or its slices do not fall on the
            label's grid.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from cochseg3d import __version__
    from cochseg3d.dicom import discover

    logging.getLogger("highdicom").setLevel(max(logging.WARNING, logging.getLogger("highdicom").level))
    found = [s for s in discover(source_folder) if s.series_uid == series_uid]
    if not found:
        raise ValueError(f"{source_folder}: series {series_uid} not found; cannot reference it in a DICOM SEG")
    headers = [h for s in found for h in s.slices]
    datasets = [pydicom.dcmread(h.path) for h in headers]
    frames = np.zeros((len(datasets), *label.array.shape[1:]), dtype=np.uint8)
    for n, ds in enumerate(datasets):
        ijk = label.lps_to_index(np.asarray(ds.ImagePositionPatient, dtype=float))
        k = int(round(float(ijk[2])))
        if np.abs(ijk - [0, 0, k]).max() > 1e-2 or not 0 <= k < label.array.shape[0]:
            raise ValueError(f"{headers[n].path}: slice not on the label's grid; DICOM SEG needs the source grid")
        if (int(ds.Rows), int(ds.Columns)) != label.array.shape[1:]:
            raise ValueError(f"{headers[n].path}: {ds.Rows}x{ds.Columns} differs from the label's slice size")
        frames[n] = label.array[k] > 0
    algo = hd.AlgorithmIdentificationSequence(
        name="cochseg3d", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="electrode array",
        segmented_property_category=hd.sr.CodedConcept("260787004", "SCT", "Physical object"),
        segmented_property_type=hd.sr.CodedConcept("43252007", "SCT", "Cochlear prosthesis"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo,
    )
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=hd.UID(),
        series_number=9901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="cochseg3d",
        manufacturer_model_name="cochseg3d segment",
        software_versions=__version__,
        device_serial_number="none",
        series_description="cochseg3d electrode",
        omit_empty_frames=False,
    )
    return atomic_write(Path(path), lambda tmp: seg.save_as(tmp))


def write_outputs(out_dir: str | Path, case_id: str, *, image: Volume, label: Volume, record: dict[str, Any],
                  contacts_lps_mm: np.ndarray | None = None, probability: Volume | None = None,
                  png: bool = True, dicom_seg: bool = False, array: Any = None) -> dict[str, Path]:
    """One patient's files in ``out_dir``: ``<case>.nii.gz``, ``<case>.contacts.json`` and on request
    ``<case>.prob.nii.gz``, ``<case>.png`` and ``<case>.seg.dcm``; with the array measured, its 3D Slicer
    markups ``<case>.contacts.mrk.json`` and per-contact table ``<case>.contacts.csv``; with ``array``
    (a :class:`cochseg3d.clinical.array_label.ArrayLabel` holding a label), the fitted physical array
    ``<case>.array.nii.gz`` and its 3D Slicer colour table ``<case>.array.ctbl``.

    The DICOM SEG references ``image``'s source series (``image.meta["source"]`` and
    ``["series_uid"]``); an image that is not a DICOM series gets none, with a warning.

    ``<case>.contacts.json`` is removed first and written last: its presence says the patient's files
    are complete (a resumed cohort run skips such patients).

    Returns:
        What was written, by kind ("label", "probability", "contacts", "markups", "contacts_csv", "png",
        "seg", "array", "array_colors"): the 3D Slicer markups and the per-contact CSV where the array
        could be measured, the fitted array where one could be fitted.
    """
    def path(kind: str) -> Path:
        return output_path(out_dir, case_id, kind)

    marker = path("contacts")
    marker.unlink(missing_ok=True)  # it marks the patient done (cohort_summary): gone first, written last
    files = {"label": write_label(label, path("label"))}
    if probability is not None:
        files["probability"] = write_label(probability, path("probability"))
    if record.get("arrays"):
        from cochseg3d.clinical.markups import write_contacts_csv, write_markups

        arrays = {"arrays": record["arrays"]}
        files["markups"] = write_markups(path("markups"), arrays, case_id=case_id)
        files["contacts_csv"] = write_contacts_csv(path("contacts_csv"), arrays)
    if array is not None and array.label is not None:
        from cochseg3d.clinical.array_label import colour_table

        files["array"] = write_label(array.label, path("array"))
        text = colour_table(array.names)
        files["array_colors"] = atomic_write(path("array_colors"), lambda tmp: Path(tmp).write_text(text))
    else:  # an earlier run's fitted array is not this run's
        path("array").unlink(missing_ok=True)
        path("array_colors").unlink(missing_ok=True)
    series = record.get("series") or {}
    if png:
        title = f"{case_id}: {series.get('series_description') or case_id} ({record['n_contacts']} contacts)"
        files["png"] = preview_png(image, label, path("png"), contacts_lps_mm=contacts_lps_mm, title=title)
    if dicom_seg:
        source = image.meta.get("source")
        if not series.get("series_uid") or not source:
            log.warning("%s: not a DICOM series; no DICOM SEG written", source or case_id)
        else:
            files["seg"] = write_dicom_seg(label, source, series["series_uid"], path("seg"))
    files["contacts"] = write_json(record, marker)
    return files
