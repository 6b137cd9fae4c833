"""``cochseg3d.segment``: from a scan to its electrode label, contacts and QC verdict in one call.

input (:mod:`.dicom` ``load_input``) -> network and post-processing (:mod:`.inference`) -> contacts
(:mod:`.contacts`) -> QC (:mod:`.qc`) -> files (:mod:`.export`). The ``segment`` command, the demo and
the scripts all go through :func:`segment`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from cochseg3d.volume import Volume

if TYPE_CHECKING:
    import torch

    from cochseg3d.clinical.array_label import ArrayLabel
    from cochseg3d.contacts import Calibration, Contacts
    from cochseg3d.preprocessing import Preprocessing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """What :func:`segment` returns.

    Attributes:
        label: uint8 electrode label (0/1) on exactly the source grid.
        contacts: the contacts found on it (:class:`cochseg3d.contacts.Contacts`), apex -> base.
        qc: the QC verdict (``{"verdict": "ok" | "review" | "fail", "reasons": [...], ...}``);
            None with ``qc=False``.
        case_id: the sanitised case id the files are named by.
        files: what was written, by kind ("label", "contacts", "png", "seg", "probability"); empty
            when nothing was written.
        probability: the electrode probability on the source grid (``probabilities=True`` only).
        info: what was run (threshold, preprocessing, voxel count, volume in mm^3, QC measures).
        arrays: a scan of both ears (bilateral implants): each side's contacts ("right", "left");
            ``contacts`` then holds all of them, right array first. Empty for one array.
    """

    label: Volume
    contacts: "Contacts"
    qc: dict[str, Any] | None
    case_id: str
    files: Mapping[str, Path] = field(default_factory=dict)
    probability: Volume | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, "Contacts"] = field(default_factory=dict)


def resolve_device(device: str) -> str:
    """``"auto"`` -> "cuda" when a GPU is there, else "cpu"; any other name as given."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _model(model: "str | Path | torch.nn.Module | None", device: str) -> "torch.nn.Module":
    import torch

    from cochseg3d.inference import load_model

    if isinstance(model, torch.nn.Module):
        return model
    return load_model(model, device=device)[0]


def _check_output(source: Path, output: Path) -> None:
    """Refuse an output folder inside the input folder (a DICOM file's input is its folder)."""
    from cochseg3d.dicom import check_output_outside_input
    from cochseg3d.volume import is_image_file

    folder = source if source.is_dir() or is_image_file(source) else source.parent
    check_output_outside_input(folder, output)


def _contacts_and_verdict(res, volume: Volume, spec: dict[str, Any], cal: "Calibration", judge):
    """The contacts and QC verdict (``judge``: None without QC) of a segmentation; of a scan of both
    ears each array found and judged on its own. Returns ``(contacts, verdict, arrays by side)``."""
    from cochseg3d.contacts import find_contacts
    from cochseg3d.sides import merged_contacts, merged_verdict, split_result

    sides = split_result(res)
    if sides is None:
        contacts = find_contacts(res.label, volume, **spec, calibration=cal)
        return contacts, judge(res, contacts) if judge else None, {}
    arrays = {s: find_contacts(r.label, volume, **spec, calibration=cal) for s, r in sides.items()}
    verdict = merged_verdict({s: judge(r, arrays[s]) for s, r in sides.items()}) if judge else None
    return merged_contacts(arrays), verdict, arrays


def segment(
    input: str | Path | Volume,
    output: str | Path | None = None,
    *,
    model: "str | Path | torch.nn.Module | None" = None,
    electrode: str | None = None,
    device: str = "auto",
    calibration: "str | Path | Calibration | None" = None,
    qc: bool = True,
    png: bool = False,
    dicom_seg: bool = False,
    progress: bool = False,
    case_id: str | None = None,
    threshold: float = 0.5,
    batch_size: int = 16,
    overlap: float = 0.25,
    probabilities: bool = False,
    preprocessing: "Preprocessing | None" = None,
    qc_thresholds: Any | None = None,
    array_label: bool = True,
) -> Result:
    """Segment the electrode array of one patient: label on the source grid, contacts, QC verdict.

    Args:
        input: a DICOM folder (its main image series), a DICOM file (its series), a NIfTI / NRRD /
            MHA file, or a :class:`cochseg3d.Volume` (HU or scanner grey values).
        output: folder to write ``<case>.nii.gz`` and ``<case>.contacts.json`` (plus the PNG, DICOM
            SEG and probability map on request) into; None writes nothing. It must not lie inside
            the input folder.
        model: a checkpoint path, a network from :func:`cochseg3d.inference.load_model`, or None
            for the model shipped in the package.
        electrode: the implanted array, a vendor ("MED-EL", "Cochlear", "AB") or a catalogue model
            name: its contact count and pitch place contacts that CT cannot separate.
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1" ...
        calibration: the contact finder's calibration file (default: the one shipped).
        qc: judge the result (:func:`cochseg3d.qc.assess`, with ``qc_thresholds``, default shipped).
        png: write ``<case>.png``, a coronal preview with the label and contacts.
        dicom_seg: write ``<case>.seg.dcm`` referencing the source DICOM series.
        progress: progress bar over the slices.
        case_id: the name of the files (sanitised); default from the input.
        threshold, batch_size, overlap: electrode probability threshold; sliding-window patches per
            forward pass and their overlap fraction.
        probabilities: also return (and write, ``<case>.prob.nii.gz``) the probability map.
        preprocessing: override the model's own input preparation (test networks carry none).
        array_label: with ``output``, also write ``<case>.array.nii.gz``, the physical array fitted
            through the contacts (:mod:`cochseg3d.clinical.array_label`: contacts 1..N apex first,
            carrier N + 1) and its 3D Slicer colour table; contacts.json's ``array_label`` says why
            when there is none.

    Returns:
        :class:`Result` (label, contacts, qc, case_id, files).

    Raises:
        FileNotFoundError: ``input`` or ``model`` does not exist.
        ValueError: nothing loadable in ``input``; ``output`` inside it; an unknown ``electrode``;
            a bad calibration file (:class:`cochseg3d.contacts.CalibrationError`).

    Example:
        >>> import cochseg3d
        >>> res = cochseg3d.segment("/data/patient07", "seg/", electrode="FLEX28", png=True)  # doctest: +SKIP
        >>> res.qc["verdict"], len(res.contacts.lps_mm), res.files["label"]  # doctest: +SKIP
        ('ok', 12, PosixPath('seg/patient07.nii.gz'))
    """
    from cochseg3d.contacts import Calibration, electrode_spec
    from cochseg3d.inference import run_segmentation
    from cochseg3d.utils import sanitize_case_id

    t0 = time.perf_counter()
    cal = calibration if isinstance(calibration, Calibration) else Calibration.load(calibration)
    spec = electrode_spec(electrode) if electrode else {}  # a typo fails before any work
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    source = None if isinstance(input, Volume) else Path(input)
    if source is not None and output is not None:
        _check_output(source, Path(output))
    device = resolve_device(device)
    net = _model(model, device)
    volume = input if source is None else _load(source)
    case = sanitize_case_id(case_id or volume.meta.get("case_id") or (source.name if source else "case"))
    res = run_segmentation(volume, net, preprocessing=preprocessing, device=device, threshold=threshold,
                           batch_size=batch_size, overlap=overlap, probabilities=probabilities, progress=progress)
    judge = (lambda r, c: _judge(r, c, volume, spec, cal, electrode, qc_thresholds)) if qc else None
    contacts, verdict, arrays = _contacts_and_verdict(res, volume, spec, cal, judge)
    files = {} if output is None else _write(Path(output), case, volume, res, contacts, verdict, electrode=electrode,
                                             model_path=getattr(net, "cochseg3d_path", None), png=png,
                                             dicom_seg=dicom_seg, array_label=array_label, arrays=arrays)
    # the input path goes to the log only: folder names often hold a patient's name
    log.info("%s -> %s: %d electrode voxels (%.1f mm^3), %d contacts (%s) in %.1f s", source or "volume", case,
             res.info["voxels"], res.info["volume_mm3"], len(contacts.lps_mm), contacts.method,
             time.perf_counter() - t0)
    info = {**res.info, "seconds": round(time.perf_counter() - t0, 2)}
    return Result(label=res.label, contacts=contacts, qc=verdict, case_id=case, files=files,
                  probability=res.probability, info=info, arrays=arrays)


def _load(source: Path) -> Volume:
    from cochseg3d.dicom import load_input

    return load_input(source)


def _judge(res: Any, contacts: "Contacts", volume: Volume, spec: dict[str, Any], cal: "Calibration",
           electrode: str | None, thresholds: Any | None) -> dict[str, Any]:
    """The QC verdict of one result, as contacts.json records it."""
    from cochseg3d.contacts import find_contacts
    from cochseg3d.qc import assess

    # how far the contacts move at other probability thresholds: the network's doubt where it matters
    moved = [find_contacts(alt, volume, **spec, calibration=cal) for alt in res.alternates.values()]
    return assess(res.label, contacts, info=res.info, electrode=electrode, thresholds=thresholds,
                  alternate_contacts=moved).to_json()


def fitted_array(contacts: "Contacts", label: Volume, case: str) -> "ArrayLabel":
    """The physical array fitted through the contacts, or why there is none (never raises for its input)."""
    from cochseg3d.clinical.array_label import ArrayLabel, fit_array_label

    try:
        array = fit_array_label(contacts, label)
    except ValueError as exc:  # e.g. two contacts at one place: the other files are still written
        array = ArrayLabel(None, reason=f"not fitted ({exc})")
    if array.label is None:
        log.info("%s: no fitted array label (%s)", case, array.reason)
    return array


def _write(out: Path, case: str, volume: Volume, res: Any, contacts: "Contacts", verdict: dict[str, Any] | None, *,
           electrode: str | None, model_path: str | None, png: bool, dicom_seg: bool,
           array_label: bool = True, arrays: Mapping[str, "Contacts"] | None = None) -> dict[str, Path]:
    from cochseg3d.export import contacts_record, write_outputs
    from cochseg3d.sides import merged_array_label, side_records

    series = {k: volume.meta.get(k) for k in ("series_uid", "series_number", "series_description", "modality")}
    record = contacts_record(contacts, case_id=case, series=series, electrode=electrode,
                             label_volume_mm3=res.info["volume_mm3"], model=model_path, qc=verdict, image=volume)
    if arrays:
        record.update(bilateral=True, arrays=side_records(arrays, volume))
    array = None if not array_label else (
        merged_array_label({s: fitted_array(c, res.label, f"{case} {s}") for s, c in arrays.items()}) if arrays
        else fitted_array(contacts, res.label, case))
    if array is not None:
        record["array_label"] = array.to_json()
    return write_outputs(out, case, image=volume, label=res.label, record=record, contacts_lps_mm=contacts.lps_mm,
                         probability=res.probability, png=png, dicom_seg=dicom_seg, array=array)


def summary(result: Result) -> dict[str, Any]:
    """One patient's line of summary.json: case id, series, voxels, contacts, QC, files (no input path)."""
    meta = result.label.meta
    return {"case_id": result.case_id, "series_uid": meta.get("series_uid"),
            "series_description": meta.get("series_description"), "voxels": result.info["voxels"],
            "volume_mm3": result.info["volume_mm3"], "n_contacts": int(len(result.contacts.lps_mm)),
            "contacts_method": result.contacts.method, "seconds": result.info.get("seconds"),
            "qc": result.qc, "files": {k: str(v) for k, v in result.files.items()}}


def segment_path(
    source: str | Path,
    out_dir: str | Path,
    model: "torch.nn.Module",
    *,
    preprocessing: "Preprocessing | None" = None,
    device: str = "cpu",
    threshold: float = 0.5,
    batch_size: int = 16,
    overlap: float = 0.25,
    probabilities: bool = False,
    seg_dicom: bool = False,
    png: bool = True,
    electrode: str | None = None,
    case_id: str | None = None,
    model_info: dict[str, Any] | None = None,
    qc_thresholds: Any | None = None,
    calibration: str | Path | None = None,
) -> dict[str, Any]:
    """:func:`segment` of one patient into ``out_dir`` with the preview on; returns its :func:`summary`.

    Kept for the scripts; ``model_info`` is no longer needed (the model's path comes from
    :func:`cochseg3d.inference.load_model`).
    """
    res = segment(source, out_dir, model=model, preprocessing=preprocessing, device=device, threshold=threshold,
                  batch_size=batch_size, overlap=overlap, probabilities=probabilities, dicom_seg=seg_dicom,
                  png=png, electrode=electrode, case_id=case_id, qc_thresholds=qc_thresholds,
                  calibration=calibration)
    return summary(res)
