"""What a cochseg3d MONAI Bundle's files say: ``inference.json``, ``metadata.json``, ``docs/README.md``.

:mod:`cochseg3d.bundle` holds the steps ``inference.json`` names and writes these files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from cochseg3d.preprocessing import Preprocessing

#: ``name`` in metadata.json: how :func:`cochseg3d.bundle.running_bundle_root` recognises a cochseg3d bundle
BUNDLE_NAME = "cochseg3d electrode segmentation"
#: metadata schema (MONAI's bundle specification, the one with ``required_packages_version``)
META_SCHEMA = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
               "meta_schema_20240725.json")


def inference_config(model_cfg: Mapping[str, Any], pre: Preprocessing, roi: Sequence[int]) -> dict[str, Any]:
    """inference.json: MONAI's evaluator over ``dataset_dir``, labels to ``output_dir``."""
    from cochseg3d.models import resolve_model_cfg

    cfg = resolve_model_cfg(model_cfg)
    net = {"_target_": "monai.networks.nets.UNet", "spatial_dims": 2,
           **{k: cfg[k] for k in ("in_channels", "out_channels", "channels", "strides", "kernel_size",
                                  "num_res_units", "act", "norm", "dropout")}}
    image = "@image_key"
    return {
        "imports": ["$import numpy", "$import cochseg3d", "$import cochseg3d.bundle"],
        "bundle_root": "$cochseg3d.bundle.running_bundle_root()",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "dataset_dir": "$@bundle_root + '/input'",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$cochseg3d.bundle.nifti_files(@dataset_dir)",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "image_key": "image",
        "cochseg3d_preprocessing": pre.to_dict(),
        "threshold": 0.5,
        "network_def": net,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": image, "reader": "ITKReader", "dtype": None, "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": image},
            {"_target_": "cochseg3d.bundle.CoronalStackd", "keys": image,
             "preprocessing": "@cochseg3d_preprocessing"},
        ]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': f} for f in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "cochseg3d.bundle.CoronalSliceInferer", "preprocessing": "@cochseg3d_preprocessing",
                    "roi_size": [int(r) for r in roi], "sw_batch_size": 16, "overlap": 0.25},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "AsDiscreted", "keys": "pred", "threshold": "@threshold"},
            {"_target_": "cochseg3d.bundle.KeepElectrodeArrayd", "keys": "pred", "min_component_mm3": 0.2,
             "keep_distance_mm": 3.0},
            {"_target_": "cochseg3d.bundle.ToSourceGridd", "keys": "pred", "grid_key": "image_source_grid"},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "output_ext": ".nii.gz", "output_dtype": "$numpy.uint8", "separate_folder": False,
             "resample": False, "writer": "ITKWriter", "print_log": False},
        ]},
        "evaluator": {"_target_": "cochseg3d.bundle.LabelWriter", "dataloader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "ckpt_path": "@ckpt_path", "device": "@device"},
        "run": ["$@evaluator.run()"],
    }


def metadata(info: Mapping[str, Any], pre: Preprocessing, roi: Sequence[int]) -> dict[str, Any]:
    """metadata.json after MONAI's bundle schema; provenance and limits from the checkpoint."""
    import monai
    import SimpleITK

    import cochseg3d

    prov = info.get("provenance") or {}
    k = int(pre.context)
    channels = {str(c): f"coronal slice {'k' if c == k else f'k{c - k:+d}'} (HU window {pre.window_hu[0]:g}.."
                f"{pre.window_hu[1]:g} scaled to 0..1)" for c in range(2 * k + 1)}
    return {
        "schema": META_SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by cochseg3d {cochseg3d.__version__}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"cochseg3d": cochseg3d.__version__, "itk": _version("itk"),
                                      "SimpleITK": SimpleITK.__version__, "scipy": _version("scipy"),
                                      "scikit-image": _version("scikit-image")},
        "name": BUNDLE_NAME,
        "task": "Cochlear-implant electrode array segmentation in temporal-bone CBCT / CT",
        "description": (f"MONAI 2D U-Net over every coronal slice, {2 * k + 1} neighbouring coronal slices as "
                        f"channels, pixels resampled to {pre.spacing_mm:g} mm, sliding windows of {list(roi)}; "
                        "the electrode array kept by post-processing; the label is written on the source "
                        "grid. The coronal reorientation, grey-level mapping, 2.5D stacking and array "
                        "post-processing are cochseg3d functions called from inference.json (cochseg3d is "
                        "a required package)."),
        "authors": "cochseg3d contributors",
        "copyright": "Copyright (c) cochseg3d contributors",
        "data_source": str(prov.get("training_data", "see docs/README.md")),
        "data_type": "nifti",
        "image_classes": "single channel CT in HU (or scanner grey values), any orientation",
        "label_classes": "single channel, 1 is the electrode array, 0 is everything else",
        "pred_classes": "2 channels of logits per coronal slice: 0 background, 1 electrode",
        "eval_metrics": {f"{name}_{k}": v for name, row in evaluation(info).items() for k, v in row.items()
                         if k != "n"},
        "intended_use": str(prov.get("limits", "research use; not validated on patient scans")),
        "cochseg3d_provenance": {key: prov[key] for key in ("seed", "patients", "command", "date", "epochs_run")
                                 if key in prov},
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT",
                                 "num_channels": 2 * k + 1, "spatial_shape": [int(r) for r in roi],
                                 "dtype": "float32", "value_range": [0, 1], "is_patch_data": True,
                                 "channel_def": channels}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                                 "spatial_shape": [int(r) for r in roi], "dtype": "float32",
                                 "value_range": [0, 1], "is_patch_data": True,
                                 "channel_def": {"0": "background", "1": "electrode"}}},
        },
    }


def readme(info: Mapping[str, Any], pre: Preprocessing, roi: Sequence[int]) -> str:
    """docs/README.md: what runs, how to run it, where the model comes from, its limits."""
    prov = info.get("provenance") or {}
    lines = [
        "# cochseg3d electrode segmentation (MONAI Bundle)", "",
        f"Exported from `{Path(str(info.get('path', 'model'))).name}` by `cochseg3d export-bundle`.", "",
        "## Run", "",
        "```",
        "python -m monai.bundle run --config_file configs/inference.json --dataset_dir IN/ --output_dir OUT/",
        "```", "",
        "Every `IN/*.nii.gz` (and `*.nii`) gets `OUT/<name>_seg.nii.gz`: a 0/1 uint8 label on the input's "
        "own grid (size, spacing, origin, direction), the label `cochseg3d segment` writes for that file. "
        "The bundle's root is found on MONAI's `sys.path`; pass `--bundle_root FOLDER` to set it.", "",
        "MONAI's command line needs `fire` (`pip install fire`); in Python, "
        "`monai.bundle.run(config_file=..., dataset_dir=..., output_dir=...)` needs nothing more.", "",
        "## What runs", "",
        "MONAI: `LoadImaged` (ITK reader), `EnsureChannelFirstd`, `Dataset`, `DataLoader`, "
        "`monai.networks.nets.UNet` (2D; `models/model.pt` is its state dict), `SliceInferer` (inside the "
        "inferer), `decollate_batch`, `AsDiscreted` (threshold), `SaveImaged` (ITK writer). The evaluator "
        "(`LabelWriter`) is a short loop doing what `SupervisedEvaluator` does, without pytorch-ignite.", "",
        "cochseg3d (a required package; MONAI has no transform for these): `CoronalStackd` (reorientation "
        "to the coronal stack, oblique scans resampled once; grey values to HU), `CoronalSliceInferer` "
        f"(in-plane resampling to {pre.spacing_mm:g} mm, HU window {list(pre.window_hu)} to 0..1, "
        f"{pre.in_channels} neighbouring coronal slices as channels, sliding windows of {list(roi)} with "
        "overlap 0.25; an image without metal gets an empty label), `KeepElectrodeArrayd` (keeps the "
        "electrode array, drops other metal and noise; a second array of a bilateral scan is dropped), "
        "`ToSourceGridd` (back onto the source grid).", "",
        "`models/cochseg3d.pt` is the same model as a cochseg3d checkpoint (`cochseg3d segment --model`), "
        "which also finds contacts and judges the result (QC); the bundle writes the label only.", "",
        "## Provenance", "",
    ]
    lines += [f"- {key}: {prov[key]}" for key in ("training_data", "patients", "seed", "command", "date", "epochs_run")
              if key in prov] or ["- not recorded in the checkpoint"]
    results = evaluation(info)
    if results:
        lines += ["", "## Held-out phantom results (blind contacts)", "",
                  "| set | patients | Dice | surface Dice 1 mm | contact recall | contact error (mm) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {name} | {row.get('n', '')} | " + " | ".join(str(row.get(k, "")) for k in _EVAL_KEYS) + " |"
                  for name, row in results.items()]
    synthetic = "synthetic" in str(prov.get("training_data", "synthetic"))
    lines += ["", "## Limits", "", str(prov.get("limits", "research use; not validated on patient scans")) + "."]
    if synthetic:
        lines.append("Trained on synthetic phantoms: real CBCT differs (scanner artefacts, other implants, "
                     "malformations, motion). Use it to bootstrap annotation and as a baseline, not for clinical "
                     "decisions; fine-tune on annotated patient data before relying on it.")
    lines += ["Post-processing keeps one array: the second array of a bilateral scan is dropped.", ""]
    return "\n".join(lines)


_EVAL_KEYS = ("dice", "surface_dice_1mm", "contact_recall", "contact_error_mm")


def evaluation(info: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Held-out results per set (all patients, contacts blind) from the JSON beside the checkpoint
    (``weights/default.json`` for the shipped model); empty when there is none."""
    import json

    try:
        sets = json.loads(Path(str(info["path"])).with_suffix(".json").read_text())["evaluation"]["sets"]
        out = {}
        for name, result in sets.items():
            row = next(r for r in result["summary_contacts_blind"] if r.get("case_id") == "ALL")
            out[name] = {"n": int(row["n"]), **{k: round(float(row[k]), 3) for k in _EVAL_KEYS if k in row}}
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StopIteration):
        return {}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


