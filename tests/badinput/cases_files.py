"""The corpus's other kinds: NIfTI, PNG / labelme training folders, configs, cohort files, paths."""

from __future__ import annotations

import json

import numpy as np

import build as b
from cases import P, _converted_size, _every_file, _with_extra, case


# --- NIfTI -------------------------------------------------------------------------------------------
def _nii(root, name="ct.nii.gz", **kw) -> Path:
    return b.nifti(root / "in" / name, **kw)


@case("nifti", "error", "ct.nii.gz", "truncated")
def nifti_truncated_gz_prefill(root):
    b.truncate(_nii(root), 0.6)
    return ["prefill", "in/ct.nii.gz", "out/label.nii.gz"]


@case("nifti", "error", "ct.nii.gz", "truncated")
def nifti_truncated_gz_coronal(root):
    b.truncate(_nii(root), 0.6)
    return ["coronal", "in/ct.nii.gz", "out"]


@case("nifti", "error", "ct.nii.gz", "gzip")
def nifti_gz_crc_broken(root):
    p = _nii(root)
    b.flip_byte(p, 0.5)
    return ["prefill", "in/ct.nii.gz", "out/label.nii.gz"]


@case("nifti", "error", "ct.nii.gz", "gzip")
def nifti_gz_last_bytes_cut(root):
    b.truncate(_nii(root), -4)
    return ["coronal", "in/ct.nii.gz", "out"]


@case("nifti", "error", "ct.nii", "truncated")
def nifti_plain_truncated(root):
    b.truncate(_nii(root, "ct.nii"), 0.5)
    return ["prefill", "in/ct.nii", "out/label.nii.gz"]


@case("nifti", "error", "ct.nii.gz", "empty")
def nifti_empty_file(root):
    (root / "in").mkdir()
    (root / "in" / "ct.nii.gz").write_bytes(b"")
    return ["prefill", "in/ct.nii.gz", "out/label.nii.gz"]


@case("nifti", "error", "ct.nii", "not a NIfTI file")
def nifti_random_bytes(root):
    (root / "in").mkdir()
    (root / "in" / "ct.nii").write_bytes(bytes(range(256)) * 3)
    return ["coronal", "in/ct.nii", "out"]


@case("nifti", "error", "ct.nii.gz", "2D")
def nifti_2d(root):
    _nii(root, arr=np.zeros((16, 16), np.int16), spacing=(0.4, 0.4))
    return ["prefill", "in/ct.nii.gz", "out/label.nii.gz"]


@case("nifti", "error", "ct.nii.gz", "4D")
def nifti_4d(root):
    import SimpleITK as sitk

    p = root / "in" / "ct.nii.gz"
    p.parent.mkdir(parents=True)
    sitk.WriteImage(sitk.Image([8, 8, 8, 3], sitk.sitkInt16), str(p))
    return ["coronal", "in/ct.nii.gz", "out"]


@case("nifti", "error", "ct.nii.gz", "components")
def nifti_vector_image(root):
    import SimpleITK as sitk

    p = root / "in" / "ct.nii.gz"
    p.parent.mkdir(parents=True)
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 3), str(p))
    return ["prefill", "in/ct.nii.gz", "out/label.nii.gz"]


@case("nifti", "error", "ct.nii.gz", "spacing")
def nifti_zero_spacing(root):
    p = _nii(root)
    import nibabel  # noqa: F401  (only to check the case can be built)
    img = nibabel.load(str(p))
    img.header["pixdim"][1:4] = [0, 0, 0]
    nibabel.save(img, str(p))
    return ["prefill", "in/ct.nii.gz", "out/label.nii.gz"]


@case("nifti", "error", "ct.txt", "neither an image file nor readable DICOM")
def nifti_wrong_suffix(root):
    (root / "in").mkdir()
    (root / "in" / "ct.txt").write_text("x")
    return ["prefill", "in/ct.txt", "out/label.nii.gz"]


# --- PNG / labelme training folders --------------------------------------------------------------------
def _png_train(root, **train) -> list[str]:
    b.png_config(root / "in" / "cfg.yaml", root / "in" / "png", **train)
    return ["train", "--config", "in/cfg.yaml", "--out", "out/run", "--no-progress"]


@case("png", "error", "p1_0.png", "not a readable PNG")
def png_truncated_image(root):
    d = b.png_folder(root / "in" / "png")
    b.truncate(d / "images" / "p1_0.png", 0.5)
    return _png_train(root)


@case("png", "error", "p0_0.png", "not a readable PNG")
def png_text_as_mask(root):
    d = b.png_folder(root / "in" / "png")
    (d / "masks" / "p0_0.png").write_text("not a picture")
    return _png_train(root)


@case("png", "error", "p0_0.png", "empty file")
def png_empty_image(root):
    d = b.png_folder(root / "in" / "png")
    (d / "images" / "p0_0.png").write_bytes(b"")
    return _png_train(root)


@case("png", "error", "p1_0.png", "mask missing")
def png_mask_missing(root):
    d = b.png_folder(root / "in" / "png")
    (d / "masks" / "p1_0.png").unlink()
    return _png_train(root)


@case("png", "error", "p0_0.png", "pixels")
def png_mask_wrong_size(root):
    from PIL import Image

    d = b.png_folder(root / "in" / "png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "masks" / "p0_0.png")
    return _png_train(root)


@case("png", "error", "images", "no PNG images")
def png_no_images(root):
    d = b.png_folder(root / "in" / "png", n=0)
    return _png_train(root)


@case("png", "error", "p0_0.png", "named pipe")
def png_fifo_in_training_folder(root):
    d = b.png_folder(root / "in" / "png")
    (d / "masks" / "p0_0.png").unlink()
    b.fifo(d / "masks" / "p0_0.png")
    return _png_train(root)


# --- configs -------------------------------------------------------------------------------------------
def _cfg(root, text: str) -> list[str]:
    p = root / "in" / "cfg.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return ["train", "--config", "in/cfg.yaml", "--out", "out/run", "--no-progress"]


@case("config", "error", "preprocessing.spacing_mm", "cfg.yaml", "> 0")
def config_negative_spacing(root):
    return _cfg(root, "preprocessing:\n  spacing_mm: -0.4\n")


@case("config", "error", "train.epochs", ">= 1")
def config_negative_epochs(root):
    return _cfg(root, "train:\n  epochs: -5\n")


@case("config", "error", "train.lr", ">= 0")
def config_negative_lr(root):
    return _cfg(root, "train:\n  lr: -0.001\n")


@case("config", "error", "train.lr", "finite")
def config_nan_lr(root):
    return _cfg(root, "train:\n  lr: .nan\n")


@case("config", "error", "preprocessing.roi_size", ">= 1")
def config_zero_roi(root):
    return _cfg(root, "preprocessing:\n  roi_size: [0, 0]\n")


@case("config", "error", "data.split")
def config_split_above_one(root):
    return _cfg(root, "data:\n  split: [1.5, -0.25, -0.25]\n")


@case("config", "error", "train.batch_size", ">= 1")
def config_zero_batch(root):
    return _cfg(root, "train:\n  batch_size: 0\n")


@case("config", "error", "data.augment.flip_lr_prob", "between 0 and 1")
def config_probability_above_one(root):
    return _cfg(root, "data:\n  augment:\n    flip_lr_prob: 3\n")


@case("config", "error", "preprocessing.window_hu", "low < high")
def config_window_reversed(root):
    return _cfg(root, "preprocessing:\n  window_hu: [4000, -1000]\n")


@case("config", "error", "train.lr", "must be a number")
def config_string_number(root):
    return _cfg(root, "train:\n  lr: fast\n")


@case("config", "error", "cfg.yaml", "not valid YAML")
def config_not_yaml(root):
    return _cfg(root, "train: [epochs: 3\n  : :\n")


@case("config", "error", "cfg.yaml", "mapping")
def config_list_not_mapping(root):
    return _cfg(root, "- 1\n- 2\n")


@case("config", "error", "train.epochz", "unknown config key")
def config_unknown_key(root):
    return _cfg(root, "train:\n  epochz: 3\n")


@case("config", "error", "train.epochs", "--set")
def config_bad_override(root):
    return _cfg(root, "train:\n  epochs: 1\n") + ["--set", "train.epochs=-2"]


@case("config", "error", "nothere.yaml", "no such config")
def config_missing_file(root):
    (root / "in").mkdir()
    return ["train", "--config", "in/nothere.yaml", "--out", "out/run"]


@case("config", "error", "in/cfgdir", "config")
def config_is_a_folder(root):
    (root / "in" / "cfgdir").mkdir(parents=True)
    return ["train", "--config", "in/cfgdir", "--out", "out/run"]


# --- cohort files (evaluate) ---------------------------------------------------------------------------
def _evaluate(root) -> list[str]:
    return ["evaluate", "in/pred", "in/truth", "-o", "out/eval"]


@case("cohort", "error", "cohort.json", "list")
def cohort_is_a_dict(root):
    truth, _ = b.truth_cohort(root)
    (truth / "cohort.json").write_text(json.dumps({"c1": {"label": "c1/truth/label.nii.gz"}}))
    return _evaluate(root)


@case("cohort", "error", "cohort.json", "'label'")
def cohort_entry_without_label(root):
    truth, _ = b.truth_cohort(root)
    (truth / "cohort.json").write_text(json.dumps([{"case_id": "c1"}]))
    return _evaluate(root)


@case("cohort", "error", "cohort.json", "'case_id'")
def cohort_entry_without_case_id(root):
    truth, _ = b.truth_cohort(root)
    (truth / "cohort.json").write_text(json.dumps([{"label": "c1/truth/label.nii.gz"}]))
    return _evaluate(root)


@case("cohort", "error", "cohort.json", "not valid JSON")
def cohort_not_json(root):
    truth, _ = b.truth_cohort(root)
    (truth / "cohort.json").write_text("[{")
    return _evaluate(root)


@case("cohort", "error", "cohort.json", "entry 0")
def cohort_entry_is_a_string(root):
    truth, _ = b.truth_cohort(root)
    (truth / "cohort.json").write_text(json.dumps(["c1"]))
    return _evaluate(root)


@case("cohort", "error", "cohort.json", "outside")
def cohort_label_outside_truth_folder(root):
    truth, _ = b.truth_cohort(root)
    (truth / "cohort.json").write_text(json.dumps([{"case_id": "c1", "label": "../../../x.nii.gz"}]))
    return _evaluate(root)


@case("cohort", "error", "c1.contacts.json", "contacts_lps_mm")
def cohort_pred_contacts_without_key(root):
    truth, pred = b.truth_cohort(root)
    (pred / "c1.contacts.json").write_text(json.dumps({"contacts": []}))
    return _evaluate(root)


@case("cohort", "error", "contacts.json", "not valid JSON")
def cohort_truth_contacts_broken(root):
    truth, pred = b.truth_cohort(root)
    (truth / "c1" / "truth" / "contacts.json").write_text("{")
    return _evaluate(root)


@case("cohort", "error", "c1.nii.gz", "truncated")
def cohort_prediction_truncated(root):
    truth, pred = b.truth_cohort(root)
    b.truncate(pred / "c1.nii.gz", 0.5)
    return _evaluate(root)


@case("cohort", "error", "c1.nii.gz", "no prediction")
def cohort_prediction_missing(root):
    truth, pred = b.truth_cohort(root)
    (pred / "c1.nii.gz").unlink()
    return _evaluate(root)


@case("cohort", "error", "in/nopred", "no such folder")
def cohort_pred_folder_missing(root):
    b.truth_cohort(root)
    return ["evaluate", "in/nopred", "in/truth", "-o", "out/eval"]


# --- paths: outputs that are files, inputs that are not ------------------------------------------------
def _out_file(root) -> None:
    (root / "out").write_text("keep me\n")


def _out_file_kept(root: Path) -> None:
    assert (root / "out").read_text() == "keep me\n", "the regular file at OUT was changed"


@case("paths", "error", "out", "not a folder", check=_out_file_kept)
def paths_convert_output_is_file(root):
    b.patient(root)
    _out_file(root)
    return ["convert", P, "out"]


@case("paths", "error", "out", "not a folder", check=_out_file_kept)
def paths_coronal_output_is_file(root):
    b.patient(root)
    _out_file(root)
    return ["coronal", P, "out"]


@case("paths", "error", "out", "not a folder", check=_out_file_kept)
def paths_prefill_output_parent_is_file(root):
    _nii(root)
    _out_file(root)
    return ["prefill", "in/ct.nii.gz", "out/label.nii.gz"]


@case("paths", "error", "out", "not a folder", check=_out_file_kept)
def paths_evaluate_output_parent_is_file(root):
    b.truth_cohort(root)
    _out_file(root)
    return ["evaluate", "in/pred", "in/truth", "-o", "out/eval"]


@case("paths", "error", "out", "not a folder", check=_out_file_kept)
def paths_train_output_is_file(root):
    args = _png_train(root)
    b.png_folder(root / "in" / "png")
    _out_file(root)
    return args[:-3] + ["--out", "out", "--no-progress"]


@case("paths", "error", "inside the input folder")
def paths_convert_output_inside_input(root):
    b.patient(root)
    return ["convert", P, f"{P}/converted"]


@case("paths", "error", "label.nii.gz", "exists")
def paths_prefill_output_exists(root):
    _nii(root)
    (root / "out").mkdir()
    (root / "out" / "label.nii.gz").write_text("old")
    return ["prefill", "in/ct.nii.gz", "out/label.nii.gz"]


@case("paths", "error", "/dev/null", "not a regular file")
def paths_device_as_input(root):
    (root / "in").mkdir()
    return ["prefill", "/dev/null", "out/label.nii.gz"]


@case("paths", "error", "/dev/null", "not a folder")
def paths_device_as_folder(root):
    (root / "in").mkdir()
    return ["inspect", "/dev/null"]


@case("paths", "error", "nothere.nii.gz", "no such")
def paths_missing_input_prefill(root):
    (root / "in").mkdir()
    return ["prefill", "in/nothere.nii.gz", "out/label.nii.gz"]


@case("paths", "error", "in/nothere", "no such")
def paths_missing_input_coronal(root):
    (root / "in").mkdir()
    return ["coronal", "in/nothere", "out"]


@case("cohort", "error", "cohort.json", "entry 0", "'dicom'")
def cohort_train_source_entry_without_dicom(root):
    truth, _ = b.truth_cohort(root)
    (truth / "cohort.json").write_text(json.dumps([{"case_id": "c1", "label": "c1/truth/label.nii.gz"}]))
    return _cfg(root, f"data:\n  source: cohort\n  path: {truth}\ntrain:\n  device: cpu\n")


@case("cohort", "error", "cohort.json", "list")
def cohort_train_source_is_a_dict(root):
    truth, _ = b.truth_cohort(root)
    (truth / "cohort.json").write_text(json.dumps({"cases": []}))
    return _cfg(root, f"data:\n  source: cohort\n  path: {truth}\ntrain:\n  device: cpu\n")
