"""The napari plugin: reader, pre-fill, painting with undo, save/reopen, PNG import orientation.

Run under a display: ``xvfb-run -a .venv/bin/python -m pytest napari_plugin/tests``.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cochseg3d.annotation import load_annotation
from cochseg3d.volume import Volume, write_image

napari = pytest.importorskip("napari")
pytestmark = pytest.mark.filterwarnings("ignore:System theme detection")

from napari_cochseg3d._widget import AnnotationWidget  # noqa: E402
from napari_cochseg3d.launch import PLUGIN, open_case  # noqa: E402


@pytest.fixture
def case_path(tmp_path):
    """An axial-like CBCT (LPS, k = superior) of 16 x 32 x 24 voxels: bone slab and an electrode rod."""
    rng = np.random.default_rng(1)
    a = rng.normal(30.0, 20.0, (16, 32, 24)).astype(np.float32)
    a[:, :, 1:4] = 1500.0
    a[3:9, 6:10, 9:12] = 3200.0  # electrode: 6 axial x 4 coronal x 3 voxels
    vol = Volume(a, (0.5, 0.4, 0.3), (-3.0, 7.0, 11.0), np.eye(3), {"case_id": "P07"})
    return write_image(vol, tmp_path / "P07.nii.gz")


def test_reader_shows_coronal_stack_in_mm(make_napari_viewer, case_path) -> None:
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(case_path), plugin=PLUGIN)
    # source (k, j, i) = (S, P, L) with 0.3/0.4/0.5 mm -> coronal stack (P, I, L)
    assert layer.data.shape == (32, 16, 24)
    assert np.allclose(layer.scale, (0.4, 0.3, 0.5))
    lo, hi = layer.contrast_limits
    assert lo < 0.0 and 2500.0 < hi <= 3300.0  # tissue dark, metal white
    # world coordinates are physical: voxel (0,0,0) of the stack sits at LPS (x, y, -z) mm
    can = layer.metadata["cochseg3d"]["volume"]
    x, y, z = can.index_to_lps(np.zeros(3))
    assert np.allclose(layer.data_to_world([0, 0, 0]), (y, -z, x))


def test_prefill_paint_mark_save_reopen(make_napari_viewer, qtbot, case_path, tmp_path) -> None:
    store = tmp_path / "store"
    viewer = make_napari_viewer()
    widget = open_case(viewer, case_path, store=store, autosave_s=0)
    labels = widget.labels_layer
    assert labels.data.shape == (32, 16, 24) and labels.data.sum() == 0
    widget.scope_combo.setCurrentText("whole volume")
    qtbot.mouseClick(widget.prefill_btn, 1)  # Qt.LeftButton
    filled = labels.data.copy()
    assert filled.sum() == 6 * 4 * 3 and filled[6:10].all(axis=0).sum() == 6 * 3
    labels.undo()
    assert labels.data.sum() == 0  # the pre-fill is one undo step
    labels.redo()
    assert np.array_equal(labels.data, filled)

    # paint and erase a stroke on coronal slice 7 with napari's own brush
    widget.goto_slice(7)
    assert widget.current_slice() == 7
    labels.brush_size = 1
    labels.n_edit_dimensions = 2
    for c in range(0, 4):
        labels.paint((7, 0, c), 1)
    labels.paint((7, 9, 10), 0)  # erase one electrode pixel
    assert labels.data[7, 0, 0:4].all() and labels.data[7, 9, 10] == 0
    qtbot.mouseClick(widget.mark_btn, 1)
    assert widget.session.annotated == {7} and widget.mark_btn.isChecked()
    widget.mark(8)
    painted = labels.data.copy()
    json_path = widget.save()
    assert json_path is not None and json_path.exists()
    viewer.close()

    # reopen in a new viewer: the stored annotation comes back exactly
    viewer2 = make_napari_viewer()
    w2 = open_case(viewer2, case_path, store=store, autosave_s=0)
    assert np.array_equal(w2.labels_layer.data, painted)
    assert w2.session.annotated == {7, 8}
    ann = load_annotation(json_path)
    assert ann.label.array.shape == (16, 32, 24)  # written on the source grid


def test_png_import_lands_on_slice_unflipped(make_napari_viewer, case_path, tmp_path) -> None:
    viewer = make_napari_viewer()
    widget = open_case(viewer, case_path, store=tmp_path / "store", autosave_s=0)
    mask = np.zeros((16, 24), np.uint8)
    mask[2, 21] = 255  # superior, patient-left corner: asymmetric in both axes
    mask[9, 1:3] = 255
    Image.fromarray(mask).save(tmp_path / "P07_5.png")
    assert widget.import_masks([tmp_path / "P07_5.png"]) == [5]
    lab = widget.labels_layer.data
    assert np.array_equal(lab[5], mask > 0) and lab.sum() == 3
    assert widget.current_slice() == 5 and 5 in widget.session.annotated
    # the PNG pixel (row 2, col 21) of coronal slice 5 is this source voxel, checked in LPS mm
    json_path = widget.save()
    src = load_annotation(json_path).label
    can = widget.session.image
    ijk = np.rint(src.lps_to_index(can.index_to_lps(np.array([21.0, 2.0, 5.0])))).astype(int)
    assert src.array[ijk[2], ijk[1], ijk[0]] == 1 and src.array.sum() == 3
    # superior row of the slice = higher source k (superior), patient left = higher LPS x
    assert ijk[2] == 16 - 1 - 2 and ijk[1] == 5 and ijk[0] == 21


def test_prediction_review_and_png_export(make_napari_viewer, case_path, tmp_path) -> None:
    viewer = make_napari_viewer()
    widget = open_case(viewer, case_path, store=tmp_path / "store", autosave_s=0)
    pred = np.zeros(widget.session.shape, np.float32)
    pred[4, 3:5, 6:8] = 0.9
    pred[11, 0, 0] = 0.8
    widget.load_prediction(pred)
    assert widget.current_slice() == 4  # jumps to the first predicted slice
    widget.step_to(widget.predicted_slices(), +1)
    assert widget.current_slice() == 11
    assert widget.accept_prediction([4]) == [4]
    assert widget.labels_layer.data[4].sum() == 4 and widget.labels_layer.data[11].sum() == 0
    widget.labels_layer.undo()
    assert widget.labels_layer.data[4].sum() == 0
    widget.accept_prediction(widget.predicted_slices())
    paths = widget.export_pngs(tmp_path / "png")
    assert sorted(p.name for p in paths) == ["P07_11.png", "P07_4.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "png" / "masks" / "P07_4.png")) > 0, pred[4] > 0.5)
    image_png = np.asarray(Image.open(tmp_path / "png" / "images" / "P07_4.png"))
    expected = np.round(np.clip((widget.session.image.array[4] + 1000.0) / 4000.0, 0, 1) * 255)
    assert np.abs(image_png.astype(float) - expected).max() <= 1.0  # slice 4, windowed -1000..3000 HU


def test_roi_limits_prefill_and_autosave(make_napari_viewer, case_path, tmp_path) -> None:
    viewer = make_napari_viewer()
    widget = AnnotationWidget(viewer, store=tmp_path / "store", autosave_s=5)
    (layer,) = viewer.open(str(case_path), plugin=PLUGIN)
    widget.attach(layer)
    widget.draw_roi()
    roi = viewer.layers["ROI"]
    k = 7
    corners = np.array([[k, 0, 9], [k, 0, 10.4], [k, 15, 10.4], [k, 15, 9]], float)  # cols 9..10
    roi.add_rectangles(np.array([roi.world_to_data(layer.data_to_world(c)) for c in corners]))
    assert widget.roi_box() == (0, 16, 9, 11)
    widget.scope_combo.setCurrentText("whole volume")
    widget.prefill()
    lab = widget.labels_layer.data
    assert lab.sum() == 6 * 4 * 2 and lab[:, :, 11].sum() == 0
    # autosave writes once the interval has passed and something changed
    widget.autosaver.last_save -= 10.0
    assert widget.autosave_tick()
    assert (tmp_path / "store" / "P07.annotation.json").exists()
    assert not widget.autosave_tick()  # nothing new to save


def test_reader_opens_dicom_folder(make_napari_viewer, tmp_path) -> None:
    from cochseg3d.phantom.dicom_write import write_series
    from napari_cochseg3d._reader import napari_get_reader

    a = np.full((6, 10, 8), 40.0, np.float32)
    a[2:4, 3:5, 5:7] = 3000.0
    write_series(Volume(a, (0.5, 0.4, 0.3), (0.0, 0.0, 0.0), np.eye(3)), tmp_path / "DICOM",
                 patient_id="P 09", uid_seed="reader-test")
    assert napari_get_reader(str(tmp_path / "DICOM")) is not None
    assert napari_get_reader(str(tmp_path)) is not None  # DICOM found below
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("not an image")
    assert napari_get_reader(str(tmp_path / "notes")) is None
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "DICOM"), plugin=PLUGIN)
    assert layer.name == "P_09" and layer.data.shape == (10, 6, 8)
    assert np.allclose(layer.scale, (0.4, 0.3, 0.5))
    assert float(layer.data[3, 6 - 1 - 2, 5]) == pytest.approx(3000.0, abs=1.0)
    one_file = sorted((tmp_path / "DICOM").glob("*.dcm"))[0]
    (layer2,) = viewer.open(str(one_file), plugin=PLUGIN)  # a single file opens its whole series
    assert layer2.data.shape == (10, 6, 8)


def test_open_case_from_record_and_label_reader(make_napari_viewer, case_path, tmp_path) -> None:
    viewer = make_napari_viewer()
    widget = open_case(viewer, case_path, store=tmp_path / "store", autosave_s=0)
    widget.scope_combo.setCurrentText("slice range")
    widget.first_spin.setValue(7)
    widget.last_spin.setValue(8)
    widget.prefill()
    assert widget.labels_layer.data.sum() == 2 * 6 * 3  # two of the rod's four coronal slices
    widget.mark(7)
    json_path = widget.save()
    viewer.close()
    # `cochseg3d annotate STORE/P07.annotation.json` opens the image and the annotation
    viewer2 = make_napari_viewer()
    w2 = open_case(viewer2, json_path, autosave_s=0)
    assert w2.session.store == json_path.parent and w2.session.annotated == {7}
    assert w2.labels_layer.data.sum() == 2 * 6 * 3
    # the stored label file itself opens as a Labels layer on the same coronal grid
    (lab,) = viewer2.open(str(json_path.parent / "P07.label.nii.gz"), plugin=PLUGIN)
    assert lab.__class__.__name__ == "Labels" and np.array_equal(lab.data, w2.labels_layer.data)
    assert np.allclose(lab.scale, w2.labels_layer.scale) and np.allclose(lab.translate, w2.labels_layer.translate)


def test_buttons_report_errors_instead_of_raising(make_napari_viewer, qtbot, tmp_path) -> None:
    viewer = make_napari_viewer()
    widget = AnnotationWidget(viewer, store=tmp_path, autosave_s=0)
    qtbot.mouseClick(widget.prefill_btn, 1)  # no image open yet
    assert widget.status.text().startswith("error:") and "no image layer" in widget.status.text()
    assert widget.session is None


def test_threshold_preview_outlines_current_slice(make_napari_viewer, case_path, tmp_path) -> None:
    viewer = make_napari_viewer()
    widget = open_case(viewer, case_path, store=tmp_path / "store", autosave_s=0)
    widget.goto_slice(7)
    widget.auto_check.setChecked(False)
    widget.thr_spin.setValue(1000)  # below bone: bone and electrode
    widget.preview_check.setChecked(True)
    prev = viewer.layers["threshold preview"]
    assert prev.data.shape == (1, 16, 24) and prev.data.sum() == 16 * 3 + 6 * 3
    assert np.allclose(prev.data_to_world([0, 0, 0]), widget.labels_layer.data_to_world([7, 0, 0]))
    widget.thr_spin.setValue(2500)  # electrode only
    assert prev.data.sum() == 6 * 3
    widget.goto_slice(2)  # no electrode on this slice
    assert prev.data.sum() == 0 and np.allclose(prev.translate[0], widget.labels_layer.data_to_world([2, 0, 0])[0])
    assert widget.labels_layer.data.sum() == 0  # a preview paints nothing
    widget.preview_check.setChecked(False)
    assert "threshold preview" not in viewer.layers


def test_prediction_file_is_reoriented_onto_the_stack(make_napari_viewer, case_path, tmp_path) -> None:
    from cochseg3d.volume import read_image

    src = read_image(case_path)
    prob = np.zeros(src.array.shape, np.float32)
    prob[3:9, 6:10, 9:12] = 0.9  # the electrode, on the source (axial) grid
    pred_path = write_image(src.with_array(prob), tmp_path / "P07.prob.nii.gz")
    viewer = make_napari_viewer()
    widget = open_case(viewer, case_path, store=tmp_path / "store", prediction=pred_path, autosave_s=0)
    assert widget.predicted_slices() == [6, 7, 8, 9]  # coronal slices = source j
    widget.accept_prediction(widget.predicted_slices())
    widget.scope_combo.setCurrentText("whole volume")
    pre = widget.labels_layer.data.copy()
    widget.labels_layer.data[:] = 0
    widget.prefill()  # the threshold pre-fill of the same rod lands on the same voxels
    assert np.array_equal(widget.labels_layer.data, pre)


def test_manifest_widget_docks_from_plugins_menu(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Electrode annotation")
    assert isinstance(widget, AnnotationWidget)
    viewer.add_image(np.zeros((3, 4, 5), np.float32), name="vol")  # napari hands the widget a proxy
    assert widget.image_combo.currentText() == "vol"
    widget.attach()  # a plain image layer (not from our reader) is annotated in its own voxel grid
    widget.auto_check.setChecked(False)
    widget.thr_spin.setValue(0)
    widget.scope_combo.setCurrentText("current slice")
    assert widget.prefill() == 4 * 5 and viewer.layers["vol electrode"].data.sum() == 4 * 5


def test_reload_is_not_undone_into_the_edits_before_it(make_napari_viewer, qtbot, case_path, tmp_path) -> None:
    viewer = make_napari_viewer()
    widget = open_case(viewer, case_path, store=tmp_path / "store", autosave_s=0)
    labels = widget.labels_layer
    widget.scope_combo.setCurrentText("whole volume")
    qtbot.mouseClick(widget.prefill_btn, 1)
    widget.mark(7)
    widget.save()
    saved = labels.data.copy()
    labels.brush_size = 1
    labels.paint((7, 0, 0), 1)  # an edit after the save, then the stored one is loaded back
    widget.load()
    assert np.array_equal(labels.data, saved)
    for _ in range(3):  # nothing to undo: the pre-fill and the stroke belong to the discarded edits
        labels.undo()
    assert np.array_equal(labels.data, saved) and saved.sum() > 0


def test_reader_shows_a_segment_output_with_its_named_contacts(make_napari_viewer, tmp_path) -> None:
    import json

    a = np.zeros((16, 32, 24), dtype=np.uint8)
    a[3:9, 6:10, 9:12] = 1
    vol = Volume(a, (0.5, 0.4, 0.3), (-3.0, 7.0, 11.0), np.eye(3), {"case_id": "P07"})
    path = write_image(vol, tmp_path / "P07.nii.gz")
    lps = vol.index_to_lps(np.array([[10.0, 7.0, 4.0], [10.0, 8.0, 7.0]]))  # (i, j, k) inside the rod
    (tmp_path / "P07.contacts.json").write_text(json.dumps(
        {"case_id": "P07", "contacts_lps_mm": lps.tolist(), "electrode_hint": "Cochlear"}))
    viewer = make_napari_viewer()
    labels, points = viewer.open(str(path), plugin=PLUGIN)
    assert isinstance(labels, napari.layers.Labels) and isinstance(points, napari.layers.Points)
    assert labels.data.shape == (32, 16, 24) and labels.data.sum() == a.sum()
    assert list(points.features["name"]) == ["E2", "E1"]  # Cochlear numbers from the base
    for p, want in zip(points.data, lps):  # each point on the label, at its LPS position
        w = points.data_to_world(p)
        assert np.allclose(w, (want[1], -want[2], want[0]), atol=1e-4)
        k, r, c = np.rint(labels.world_to_data(w)).astype(int)
        assert labels.data[k, r, c] == 1
    (tmp_path / "P07.contacts.json").unlink()  # without its contacts it is an image again
    (only,) = make_napari_viewer().open(str(path), plugin=PLUGIN)
    assert isinstance(only, napari.layers.Image)


def test_reader_names_a_bilateral_scans_contacts_by_side(make_napari_viewer, tmp_path) -> None:
    import json

    a = np.zeros((16, 32, 24), dtype=np.uint8)
    a[3:9, 6:10, 2:5] = 1
    a[3:9, 6:10, 19:22] = 1
    vol = Volume(a, (0.5, 0.4, 0.3), (-3.0, 7.0, 11.0), np.eye(3), {"case_id": "P08"})
    path = write_image(vol, tmp_path / "P08.nii.gz")
    right = vol.index_to_lps(np.array([[3.0, 7.0, 4.0], [3.0, 8.0, 7.0]]))
    left = vol.index_to_lps(np.array([[20.0, 7.0, 4.0], [20.0, 8.0, 7.0], [20.0, 8.0, 5.0]]))
    arrays = [{"side": side, "contacts": [{"name": f"E{i + 1}", "lps_mm": p.tolist()} for i, p in enumerate(pts)]}
              for side, pts in (("right", right), ("left", left))]
    (tmp_path / "P08.contacts.json").write_text(json.dumps(
        {"case_id": "P08", "contacts_lps_mm": np.vstack([right, left]).tolist(), "bilateral": True, "arrays": arrays}))
    _, points = make_napari_viewer().open(str(path), plugin=PLUGIN)
    assert list(points.features["name"]) == ["R E1", "R E2", "L E1", "L E2", "L E3"]
    arrays[1]["contacts"].pop()  # a record that does not add up falls back to one numbering
    (tmp_path / "P08.contacts.json").write_text(json.dumps(
        {"case_id": "P08", "contacts_lps_mm": np.vstack([right, left]).tolist(), "bilateral": True, "arrays": arrays}))
    _, points = make_napari_viewer().open(str(path), plugin=PLUGIN)
    assert list(points.features["name"]) == [f"E{i + 1}" for i in range(5)]


def test_reader_shows_the_fitted_array_with_each_contact_named(make_napari_viewer, tmp_path) -> None:
    import json

    from cochseg3d.clinical.array_label import colour_table

    a = np.zeros((16, 32, 24), dtype=np.uint8)
    a[3:9, 6:10, 9:12] = 1
    vol = Volume(a, (0.5, 0.4, 0.3), (-3.0, 7.0, 11.0), np.eye(3), {"case_id": "P07"})
    path = write_image(vol, tmp_path / "P07.nii.gz")
    (tmp_path / "P07.contacts.json").write_text(json.dumps({"case_id": "P07", "contacts_lps_mm": []}))
    arr = a.copy()
    arr[3:5] *= 1
    arr[5:7] *= 2
    arr[7:9] *= 3
    write_image(vol.with_array(arr), tmp_path / "P07.array.nii.gz")
    (tmp_path / "P07.array.ctbl").write_text(colour_table(["E2", "E1", "carrier"]))
    viewer = make_napari_viewer()
    labels, _, array = viewer.open(str(path), plugin=PLUGIN)
    assert isinstance(array, napari.layers.Labels) and array.name == "P07 array"
    assert array.data.shape == labels.data.shape and np.array_equal(array.data > 0, labels.data > 0)
    assert set(np.unique(array.data)) == {0, 1, 2, 3}
    names = dict(zip(array.features["index"], array.features["name"]))
    assert names == {0: "background", 1: "E2", 2: "E1", 3: "carrier"}
    assert np.allclose(array.colormap.map(np.array([3]))[0], (200 / 255, 200 / 255, 200 / 255, 1.0))
    # opened by itself it is the same named layer; a broken table leaves it unnamed, not unreadable
    (alone,) = make_napari_viewer().open(str(tmp_path / "P07.array.nii.gz"), plugin=PLUGIN)
    assert isinstance(alone, napari.layers.Labels) and np.array_equal(alone.data, array.data)
    assert list(alone.features["name"])[1:] == ["E2", "E1", "carrier"]
    (tmp_path / "P07.array.ctbl").write_text("0 background\n")
    (plain,) = make_napari_viewer().open(str(tmp_path / "P07.array.nii.gz"), plugin=PLUGIN)
    assert isinstance(plain, napari.layers.Labels) and np.array_equal(plain.data, array.data)
