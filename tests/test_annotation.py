"""Annotation without a GUI: pre-fill scopes, the store round trip, PNG / labelme I/O."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cochseg3d.annotation import (
    AnnotationSession,
    Autosaver,
    accept_prediction,
    export_pngs,
    find_annotations,
    load_annotation,
    parse_slice_name,
    prediction_slices,
    prefill,
    prefill_canonical,
    read_labelme,
    read_slice_masks,
    save_annotation,
)
from cochseg3d.volume import Volume, canonical, write_image

# LPS direction of an axial-like acquisition whose j axis points anterior: canonical reorders it
_DIRECTION = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])


def _image(tmp_path=None, *, seed: int = 0) -> Volume:
    """A 14x16x18 (k, j, i) volume: soft tissue, a bone slab and two metal blobs, HU."""
    rng = np.random.default_rng(seed)
    a = rng.normal(30.0, 20.0, (14, 16, 18)).astype(np.float32)
    a[:, :, 2:5] = 1500.0  # bone
    a[4:7, 5:8, 9:12] = 3200.0  # electrode part (27 voxels)
    a[10, 12, 14] = 3200.0  # a single bright speck
    vol = Volume(a, (0.4, 0.5, 0.6), (10.0, -20.0, 5.0), _DIRECTION, {"case_id": "P01"})
    if tmp_path is not None:
        path = write_image(vol, tmp_path / "P01.nii.gz")
        vol.meta["source"] = str(path)
    return vol


def test_prefill_scopes_roi_and_min_size() -> None:
    can = canonical(_image()).array
    full = prefill_canonical(can, threshold_hu=2500.0, min_size_voxels=1)
    assert full.sum() == 28 and full.dtype == np.uint8
    assert prefill_canonical(can, threshold_hu=2500.0, min_size_voxels=4).sum() == 27  # speck dropped
    ks = np.flatnonzero(full.reshape(full.shape[0], -1).any(1))
    one = prefill_canonical(can, threshold_hu=2500.0, slices=int(ks[0]), min_size_voxels=1)
    assert one.sum() == full[ks[0]].sum() and one[ks[0] + 1:].sum() == 0
    rng = prefill_canonical(can, threshold_hu=2500.0, slices=(int(ks[1]), int(ks[0])), min_size_voxels=1)
    assert rng.sum() == full[ks[0]:ks[1] + 1].sum()
    rows, cols = np.nonzero(full.any(0))
    box = (0, full.shape[1], 0, int(cols.min()) + 1)  # only the leftmost metal column
    roi = prefill_canonical(can, threshold_hu=2500.0, roi=box, min_size_voxels=1)
    assert 0 < roi.sum() < full.sum() and roi[:, :, int(cols.min()) + 1:].sum() == 0
    with pytest.raises(ValueError, match="outside"):
        prefill_canonical(can, threshold_hu=2500.0, slices=99)


def test_prefill_returns_label_on_source_grid() -> None:
    img = _image()
    lab = prefill(img, threshold_hu="auto")
    assert lab.grid.allclose(img.grid) and lab.array.dtype == np.uint8
    assert lab.array[4:7, 5:8, 9:12].all() and lab.array.sum() == 27  # bone not painted
    assert 1500.0 < lab.meta["threshold_hu"] < 3200.0
    with pytest.raises(ValueError, match="auto"):
        prefill(img, threshold_hu="bright")


def test_store_round_trip_and_backup(tmp_path) -> None:
    img = _image(tmp_path)
    s = AnnotationSession(img, store=tmp_path / "store")
    s.prefill(threshold_hu="auto")
    k = int(np.flatnonzero(s.label.reshape(s.shape[0], -1).any(1))[0])
    s.label[k, 0, 0] = 1  # a painted pixel
    s.mark(k)
    p1 = s.save()
    ann = load_annotation(p1)
    assert ann.label.grid.allclose(img.grid)  # source grid, not canonical
    assert np.array_equal(ann.canonical_label(), s.label)
    assert ann.annotated_slices == [k] and ann.case_id == "P01"
    assert ann.image_path.resolve() == (tmp_path / "P01.nii.gz").resolve()
    assert ann.record["threshold_hu"] == pytest.approx(s.threshold_hu)
    # reopen in a fresh session: identical labels
    s2 = AnnotationSession.open(tmp_path / "P01.nii.gz", store=tmp_path / "store")
    assert np.array_equal(s2.label, s.label) and s2.annotated == {k}
    # overwriting keeps a backup of the previous generation
    s2.label[k, 0, 0] = 0
    s2.save()
    backups = sorted((tmp_path / "store" / "backups").glob("P01.*.label.nii.gz"))
    assert len(backups) == 1 and load_annotation(p1).canonical_label()[k, 0, 0] == 0
    assert find_annotations(tmp_path) == [p1]
    with pytest.raises(ValueError, match="outside"):
        save_annotation(s.label, image=img, store=tmp_path / "store", annotated_slices=[99])


def test_load_rejects_foreign_json(tmp_path) -> None:
    p = tmp_path / "x.annotation.json"
    p.write_text(json.dumps({"shapes": []}))
    with pytest.raises(ValueError, match="not a cochseg3d annotation"):
        load_annotation(p)
    with pytest.raises(FileNotFoundError):
        load_annotation(tmp_path / "missing.annotation.json")


def test_autosaver_saves_only_when_dirty_and_due() -> None:
    now = [0.0]
    calls = []
    a = Autosaver(lambda: calls.append(now[0]), interval_s=10.0, clock=lambda: now[0])
    now[0] = 20.0
    assert not a.maybe_save()  # nothing edited
    a.mark_dirty()
    assert a.maybe_save() and calls == [20.0]
    a.mark_dirty()
    now[0] = 25.0
    assert not a.maybe_save()  # too soon
    now[0] = 31.0
    assert a.maybe_save() and calls == [20.0, 31.0]


def test_png_export_import_keeps_orientation(tmp_path) -> None:
    label = np.zeros((5, 6, 9), np.uint8)
    label[3, 1, 7] = 1  # superior row, towards patient left: an asymmetric pixel
    label[3, 4, 0:2] = 1
    paths = export_pngs(label, slices=[3], out_dir=tmp_path / "masks", case_id="P/01")
    assert [p.name for p in paths] == ["P_01_3.png"]
    png = np.asarray(Image.open(paths[0]))
    assert png.shape == (6, 9) and png.dtype == np.uint8 and set(np.unique(png)) == {0, 255}
    assert png[1, 7] == 255 and png[4, 0] == 255 and png[1, 1] == 0
    back = read_slice_masks([tmp_path / "masks"], shape=label.shape)
    assert list(back) == [3] and np.array_equal(back[3], label[3] > 0)
    assert parse_slice_name("case_with_underscores_12.png") == ("case_with_underscores", 12)
    export_pngs(label, slices=[3], out_dir=tmp_path / "masks", case_id="P/01")  # unchanged: no backup
    assert not (tmp_path / "masks" / "backups").exists()
    label[3, 0, 0] = 1
    export_pngs(label, slices=[3], out_dir=tmp_path / "masks", case_id="P/01")  # changed: old one kept
    (old,) = (tmp_path / "masks" / "backups").glob("*/P_01_3.png")
    assert np.array_equal(np.asarray(Image.open(old)), png)
    assert list(read_slice_masks([tmp_path / "masks"], shape=label.shape)) == [3]  # backups/ not read
    Image.fromarray(np.zeros((9, 6), np.uint8)).save(tmp_path / "P_01_2.png")  # transposed size
    with pytest.raises(ValueError, match="6x9"):
        read_slice_masks([tmp_path / "P_01_2.png"], shape=label.shape)


def test_labelme_polygon_and_circle(tmp_path) -> None:
    doc = {
        "imageHeight": 20, "imageWidth": 30, "imagePath": "c_4.png",
        "shapes": [
            {"label": "electrode", "shape_type": "polygon", "points": [[2, 3], [8, 3], [8, 6], [2, 6]]},
            {"label": "Electrode", "shape_type": "circle", "points": [[20, 12], [22, 12]]},
            {"label": "bone", "shape_type": "polygon", "points": [[0, 15], [5, 15], [5, 19]]},
        ],
    }
    p = tmp_path / "c_4.json"
    p.write_text(json.dumps(doc))
    m = read_labelme(p, slice_shape=(20, 30))
    assert m[3:7, 2:9].all() and m[:, :2].sum() == 0  # polygon: x = column, y = row
    assert m[12, 20] and m[12, 22] and m[10, 20] and not m[12, 24]  # circle of radius 2
    assert m[15:, :6].sum() == 0  # "bone" shapes are not electrode
    masks = read_slice_masks([p], shape=(8, 20, 30))
    assert list(masks) == [4]
    with pytest.raises(ValueError, match="20x30"):
        read_labelme(p, slice_shape=(30, 20))


def test_review_accepts_prediction_slices() -> None:
    pred = np.zeros((4, 5, 5), np.float32)
    pred[1, 2, 2] = 0.9
    pred[2, 0, 0] = 0.3
    assert prediction_slices(pred) == [1]
    label = np.zeros((4, 5, 5), np.uint8)
    label[1, 4, 4] = 1
    assert accept_prediction(label, pred, slices=[1]) == [1]
    assert label[1, 2, 2] == 1 and label[1, 4, 4] == 0 and label.sum() == 1


def test_cli_prefill_writes_label_on_input_grid(tmp_path, capsys) -> None:
    from cochseg3d.cli import main
    from cochseg3d.volume import read_image

    img = _image(tmp_path)
    out = tmp_path / "pre.nii.gz"
    assert main(["prefill", str(tmp_path / "P01.nii.gz"), str(out), "--threshold-hu", "2500"]) == 0
    lab = read_image(out)
    assert lab.grid.allclose(img.grid) and lab.array.sum() == 27
    assert "27 voxels" in capsys.readouterr().out
    assert main(["prefill", str(tmp_path / "P01.nii.gz"), str(out)]) == 2  # exists: needs --force
    assert main(["prefill", str(tmp_path / "P01.nii.gz"), str(out), "--force", "--slices", "0:0"]) == 0
    assert read_image(out).array.sum() == 0 and (tmp_path / "pre.nii.gz.bak").exists()
    assert main(["prefill", str(tmp_path / "P01.nii.gz"), str(out), "--force", "--roi", "0:2,0:2"]) == 0
    assert read_image(out).array.sum() == 0  # the box holds no metal
    assert main(["prefill", str(tmp_path / "P01.nii.gz"), str(out), "--force", "--roi", "0:99,0:99"]) == 0
    assert read_image(out).array.sum() == 27
    assert main(["prefill", str(tmp_path / "missing.nii.gz"), str(tmp_path / "x.nii.gz")]) == 2
    assert main(["annotate", str(tmp_path / "missing.nii.gz")]) == 2
    assert "missing.nii.gz: no such file" in capsys.readouterr().err


def test_oblique_series_reopens_exactly(tmp_path) -> None:
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("xz", [20.0, 10.0], degrees=True).as_matrix()
    a = np.random.default_rng(3).normal(30.0, 20.0, (10, 12, 14)).astype(np.float32)
    a[3:7, 4:8, 5:9] = 3200.0
    img = Volume(a, (0.5, 0.5, 0.5), (1.0, 2.0, 3.0), rot, {"case_id": "OBL"})
    s = AnnotationSession(img, store=tmp_path)
    s.prefill(threshold_hu=2500.0, min_size_voxels=1)
    assert s.label.sum() > 0
    s.label[0, 0, 0] = 1  # a lone painted voxel: lost by resampling, kept by the canonical copy
    s.mark(int(np.flatnonzero(s.label.reshape(s.shape[0], -1).any(1))[-1]))
    p = s.save()
    ann = load_annotation(p)
    assert ann.label.grid.allclose(img.grid)  # the label overlays the oblique source
    assert (tmp_path / "OBL.canonical-label.nii.gz").exists()
    s2 = AnnotationSession(img, store=tmp_path)
    s2.load()
    assert np.array_equal(s2.label, s.label) and s2.annotated == s.annotated


def test_cli_prefill_dicom_folder_label_overlays_series(tmp_path) -> None:
    import SimpleITK as sitk

    from cochseg3d.cli import main
    from cochseg3d.phantom.dicom_write import write_series
    from cochseg3d.volume import read_image

    img = _image()
    write_series(img, tmp_path / "DICOM", patient_id="P 01", uid_seed="prefill-cli")
    out = tmp_path / "pre.nii.gz"
    assert main(["prefill", str(tmp_path / "DICOM"), str(out), "--threshold-hu", "auto"]) == 0
    lab = read_image(out)
    reader = sitk.ImageSeriesReader()
    series = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(tmp_path / "DICOM")))
    ref = Volume.from_sitk(series)
    assert lab.grid.allclose(ref.grid)  # same size, spacing, origin and direction as the series
    blob = ref.array >= 2500
    blob[10, 12, 14] = False  # the lone speck, below the minimum component size
    assert np.array_equal(lab.array > 0, blob) and lab.array.sum() == 27


def test_backups_keep_the_newest_generations(tmp_path) -> None:
    img = _image(tmp_path)
    label = np.zeros(canonical(img).array.shape, np.uint8)
    for n in range(4):
        label[0, 0, n] = 1
        save_annotation(label, image=img, store=tmp_path / "s", annotated_slices=[0], keep_backups=2)
    gens = sorted((tmp_path / "s" / "backups").glob("P01.*.label.nii.gz"))
    assert len(gens) == 2 and len(list((tmp_path / "s" / "backups").glob("P01.*.annotation.json"))) == 2
    newest = load_annotation(tmp_path / "s" / "P01.annotation.json").canonical_label()
    assert newest[0, 0, :4].tolist() == [1, 1, 1, 1]
    from cochseg3d.volume import read_image

    assert read_image(gens[-1]).array.sum() == 3  # the previous save, three pixels
