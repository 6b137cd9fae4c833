"""The dock's model panels: Segment (worker thread, layers on the image), 3D, fine-tune in a process.

Run under a display: ``xvfb-run -a .venv/bin/python -m pytest napari_plugin/tests/test_segment_panel.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cochseg3d.annotation import save_annotation
from cochseg3d.models import build_model, load_checkpoint, resolve_model_cfg, save_checkpoint
from cochseg3d.preprocessing import Preprocessing
from cochseg3d.volume import canonical, write_image

napari = pytest.importorskip("napari")
pytestmark = pytest.mark.filterwarnings("ignore:System theme detection")

from napari_cochseg3d._widget import AnnotationWidget  # noqa: E402
from napari_cochseg3d.finetune_panel import keep_checkpoint, new_paths, parse_epoch  # noqa: E402
from napari_cochseg3d.launch import PLUGIN  # noqa: E402
from napari_cochseg3d.segment_panel import ARRAY_LAYER, CONTACTS_LAYER, SEGMENTATION_LAYER  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers import bright_model  # noqa: E402

PRE = Preprocessing(spacing_mm=0.4, roi_size=(64, 64))
LEFT = 1  # Qt.LeftButton
TRAIN_S = 480_000  # ms a training subprocess may take on a loaded machine (pytest-timeout is 600 s)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A small phantom patient (64^3 at 0.4 mm) as a NIfTI, its case, and a store annotating it."""
    from cochseg3d.phantom import generate_patient

    root = tmp_path_factory.mktemp("phantom")
    case = generate_patient(1, preset="small", shape=64)
    image_path = write_image(case.image, root / f"{case.case_id}.nii.gz")
    store = root / "store"
    can_label = canonical(case.label, is_label=True).array
    ks = np.flatnonzero(can_label.any(axis=(1, 2)))[::3]
    save_annotation(case.label, image=case.image, store=store, annotated_slices=ks.tolist(), image_path=image_path)
    return case, image_path, store


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """An untrained two-level U-Net checkpoint: what fine-tuning starts from in these tests."""
    cfg = resolve_model_cfg({"channels": (4, 8), "strides": (2,), "num_res_units": 0})
    pre = Preprocessing(spacing_mm=0.8, roi_size=(32, 32))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, {"model_state": build_model(cfg).state_dict(), "model": cfg,
                                  "preprocessing": pre.to_dict(), "config": {}, "epoch": 0})


def _config(path: Path, epochs: int) -> Path:
    tree = {"data": {"source": "annotations", "path": "unset", "samples_per_slice": 2, "cache_rate": 1.0,
                     "num_workers": 0},
            "train": {"epochs": epochs, "batch_size": 4, "device": "cpu", "early_stop": {"enabled": False}}}
    path.write_text(yaml.safe_dump(tree))
    return path


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy_store(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        if p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _finetune_dock(make_napari_viewer, image_path: Path, store: Path, ckpt: Path, config: Path):
    """The dock set to fine-tune ``ckpt`` on ``store`` with the training config ``config``."""
    viewer, _, widget = _dock(make_napari_viewer, image_path, store)
    widget.segment_panel.use_model(ckpt)
    widget.finetune_panel.config = config
    return viewer, widget, widget.finetune_panel


def _dock(make_napari_viewer, image_path: Path, store: Path):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(image_path), plugin=PLUGIN)
    widget = AnnotationWidget(viewer, store=store, autosave_s=0)
    return viewer, image, widget


def _segmented(viewer) -> bool:
    """A segmentation is shown (the panel's empty layers made ahead do not count)."""
    return SEGMENTATION_LAYER in viewer.layers and bool(viewer.layers[SEGMENTATION_LAYER].data.any())


def test_result_layers_are_made_ahead_empty_and_then_reused(make_napari_viewer, qtbot, phantom, tmp_path):
    _, image_path, _ = phantom
    viewer, image, widget = _dock(make_napari_viewer, image_path, tmp_path / "store")
    qtbot.waitUntil(lambda: SEGMENTATION_LAYER in viewer.layers and CONTACTS_LAYER in viewer.layers, timeout=10_000)
    labels, points = viewer.layers[SEGMENTATION_LAYER], viewer.layers[CONTACTS_LAYER]
    assert not labels.data.any() and len(points.data) == 0
    assert np.allclose(labels.affine.affine_matrix, image.affine.affine_matrix) and np.allclose(labels.scale, image.scale)
    assert viewer.layers.selection.active is image  # making them does not take the user's selection
    assert ARRAY_LAYER not in viewer.layers  # only while "fitted array" is ticked
    widget.segment_panel.array_check.setChecked(True)
    qtbot.waitUntil(lambda: ARRAY_LAYER in viewer.layers, timeout=10_000)
    viewer.open(str(image_path), plugin=PLUGIN)  # a second image: the layers are not made twice
    qtbot.wait(4 * 150 + 100)
    assert [ly.name for ly in viewer.layers].count(SEGMENTATION_LAYER) == 1
    panel = widget.segment_panel
    panel.use_model(bright_model(PRE))
    panel.array_check.setChecked(False)
    assert panel.run()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    # the run handed its data to the layers made ahead (no new visuals on the UI thread)
    assert viewer.layers[SEGMENTATION_LAYER] is labels and viewer.layers[CONTACTS_LAYER] is points
    assert labels.data.shape == image.data.shape and labels.data.any() and len(points.data) >= 10
    assert list(points.text.values) == list(points.features["name"])


def test_segment_adds_labels_and_named_contacts_on_the_label(make_napari_viewer, qtbot, phantom, tmp_path):
    case, image_path, _ = phantom
    viewer, image, widget = _dock(make_napari_viewer, image_path, tmp_path / "store")
    panel = widget.segment_panel
    panel.use_model(bright_model(PRE))
    qtbot.mouseClick(panel.segment_btn, LEFT)
    assert panel.busy and not panel.segment_btn.isEnabled()  # the work runs off the event loop
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert panel.result is not None, panel.status.text()
    labels, points = viewer.layers[SEGMENTATION_LAYER], viewer.layers[CONTACTS_LAYER]
    assert isinstance(labels, napari.layers.Labels) and isinstance(points, napari.layers.Points)
    assert labels.data.shape == image.data.shape and labels.data.sum() > 100
    for attr in ("scale", "translate"):
        assert np.allclose(getattr(labels, attr), getattr(image, attr))
        assert np.allclose(getattr(points, attr), getattr(image, attr))
    assert np.allclose(labels.affine.affine_matrix, image.affine.affine_matrix)
    # the segmentation is the phantom's electrode (BrightDetector: above 2000 HU)
    truth = canonical(case.label, is_label=True).array > 0
    seg = labels.data > 0
    assert 2 * (seg & truth).sum() / (seg.sum() + truth.sum()) > 0.5

    lps = np.asarray(panel.result.contacts.lps_mm)
    n = len(lps)
    assert n >= 10 and len(points.data) == n
    names = list(points.features["name"])
    assert sorted(names, key=lambda s: int(s[1:])) == [f"E{i + 1}" for i in range(n)]
    assert list(points.text.values) == names
    world = np.array([points.data_to_world(p) for p in points.data])
    # world axes of the coronal stack are LPS (y, -z, x) mm (layers.world_transform)
    assert np.allclose(world, lps[:, [1, 2, 0]] * [1.0, -1.0, 1.0], atol=1e-4)
    for w in world:  # every contact lands on an electrode voxel of the Labels layer
        k, r, c = np.rint(labels.world_to_data(w)).astype(int)
        assert labels.data[k, r, c] == 1, (w, (k, r, c))
    truth = np.asarray(case.contacts["contacts_lps_mm"], dtype=float)
    nearest = np.linalg.norm(lps[:, None] - truth[None], axis=2).min(axis=1)
    assert np.median(nearest) < 1.0  # and near where the phantom put its contacts

    # a second run replaces the layers rather than stacking copies
    assert panel.run()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert [ly.name for ly in viewer.layers].count(SEGMENTATION_LAYER) == 1
    assert [ly.name for ly in viewer.layers].count(CONTACTS_LAYER) == 1


def test_segment_shows_the_fitted_array_named_per_contact_on_request(make_napari_viewer, qtbot, phantom, tmp_path):
    case, image_path, _ = phantom
    viewer, image, widget = _dock(make_napari_viewer, image_path, tmp_path / "store")
    panel = widget.segment_panel
    panel.use_model(bright_model(PRE))
    panel.electrode_combo.setCurrentText(case.contacts["vendor"])
    panel.array_check.setChecked(True)
    assert panel.run()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert panel.result is not None, panel.status.text()
    array, points = viewer.layers[ARRAY_LAYER], viewer.layers[CONTACTS_LAYER]
    assert isinstance(array, napari.layers.Labels) and array.data.shape == image.data.shape
    assert np.allclose(array.scale, image.scale) and np.allclose(array.affine.affine_matrix, image.affine.affine_matrix)
    n = len(points.data)
    assert n >= 2 and set(np.unique(array.data)) == set(range(n + 2))  # background, contacts, carrier
    names = dict(zip(array.features["index"], array.features["name"]))
    assert names[n + 1] == "carrier"
    # both layers share the image's transform: each contact value sits at its contact (apex first) and has its name
    for v in range(1, n + 1):
        centre = np.argwhere(array.data == v).mean(axis=0)
        assert np.argmin(np.linalg.norm(points.data - centre, axis=1)) == v - 1
        assert names[v] == points.features["name"][v - 1]
    assert tuple(array.get_color(1)[:3]) != tuple(array.get_color(n + 1)[:3])  # the ctbl's colours

    panel.array_check.setChecked(False)  # a run without it drops the earlier array, which no longer fits
    assert panel.run()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert ARRAY_LAYER not in viewer.layers and SEGMENTATION_LAYER in viewer.layers


def test_segment_reports_a_bad_checkpoint_in_one_line(make_napari_viewer, qtbot, phantom, tmp_path):
    _, image_path, _ = phantom
    viewer, _, widget = _dock(make_napari_viewer, image_path, tmp_path / "store")
    widget.segment_panel.use_model(tmp_path / "nowhere.pt")
    assert not widget.segment_panel.run()
    assert "nowhere.pt: no such checkpoint" in widget.segment_panel.status.text()
    assert not _segmented(viewer)
    notes = tmp_path / "notes.pt"
    notes.write_text("not a checkpoint")
    widget.segment_panel.use_model(notes)
    assert widget.segment_panel.run()  # the file exists: the worker finds out it is no checkpoint
    qtbot.waitUntil(lambda: not widget.segment_panel.busy, timeout=60_000)
    text = widget.segment_panel.status.text()
    assert text.startswith("segmentation failed: ") and "notes.pt" in text and "\n" not in text
    assert not _segmented(viewer) and widget.segment_panel.segment_btn.isEnabled()


def test_3d_toggle_follows_and_drives_the_viewer(make_napari_viewer, phantom, tmp_path):
    _, image_path, _ = phantom
    viewer, _, widget = _dock(make_napari_viewer, image_path, tmp_path / "store")
    check = widget.segment_panel.view3d_check
    check.setChecked(True)
    assert viewer.dims.ndisplay == 3
    viewer.dims.ndisplay = 2  # napari's own 2D/3D button
    assert not check.isChecked()
    viewer.dims.ndisplay = 3
    assert check.isChecked()
    check.setChecked(False)
    assert viewer.dims.ndisplay == 2


def test_finetune_keeps_a_new_checkpoint_beside_the_store_and_resegments(make_napari_viewer, qtbot, phantom,
                                                                          tiny_ckpt, tmp_path):
    _, image_path, src_store = phantom
    store = _copy_store(src_store, tmp_path / "store")
    before = _digest(store)
    viewer, widget, ft = _finetune_dock(make_napari_viewer, image_path, store, tiny_ckpt,
                                        _config(tmp_path / "tiny.yaml", epochs=1))
    with qtbot.waitSignal(ft.done, timeout=TRAIN_S) as sig:
        qtbot.mouseClick(ft.start_btn, LEFT)
        assert ft.running and ft.cancel_btn.isEnabled() and not ft.start_btn.isEnabled()
    kept = sig.args[0]
    assert kept is not None, ft.output
    assert kept.parent == store.parent and kept.name.startswith("store-finetuned-") and kept.suffix == ".pt"
    _, info = load_checkpoint(kept)
    assert info["init_from"]["sha256"] == hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    assert info["epoch"] == 1 and (ft.progress.value(), ft.progress.maximum()) == (1, 1)
    assert _digest(store) == before  # training only read the store
    assert ft.resegment_btn.isEnabled() and str(kept) in ft.status.text()
    qtbot.mouseClick(ft.resegment_btn, LEFT)
    assert widget.segment_panel.model() == str(kept)
    qtbot.waitUntil(lambda: not widget.segment_panel.busy, timeout=120_000)
    assert widget.segment_panel.result is not None, widget.segment_panel.status.text()
    assert SEGMENTATION_LAYER in viewer.layers


def test_cancel_stops_the_training_process(make_napari_viewer, qtbot, phantom, tiny_ckpt, tmp_path):
    _, image_path, store = phantom
    _, _, ft = _finetune_dock(make_napari_viewer, image_path, store, tiny_ckpt,
                              _config(tmp_path / "long.yaml", epochs=500))
    assert ft.start()
    pid = int(ft.process.processId())
    qtbot.waitUntil(lambda: ft.progress.value() >= 1 or not ft.running, timeout=TRAIN_S)  # training, not just starting
    assert ft.running, ft.output
    with qtbot.waitSignal(ft.done, timeout=30_000) as sig:
        qtbot.mouseClick(ft.cancel_btn, LEFT)
    assert sig.args[0] is None and not ft.running and "cancelled" in ft.status.text()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not ft.checkpoint.exists() and not ft.resegment_btn.isEnabled() and ft.start_btn.isEnabled()


def test_failed_training_shows_its_message_and_leaves_the_store_alone(make_napari_viewer, qtbot, phantom,
                                                                       tiny_ckpt, tmp_path):
    _, image_path, src_store = phantom
    store = _copy_store(src_store, tmp_path / "store")
    ann = next(store.glob("*.annotation.json"))
    rec = json.loads(ann.read_text())
    rec["image"] = rec["image_relative"] = str(tmp_path / "gone.nii.gz")  # the annotated image was moved away
    ann.write_text(json.dumps(rec))
    before = _digest(store)
    _, _, ft = _finetune_dock(make_napari_viewer, image_path, store, tiny_ckpt,
                              _config(tmp_path / "tiny.yaml", epochs=1))
    with qtbot.waitSignal(ft.done, timeout=TRAIN_S) as sig:
        assert ft.start()
    assert sig.args[0] is None
    text = ft.status.text()
    assert text.startswith("fine-tuning failed: ") and "Traceback" not in text and "\n" not in text
    assert _digest(store) == before and not ft.checkpoint.exists() and not ft.resegment_btn.isEnabled()


def test_paths_never_overwrite(tmp_path):
    store = tmp_path / "store"
    run, ckpt = new_paths(store, stamp="T")
    assert (run.name, ckpt.name) == ("store-finetune-T", "store-finetuned-T.pt")
    ckpt.write_bytes(b"mine")
    run2, ckpt2 = new_paths(store, stamp="T")
    assert (run2.name, ckpt2.name) == ("store-finetune-T-2", "store-finetuned-T-2.pt")
    run.mkdir()
    (run / "best.pt").write_bytes(b"new")
    with pytest.raises(FileExistsError, match="exists already"):
        keep_checkpoint(run, ckpt)
    assert ckpt.read_bytes() == b"mine"
    assert keep_checkpoint(run, ckpt2).read_bytes() == b"new"
    assert parse_epoch("INFO cochseg3d.training: epoch 3/8: loss 0.1") == (3, 8)
    assert parse_epoch("INFO cochseg3d: model unet2d: 5 parameters") is None
