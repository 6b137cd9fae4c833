"""The segmentation model as a MONAI Bundle, run by MONAI's own runner.

:func:`export_bundle` writes ``configs/metadata.json``, ``configs/inference.json`` (their content:
:mod:`cochseg3d.bundle_config`), ``models/model.pt`` (the U-Net's state dict), ``models/cochseg3d.pt``
(the full cochseg3d checkpoint, for ``cochseg3d segment --model``) and ``docs/README.md``. Then::

    python -m monai.bundle run --config_file OUT/configs/inference.json --dataset_dir IN/ [--output_dir X]

labels every ``IN/*.nii.gz`` as ``cochseg3d segment`` does. MONAI does the loading (``LoadImaged``),
the network (``monai.networks.nets.UNet``), batching (``Dataset``, ``DataLoader``,
``decollate_batch``), the threshold (``AsDiscreted``) and the writing (``SaveImaged``). The steps
MONAI has no transform for are the classes below, thin over cochseg3d's own functions: the coronal
stack and HU levels (:class:`CoronalStackd`), 2.5D slice stacking with the in-plane resampling
around MONAI's ``SliceInferer`` (:class:`CoronalSliceInferer`), keeping the electrode array
(:class:`KeepElectrodeArrayd`) and the way back onto the source grid (:class:`ToSourceGridd`);
:class:`LabelWriter` is the evaluator loop (``SupervisedEvaluator`` would need pytorch-ignite).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import MapTransform

from cochseg3d.bundle_config import BUNDLE_NAME, inference_config, metadata, readme
from cochseg3d.preprocessing import Preprocessing
from cochseg3d.volume import Grid, Volume

#: the files a complete bundle holds, relative to its root
BUNDLE_FILES = ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md")
#: written first and removed last by an export: its pid tells a killed export's folder from a user's
EXPORT_MARKER = ".cochseg3d-export-unfinished"
_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# --- MetaTensor <-> Volume ----------------------------------------------------------------------
def to_volume(image: torch.Tensor) -> Volume:
    """A channel-first MetaTensor (1, i, j, k) with a RAS affine as a :class:`Volume` (LPS)."""
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one channel of a 3D image (1, i, j, k), got shape {tuple(image.shape)}")
    lps = _LPS_RAS @ np.asarray(image.affine, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    array = np.asarray(image.detach().cpu().numpy()[0]).transpose(2, 1, 0)
    return Volume(array, tuple(spacing), tuple(lps[:3, 3]), lps[:3, :3] / spacing)


def to_metatensor(volume: Volume, meta: Mapping[str, Any] | None = None) -> MetaTensor:
    """``volume`` as a channel-first MetaTensor (1, i, j, k) with its RAS affine and ``meta``."""
    affine = torch.as_tensor(volume.affine_ras(), dtype=torch.float64)
    array = torch.from_numpy(np.ascontiguousarray(volume.array.transpose(2, 1, 0)[None]))
    out_meta = {k: v for k, v in (meta or {}).items() if k not in ("affine", "original_affine", "spatial_shape")}
    out_meta.update(original_affine=affine.clone(), spatial_shape=np.asarray(volume.size))
    return MetaTensor(array, affine=affine, meta=out_meta)


# --- the steps MONAI has no transform for -------------------------------------------------------
class CoronalStackd(MapTransform):
    """Reorient to the coronal stack (:func:`cochseg3d.volume.canonical`) and map grey values to HU.

    The source grid goes to ``data[key + "_source_grid"]`` (JSON text, which collates and decollates
    unchanged) for :class:`ToSourceGridd`.
    """

    def __init__(self, keys: Sequence[str] | str, preprocessing: Preprocessing | Mapping[str, Any]) -> None:
        super().__init__(keys)
        self.preprocessing = _preprocessing(preprocessing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from cochseg3d.volume import canonical

        d = dict(data)
        for key in self.key_iterator(d):
            volume = to_volume(d[key])
            can = self.preprocessing.hu(canonical(volume))
            d[f"{key}_source_grid"] = json.dumps(can.meta["source_grid"])
            d[key] = to_metatensor(can.with_array(can.array.astype(np.float32)), d[key].meta)
        return d


class CoronalSliceInferer(Inferer):
    """Electrode probability (B, 1, i, j, k) of canonical HU images (B, 1, i, j, k).

    :func:`cochseg3d.inference.predict_canonical` does the work: every coronal slice resampled in-plane
    to the model's pixel size, windowed, stacked with its neighbours as channels, and run through
    MONAI's ``SliceInferer`` (Gaussian-weighted sliding windows). An image without metal gets an empty
    map, as in ``cochseg3d segment``.
    """

    def __init__(self, preprocessing: Preprocessing | Mapping[str, Any], *, roi_size: Sequence[int] | None = None,
                 sw_batch_size: int = 16, overlap: float = 0.25) -> None:
        super().__init__()
        self.preprocessing = dataclasses.replace(_preprocessing(preprocessing), grey_levels="as_stored")
        self.roi_size = tuple(int(r) for r in roi_size) if roi_size else None
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = float(overlap)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        from cochseg3d.inference import empty_label_reason, predict_canonical

        out = torch.zeros_like(inputs, dtype=torch.float32)
        for b in range(inputs.shape[0]):
            volume = to_volume(inputs[b])
            if empty_label_reason(volume):
                continue
            prob = predict_canonical(network, volume, self.preprocessing, batch_size=self.sw_batch_size,
                                     overlap=self.overlap, device=inputs.device, roi_size=self.roi_size)
            out[b, 0] = torch.from_numpy(prob.transpose(2, 1, 0)).to(out.device)
        return out


class KeepElectrodeArrayd(MapTransform):
    """Keep the electrode array of a canonical 0/1 mask (:func:`cochseg3d.inference.postprocess`)."""

    def __init__(self, keys: Sequence[str] | str, *, min_component_mm3: float = 0.2,
                 keep_distance_mm: float = 3.0) -> None:
        super().__init__(keys)
        self.min_component_mm3 = float(min_component_mm3)
        self.keep_distance_mm = float(keep_distance_mm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from cochseg3d.inference import postprocess

        d = dict(data)
        for key in self.key_iterator(d):
            mask = to_volume(d[key])
            kept = postprocess(mask.array > 0.5, mask.spacing_mm, min_component_mm3=self.min_component_mm3,
                               keep_distance_mm=self.keep_distance_mm)
            d[key] = to_metatensor(mask.with_array(kept.astype(np.uint8)), d[key].meta)
        return d


class ToSourceGridd(MapTransform):
    """A canonical label back onto exactly the source grid (:func:`cochseg3d.volume.from_canonical`)."""

    def __init__(self, keys: Sequence[str] | str, grid_key: str = "image_source_grid") -> None:
        super().__init__(keys)
        self.grid_key = grid_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from cochseg3d.volume import from_canonical

        d = dict(data)
        source = Grid.from_dict(json.loads(d[self.grid_key]))
        for key in self.key_iterator(d):
            label = from_canonical(to_volume(d[key]), source, is_label=True)
            d[key] = to_metatensor(label.with_array(label.array.astype(np.uint8)), d[key].meta)
        return d


def _preprocessing(p: Preprocessing | Mapping[str, Any]) -> Preprocessing:
    return p if isinstance(p, Preprocessing) else Preprocessing.from_dict(dict(p))


class LabelWriter:
    """The bundle's evaluator: weights in, then each batch through the inferer and post-processing.

    What MONAI's ``SupervisedEvaluator`` does for inference, without its pytorch-ignite dependency:
    ``decollate_batch`` splits each batch into items for the (per-item) post-processing.
    """

    def __init__(self, dataloader: Any, network: torch.nn.Module, inferer: Inferer, postprocessing: Any,
                 ckpt_path: str | os.PathLike, device: str | torch.device = "cpu") -> None:
        self.dataloader, self.network, self.inferer = dataloader, network, inferer
        self.postprocessing, self.ckpt_path, self.device = postprocessing, Path(ckpt_path), torch.device(device)

    def run(self) -> int:
        """Label every item; returns how many."""
        from monai.data import decollate_batch

        state = torch.load(self.ckpt_path, map_location=self.device, weights_only=True)
        self.network.load_state_dict(state)
        self.network.to(self.device).eval()
        n = 0
        with torch.inference_mode():
            for batch in self.dataloader:
                batch["pred"] = self.inferer(batch["image"].to(self.device), self.network)
                for item in decollate_batch(batch):
                    self.postprocessing(item)
                    n += 1
        return n


# --- what inference.json calls ------------------------------------------------------------------
def running_bundle_root() -> str:
    """The root of the bundle MONAI's runner is running (it puts it on ``sys.path`` before ``run``).

    Raises:
        RuntimeError: no cochseg3d bundle on ``sys.path``: pass ``--bundle_root``.
    """
    for entry in [*sys.path[1:], *sys.path[:1]]:
        meta = Path(entry or ".") / "configs" / "metadata.json"
        try:
            if json.loads(meta.read_text()).get("name") == BUNDLE_NAME:
                return str(meta.parent.parent.resolve())
        except (OSError, ValueError, AttributeError):
            continue
    raise RuntimeError("cannot tell where this cochseg3d bundle lies; pass --bundle_root FOLDER")


def nifti_files(folder: str | os.PathLike) -> list[str]:
    """The ``*.nii.gz`` / ``*.nii`` files of ``folder``, sorted; an error naming it when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (--dataset_dir)")
    files = sorted(str(p) for p in folder.iterdir() if p.name.endswith((".nii.gz", ".nii")) and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no .nii.gz or .nii files to segment (--dataset_dir)")
    return files


# --- export and check ---------------------------------------------------------------------------
def export_bundle(out: str | os.PathLike, *, model: str | os.PathLike | None = None,
                  overwrite: bool = False) -> Path:
    """Write the bundle of ``model`` (default: the shipped model) into the folder ``out``.

    Raises:
        UserError: ``out`` is not empty (and not ``overwrite``), or ``model`` is not a cochseg3d
            model checkpoint.
    """
    from cochseg3d.cli import UserError
    from cochseg3d.inference import DEFAULT_MODEL, load_model
    from cochseg3d.utils import check_output_folder, display_path
    from cochseg3d.volume import atomic_write, remove_stale_temporaries

    out = check_output_folder(out)
    remove_stale_temporaries(out, recursive=True)  # what a killed export left half-written
    unfinished = _unfinished_export(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite and not unfinished:
        raise UserError(f"{display_path(out)}: folder is not empty; choose an empty one or pass --overwrite")
    path = Path(model) if model is not None else DEFAULT_MODEL
    try:
        network, pre, info = load_model(path)
    except (ValueError, KeyError, TypeError) as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise UserError(f"{display_path(path)}: not a cochseg3d model checkpoint ({reason})") from None
    roi = getattr(network, "cochseg3d_roi_size", None) or pre.roi_size
    out.mkdir(parents=True, exist_ok=True)
    marker = out / EXPORT_MARKER
    atomic_write(marker, lambda tmp: Path(tmp).write_text(json.dumps({"pid": os.getpid()})))
    texts = {
        "configs/metadata.json": json.dumps(metadata(info, pre, roi), indent=4) + "\n",
        "configs/inference.json": json.dumps(inference_config(info["model"], pre, roi), indent=4) + "\n",
        "docs/README.md": readme(info, pre, roi),
    }
    for rel, text in texts.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out / rel, lambda tmp, text=text: Path(tmp).write_text(text))
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    (out / "models").mkdir(parents=True, exist_ok=True)
    atomic_write(out / "models" / "model.pt", lambda tmp: torch.save(state, tmp))
    atomic_write(out / "models" / "cochseg3d.pt", lambda tmp: shutil.copyfile(path, tmp))
    check_bundle(out)
    marker.unlink()
    return out


def _unfinished_export(out: Path) -> bool:
    """True for a folder a killed export left: its marker names a dead process, and it holds nothing else.

    Raises:
        UserError: another export is writing into ``out`` now.
    """
    from cochseg3d.cli import UserError
    from cochseg3d.utils import display_path
    from cochseg3d.volume import process_alive

    marker = out / EXPORT_MARKER
    try:
        pid = int(json.loads(marker.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if pid != os.getpid() and process_alive(pid):
        raise UserError(f"{display_path(out)}: another export (pid {pid}) is writing into it; wait for it to end")
    files = {*BUNDLE_FILES, "models/cochseg3d.pt", EXPORT_MARKER}
    ours = files | {Path(f).parent.as_posix() for f in files} - {"."}
    return all(p.relative_to(out).as_posix() in ours for p in out.rglob("*"))


def check_bundle(folder: str | os.PathLike) -> Path:
    """Check that ``folder`` holds a complete cochseg3d bundle; returns it.

    Raises:
        UserError: naming the missing or unreadable file.
    """
    from cochseg3d.cli import UserError
    from cochseg3d.utils import display_path

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{display_path(folder)}: no such bundle folder")
    missing = [rel for rel in BUNDLE_FILES if not (folder / rel).is_file()]
    if missing:
        raise UserError(f"{display_path(folder)}: incomplete bundle, missing {', '.join(missing)}")
    for rel in ("configs/metadata.json", "configs/inference.json"):
        try:
            content = json.loads((folder / rel).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{display_path(folder / rel)}: not readable JSON ({exc})") from None
        if not isinstance(content, dict):
            raise UserError(f"{display_path(folder / rel)}: not a JSON object")
    meta = json.loads((folder / "configs/metadata.json").read_text())
    lacking = [k for k in ("version", "monai_version", "pytorch_version", "numpy_version", "task", "description",
                           "authors", "copyright", "network_data_format") if k not in meta]
    if lacking:
        raise UserError(f"{display_path(folder / 'configs/metadata.json')}: lacks {', '.join(lacking)}")
    try:
        state = torch.load(folder / "models/model.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise UserError(f"{display_path(folder / 'models/model.pt')}: cannot read the weights ({exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{display_path(folder / 'models/model.pt')}: not a state dict")
    return folder
