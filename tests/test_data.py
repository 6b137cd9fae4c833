import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cochseg3d.config import config_from_dict
from cochseg3d.data import build_transforms, make_dataset, prepare, split_patients, stack_indices
from cochseg3d.preprocessing import Preprocessing
from cochseg3d.volume import Volume, canonical, write_image


def synthetic_patient(seed: int, *, shape=(20, 36, 36), spacing=0.5) -> tuple[Volume, Volume]:
    """A tiny axial CT (HU) of a head-like disc with a bright curved wire, and the wire's label."""
    rng = np.random.default_rng(seed)
    nk, nj, ni = shape
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    img = np.full(shape, -1000.0, dtype=np.float32)
    head = (j - nj / 2) ** 2 + (i - ni / 2) ** 2 < (0.45 * nj) ** 2
    img[head] = 40.0
    img[head & ((j - nj / 2) ** 2 + (i - ni / 2 + 4) ** 2 < 64)] = 900.0  # bone
    # a wire spiralling through the slices, offset per patient
    label = np.zeros(shape, dtype=np.uint8)
    c = rng.uniform(-3, 3, size=2)
    for kk in range(3, nk - 3):
        t = kk / nk * 2 * np.pi
        jj = int(round(nj / 2 + c[0] + 6 * np.cos(t)))
        ii = int(round(ni / 2 + c[1] + 6 * np.sin(t)))
        label[kk, jj - 1:jj + 1, ii - 1:ii + 1] = 1
    img[label > 0] = 3000.0
    img += rng.normal(0, 30, size=shape).astype(np.float32)
    origin = (-ni * spacing / 2, -nj * spacing / 2, 10.0 * seed)
    vol = Volume(img, (spacing, spacing, spacing), origin, np.eye(3))
    return vol, vol.with_array(label)


def write_cohort(root: Path, n: int, **kw) -> Path:
    """A cohort folder like the phantom writer's, with NIfTI images instead of DICOM."""
    entries = []
    for s in range(n):
        image, label = synthetic_patient(s, **kw)
        case = f"case{s:02d}"
        write_image(image, root / case / "image.nii.gz")
        write_image(label, root / case / "truth" / "label.nii.gz")
        entries.append({"case_id": case, "dicom": f"{case}/image.nii.gz", "label": f"{case}/truth/label.nii.gz"})
    (root / "cohort.json").write_text(json.dumps(entries))
    return root


def tiny_config(path: Path, **sections) -> "object":
    tree = {
        "data": {"source": "cohort", "path": str(path), "split": [0.6, 0.2, 0.2], "negative_fraction": 0.2,
                 "samples_per_slice": 2, "crop_margin_px": 2},
        "preprocessing": {"spacing_mm": 0.5, "roi_size": [32, 32], "context": 0},
        "model": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
        "train": {"epochs": 2, "batch_size": 4, "val_patient_every": 1},
    }
    for sec, vals in sections.items():
        tree.setdefault(sec, {}).update(vals)
    return config_from_dict(tree)


def test_split_is_by_patient_seeded_and_complete():
    ids = [f"p{i}" for i in range(20)]
    a = split_patients(ids, proportions=(0.8, 0.1, 0.1), seed=3)
    b = split_patients(list(reversed(ids)), proportions=(0.8, 0.1, 0.1), seed=3)
    assert a == b
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (16, 2, 2)
    assert sorted(sum(a.values(), [])) == sorted(ids)
    assert a != split_patients(ids, proportions=(0.8, 0.1, 0.1), seed=4)
    with pytest.raises(ValueError, match="cannot be split"):
        split_patients(["one", "two"], proportions=(0.8, 0.1, 0.1), seed=0)


def test_stack_indices_repeat_edges():
    assert stack_indices(0, 5, 2).tolist() == [0, 0, 0, 1, 2]
    assert stack_indices(4, 5, 1).tolist() == [3, 4, 4]


def test_prepare_cohort_items_and_2p5d_stacks(tmp_path):
    write_cohort(tmp_path, 5)
    cfg = tiny_config(tmp_path, preprocessing={"context": 1}, model={"name": "unet25d"})
    ds = prepare(cfg)
    assert sorted(sum(ds.split.values(), [])) == [f"case{i:02d}" for i in range(5)]
    train_cases = {it["case_id"] for it in ds.train_items}
    assert train_cases == set(ds.split["train"]) and not train_cases & set(ds.split["val"] + ds.split["test"])
    item = ds.train_items[0]
    pat = ds.patients[item["case_id"]]
    k = item["slice"]
    assert item["image"].shape[0] == 3
    np.testing.assert_array_equal(np.asarray(item["image"][1]), pat.image.array[k])
    np.testing.assert_array_equal(np.asarray(item["image"][0]), pat.image.array[max(k - 1, 0)])
    # every electrode slice is used, plus some background-only slices
    has = pat.label.array.reshape(pat.label.array.shape[0], -1).any(1)
    assert set(np.flatnonzero(has)) <= set(pat.slices) and len(pat.slices) > has.sum()


def test_transforms_match_preprocessing_normalize_and_keep_labels(tmp_path):
    write_cohort(tmp_path, 3)
    cfg = tiny_config(tmp_path, preprocessing={"spacing_mm": 0.25}, data={"split": [1, 1, 1]})
    ds = prepare(cfg)
    item = next(it for it in ds.val_items if it["label"].sum() > 0)
    out = build_transforms(cfg, train=False)(dict(item))
    img, lab = out["image"], out["label"]
    # 0.5 mm pixels resampled to 0.25 mm: about twice as many rows, minus the head crop, padded to /2
    assert img.shape[-1] % 2 == 0 and tuple(lab.shape) == (1, *img.shape[-2:])
    assert set(np.unique(lab.numpy())) <= {0.0, 1.0}
    # the wire keeps its physical area (4 px at 0.5 mm -> ~16 px at 0.25 mm)
    assert 8 <= lab.sum() <= 30
    pre = Preprocessing(window_hu=cfg.preprocessing.window_hu)
    hu = np.asarray(item["image"])
    assert np.isclose(float(img.max()), float(pre.normalize(hu).max()), atol=1e-3)
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0


def test_training_transforms_oversample_electrode(tmp_path):
    write_cohort(tmp_path, 3)
    cfg = tiny_config(tmp_path, data={"split": [1, 1, 1], "pos_neg_ratio": [1, 0], "samples_per_slice": 3})
    ds = prepare(cfg)
    dataset = make_dataset(ds.train_items, cfg, train=True)
    idx = next(n for n, it in enumerate(ds.train_items) if it["label"].sum() > 0)
    patches = dataset[idx]
    assert len(patches) == 3
    for p in patches:
        assert tuple(p["image"].shape) == (1, 32, 32) and isinstance(p["image"], torch.Tensor)
        assert p["label"].sum() > 0  # pos-only patch centres always contain electrode


def test_bad_input_is_named(tmp_path):
    missing = tmp_path / "nothere"
    with pytest.raises(FileNotFoundError, match="nothere"):
        prepare(tiny_config(missing))
    # a label on another grid than its image
    write_cohort(tmp_path, 3)
    image, label = synthetic_patient(1)
    shifted = Volume(label.array, label.spacing_mm, (label.origin_mm[0] + 5, *label.origin_mm[1:]), label.direction)
    write_image(shifted, tmp_path / "case01" / "truth" / "label.nii.gz")
    with pytest.raises(ValueError, match=r"case01/truth/label\.nii\.gz.*another grid"):
        prepare(tiny_config(tmp_path))


def test_png_folder(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for case in range(3):
        image, label = synthetic_patient(case)
        can, lab = canonical(image), canonical(label, is_label=True)
        for k in (8, 9, 10):
            grey = np.clip((can.array[k] + 1000) / 5000 * 255, 0, 255).astype(np.uint8)
            Image.fromarray(grey).save(tmp_path / "images" / f"pat{case}_{k}.png")
            Image.fromarray((lab.array[k] * 255).astype(np.uint8)).save(tmp_path / "masks" / f"pat{case}_{k}.png")
    cfg = tiny_config(tmp_path, data={"source": "png", "png_pixel_spacing_mm": 0.5})
    ds = prepare(cfg)
    assert len(ds.patients) == 3 and all(len(p.slices) == 3 for p in ds.patients.values())
    assert len(ds.train_items) == 3  # one patient's three slices, never split across parts
    # a mask of the wrong size is named
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(tmp_path / "masks" / "pat1_9.png")
    with pytest.raises(ValueError, match=r"pat1_9\.png: mask is 7x5"):
        prepare(cfg)


def test_annotation_store_uses_only_annotated_slices(tmp_path):
    from cochseg3d.annotation import save_annotation

    store = tmp_path / "store"
    store.mkdir()
    with pytest.raises(ValueError, match="no annotations found"):
        prepare(tiny_config(store, data={"source": "annotations"}))
    for case in range(3):
        image, label = synthetic_patient(case)
        path = write_image(image, tmp_path / f"img{case}.nii.gz")
        can = canonical(label, is_label=True).array
        save_annotation(can, image=image, store=store, annotated_slices=[5, 9, 12], case_id=f"pat{case}",
                        image_path=path)
    cfg = tiny_config(store, data={"source": "annotations"})
    ds = prepare(cfg)
    assert sorted(ds.patients) == ["pat0", "pat1", "pat2"]
    assert all(p.slices == [5, 9, 12] and not p.fully_labelled for p in ds.patients.values())
    assert sorted({it["slice"] for it in ds.train_items}) == [5, 9, 12]


def test_phantom_source_head_crop_keeps_every_electrode_pixel():
    from cochseg3d.data import load_patients, slice_items

    cfg = config_from_dict({
        "data": {"source": "phantom", "phantom_patients": 1, "negative_fraction": 0.1},
        "preprocessing": {"spacing_mm": 0.4, "roi_size": [64, 64]},
        "model": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
    })
    (patient,) = load_patients(cfg.data)
    assert patient.fully_labelled and patient.image.array.shape == patient.label.array.shape
    chain = build_transforms(cfg, train=False)
    items = slice_items(patient, context=0)[::3]
    kept = sum(float(chain(dict(it))["label"].sum()) for it in items)
    assert kept == sum(float(it["label"].sum()) for it in items) > 0
