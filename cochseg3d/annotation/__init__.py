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

Modules: ``prefill`` (threshold pre-fill), ``store`` (label + record, backups, image loading),
``masks`` (PNG / labelme I/O), ``session`` (prediction review, autosave, the widget's state).
"""

from cochseg3d.annotation.masks import (
    ELECTRODE_LABELS,
    export_pngs,
    parse_slice_name,
    read_labelme,
    read_png_mask,
    read_slice_masks,
    slice_png_name,
)
from cochseg3d.annotation.prefill import (
    Box,
    SliceRange,
    as_canonical,
    prefill,
    prefill_canonical,
    prefill_region,
    resolve_threshold,
    roi_mask,
    scope_range,
)
from cochseg3d.annotation.session import AnnotationSession, Autosaver, accept_prediction, prediction_slices
from cochseg3d.annotation.store import (
    BACKUP_DIR,
    CANONICAL_LABEL_SUFFIX,
    LABEL_SUFFIX,
    RECORD_FORMAT,
    RECORD_SUFFIX,
    RECORD_VERSION,
    Annotation,
    case_id_for,
    find_annotations,
    load_annotation,
    load_image,
    record_paths,
    save_annotation,
)

__all__ = [
    "ELECTRODE_LABELS", "export_pngs", "parse_slice_name", "read_labelme", "read_png_mask", "read_slice_masks",
    "slice_png_name", "Box", "SliceRange", "as_canonical", "prefill", "prefill_canonical", "prefill_region",
    "resolve_threshold", "roi_mask", "scope_range", "AnnotationSession", "Autosaver", "accept_prediction",
    "prediction_slices", "BACKUP_DIR", "CANONICAL_LABEL_SUFFIX", "LABEL_SUFFIX", "RECORD_FORMAT", "RECORD_SUFFIX",
    "RECORD_VERSION", "Annotation", "case_id_for", "find_annotations", "load_annotation", "load_image",
    "record_paths", "save_annotation",
]
