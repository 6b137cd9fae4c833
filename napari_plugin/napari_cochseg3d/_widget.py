"""The annotation dock widget: Qt controls only; the work is done by cochseg3d.annotation.

Edits go into the Labels layer through ``Labels.data_setitem`` inside ``block_history()``, so a
pre-fill, an import or an accepted prediction is one step of napari's undo (Ctrl+Z), just like a
brush stroke.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QApplication,
    QFileDialog,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from cochseg3d.annotation import (
    AnnotationSession,
    Autosaver,
    prediction_slices,
    read_slice_masks,
    roi_mask,
)
from napari_cochseg3d import edits
from napari_cochseg3d.finetune_panel import FinetunePanel
from napari_cochseg3d.dock_layout import ROI_LAYER, DockLayout
from napari_cochseg3d.layers import AXIS_LABELS, META_KEY, world_transform
from napari_cochseg3d.segment_panel import SegmentPanel

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

PREDICTION_LAYER = "prediction"
PREVIEW_LAYER = "threshold preview"


class AnnotationWidget(DockLayout, QWidget):
    """Pre-fill, mark, save/load, review and PNG/labelme import-export for one case.

    Args:
        napari_viewer: the viewer.
        store: annotation store folder (default ``./annotations``).
        autosave_s: autosave interval in seconds (0: off).
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer", *, store: str | Path | None = None,
                 autosave_s: float = 120.0) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: AnnotationSession | None = None
        self.image_layer = None
        self.labels_layer = None
        self.prediction: np.ndarray | None = None
        self.autosaver = Autosaver(self._autosave, interval_s=max(autosave_s, 1.0))
        self._build(store or Path.cwd() / "annotations", autosave_s)
        self.viewer.layers.events.inserted.connect(self._refresh_image_choices)
        self.viewer.layers.events.removed.connect(self._refresh_image_choices)
        self.viewer.dims.events.current_step.connect(self._on_slice_changed)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.autosave_tick)
        self._timer.start(2000)
        app = QApplication.instance()
        if app is not None:  # last autosave when napari quits with unsaved edits
            app.aboutToQuit.connect(self._on_quit)
        self._refresh_image_choices()
        self.segment_panel.prepare(self._segment_target())

    # --- layout ----------------------------------------------------------------------------
    def _build(self, store: str | Path, autosave_s: float) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(6, 6, 6, 6)
        self.setMinimumWidth(400)
        self.setMaximumWidth(460)

        root.addWidget(self._build_case(store))
        root.addWidget(self._build_prefill())
        root.addWidget(self._build_slices())
        root.addWidget(self._build_io(autosave_s))
        root.addWidget(self._build_review())

        self.segment_panel = SegmentPanel(self.viewer, self._segment_target)
        self.finetune_panel = FinetunePanel(self.store_edit.text, init=self.segment_panel.checkpoint,
                                            use_model=self._segment_with, unsaved=lambda: self.autosaver.dirty)
        root.addWidget(self.segment_panel)
        root.addWidget(self.finetune_panel)

        self.status = QLabel("Open a DICOM folder or NIfTI, then press Annotate.")
        self.status.setWordWrap(True)
        self.status.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Minimum)
        root.addWidget(self.status)
        root.addStretch(1)
        self._on_scope_changed(self.scope_combo.currentText())

    # --- helpers ---------------------------------------------------------------------------
    def _segment_target(self):
        """The image to segment: the annotated one, else the one chosen in the Image box."""
        name = self.image_combo.currentText()
        return self.image_layer or (self.viewer.layers[name] if name in self.viewer.layers else None)

    def _segment_with(self, checkpoint: Path) -> None:
        self.segment_panel.use_model(checkpoint)
        self.segment_panel.run()

    def _safe(self, fn):
        """A button slot that reports bad input in the status line instead of raising."""

        def slot(*_):  # QPushButton.clicked passes `checked`; no slot here needs it
            try:
                return fn()
            except (OSError, ValueError) as exc:
                self._say(f"error: {exc}")
                return None

        return slot

    def _say(self, text: str) -> None:
        self.status.setText(text)
        log.info(text)

    def _refresh_image_choices(self, *_) -> None:
        from napari.layers import Image

        current = self.image_combo.currentText()
        names = [ly.name for ly in self.viewer.layers if isinstance(ly, Image) and ly.ndim == 3
                 and ly.name != PREDICTION_LAYER]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)

    def _choose_store(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Annotation store", self.store_edit.text())
        if d:
            self.set_store(d)

    def set_store(self, folder: str | Path) -> None:
        self.store_edit.setText(str(folder))
        if self.session is not None:
            self.session.store = Path(folder)

    def _need_session(self) -> AnnotationSession:
        if self.session is None:
            if self.image_combo.count() == 0:
                raise ValueError("no image layer: open a DICOM folder or NIfTI first")
            self.attach()
        assert self.session is not None
        return self.session

    # --- case --------------------------------------------------------------------------------
    def attach(self, layer=None) -> None:
        """Start annotating an image layer (default: the one chosen in the combo box).

        Adds a Labels layer on the same grid; reloads the case's stored annotation if there is one.
        """
        if layer is None:
            name = self.image_combo.currentText()
            if not name:
                self._say("No image layer to annotate.")
                return
            layer = self.viewer.layers[name]
        if self.session is not None and self.autosaver.dirty and self.store_edit.text():
            self.save(autosave=True)  # switching cases never drops unsaved edits
        vol = edits.volume_of(layer)
        meta = layer.metadata.get(META_KEY, {})
        self.session = AnnotationSession(vol, store=self.store_edit.text() or None,
                                         case_id=meta.get("case_id") or layer.name, image_path=meta.get("path"))
        self.image_layer = layer
        lname = f"{self.session.case_id} electrode"
        if lname in self.viewer.layers:
            self.viewer.layers.remove(lname)
        self.labels_layer = self.viewer.add_labels(
            self.session.label, name=lname, opacity=0.55, **world_transform(self.session.image))
        # napari keeps numpy data as is; edits in the layer are edits of the session's label
        self.session.label = self.labels_layer.data
        self.labels_layer.selected_label = 1
        self.labels_layer.brush_size = 3
        self.labels_layer.events.paint.connect(lambda *_: self.autosaver.mark_dirty())
        self.viewer.dims.axis_labels = AXIS_LABELS[-self.viewer.dims.ndim:] if self.viewer.dims.ndim >= 3 else \
            self.viewer.dims.axis_labels
        canvas = getattr(self.viewer, "canvas", None)  # napari >= 0.9 moved the scale bar there
        (canvas.overlays.scale_bar if canvas is not None else self.viewer.scale_bar).visible = True
        n = self.session.shape[0]
        for s in (self.first_spin, self.last_spin):
            s.setRange(0, n - 1)
        self.last_spin.setValue(n - 1)
        lo, hi = (int(np.floor(np.min(vol.array[:: max(1, n // 32)]))), int(np.ceil(np.max(vol.array))))
        for w in (self.thr_slider, self.thr_spin):
            w.setRange(lo, hi)
        self._reload_stored(n)
        if self.auto_check.isChecked():
            self.thr_spin.setValue(int(round(self.session.auto_threshold())))
        self.autosaver.mark_saved()
        self.viewer.layers.selection.active = self.labels_layer
        self._refresh_slice_list()

    def _reload_stored(self, n: int) -> None:
        """Load the case's stored annotation into the new layer, if the store has one."""
        if self.session.store is not None and self.session.json_path.exists():
            try:
                self.session.load()
            except (OSError, ValueError) as exc:
                self._say(f"{self.session.case_id}: stored annotation not loaded: {exc}")
            else:
                self.labels_layer.refresh()
                edits.clear_undo(self.labels_layer)
                if self.session.threshold_hu is not None:
                    self.thr_spin.setValue(int(round(self.session.threshold_hu)))
                self._say(f"{self.session.case_id}: reloaded {self.session.json_path.name} "
                          f"({len(self.session.annotated)} annotated slices)")
        else:
            self._say(f"{self.session.case_id}: {n} coronal slices; pre-fill, correct, mark, save.")

    # --- slices ------------------------------------------------------------------------------
    def current_slice(self) -> int:
        """The coronal index ``k`` shown now."""
        if self.image_layer is None:
            return 0
        k = self.image_layer.world_to_data(self.viewer.dims.point)[0]
        return int(np.clip(round(float(k)), 0, self.image_layer.data.shape[0] - 1))

    def goto_slice(self, k: int) -> None:
        if self.image_layer is None:
            return
        world = self.image_layer.data_to_world([int(k), 0, 0])
        self.viewer.dims.set_point(0, float(world[0]))

    def step_to(self, ks: list[int], direction: int) -> None:
        """Show the next (``direction`` +1) or previous (-1) of the coronal slices ``ks``."""
        if not ks:
            self._say("No slice to go to.")
            return
        self.goto_slice(edits.step_target(ks, self.current_slice(), direction))

    def update_preview(self) -> None:
        """Outline, on the current slice only, what a pre-fill at the shown threshold would paint."""
        if self.session is None or not self.preview_check.isChecked():
            if PREVIEW_LAYER in self.viewer.layers:
                self.viewer.layers.remove(PREVIEW_LAYER)
            return
        from napari.utils.colormaps import DirectLabelColormap

        k = self.current_slice()
        thr = self.session.auto_threshold() if self.auto_check.isChecked() else float(self.thr_spin.value())
        mask, wt = edits.preview_plane(self.session.image, k, thr, self.min_size_spin.value())
        if PREVIEW_LAYER in self.viewer.layers:
            layer = self.viewer.layers[PREVIEW_LAYER]
            layer.data = mask
            layer.translate = wt["translate"]
        else:
            cmap = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "yellow"})
            self.viewer.add_labels(mask, name=PREVIEW_LAYER, colormap=cmap, opacity=1.0, **wt).contour = 1
            if self.labels_layer is not None:
                self.viewer.layers.selection.active = self.labels_layer

    def _on_slice_changed(self, *_) -> None:
        if self.preview_check.isChecked():
            self.update_preview()
        if self.session is not None:
            self.mark_btn.setChecked(self.current_slice() in self.session.annotated)
        if self.scope_combo.currentText() == "current slice":
            self.first_spin.setValue(self.current_slice())
            self.last_spin.setValue(self.current_slice())

    def _on_scope_changed(self, text: str) -> None:
        enabled = text == "slice range"
        self.first_spin.setEnabled(enabled)
        self.last_spin.setEnabled(enabled)

    def _on_auto_toggled(self, on: bool) -> None:
        self.thr_slider.setEnabled(not on)
        self.thr_spin.setEnabled(not on)
        if on and self.session is not None:
            self.thr_spin.setValue(int(round(self.session.auto_threshold())))

    def mark(self, k: int | None = None, *, annotated: bool = True) -> None:
        """Mark (or unmark) coronal slice ``k`` (default: the current one) as annotated."""
        s = self._need_session()
        k = self.current_slice() if k is None else int(k)
        s.mark(k, annotated)
        self.autosaver.mark_dirty()
        self.mark_btn.setChecked(k in s.annotated)
        self._refresh_slice_list()
        self._say(f"slice {k} {'marked' if annotated else 'unmarked'}; {len(s.annotated)} annotated")

    def _refresh_slice_list(self) -> None:
        from qtpy.QtWidgets import QListWidgetItem

        self.slice_list.clear()
        if self.session is None:
            return
        for k in sorted(self.session.annotated):
            n = int(np.count_nonzero(self.session.label[k]))
            item = QListWidgetItem(f"slice {k}: {n} px")
            item.setData(Qt.UserRole, k)
            self.slice_list.addItem(item)

    # --- pre-fill ------------------------------------------------------------------------------
    def scope(self) -> int | tuple[int, int] | None:
        text = self.scope_combo.currentText()
        if text == "current slice":
            return self.current_slice()
        if text == "slice range":
            return self.first_spin.value(), self.last_spin.value()
        return None

    def roi_box(self) -> tuple[int, int, int, int] | None:
        """``(row0, row1, col0, col1)`` of the last rectangle in the ROI layer, or ``None``."""
        if ROI_LAYER not in self.viewer.layers or not len(self.viewer.layers[ROI_LAYER].data):
            return None
        return edits.rectangle_box(self.viewer.layers[ROI_LAYER], self.image_layer)

    def draw_roi(self) -> None:
        """Add (or select) the ROI shapes layer in rectangle mode."""
        self._need_session()
        if ROI_LAYER not in self.viewer.layers:
            self.viewer.add_shapes(name=ROI_LAYER, edge_color="yellow", face_color="transparent", edge_width=0.3,
                                   ndim=3, **world_transform(self.session.image))
        shp = self.viewer.layers[ROI_LAYER]
        self.viewer.layers.selection.active = shp
        shp.mode = "add_rectangle"
        self.roi_check.setChecked(True)

    def prefill(self) -> int:
        """Pre-fill the chosen scope at the chosen threshold; returns the number of voxels changed."""
        s = self._need_session()
        roi = self.roi_box() if self.roi_check.isChecked() else None
        if self.roi_check.isChecked() and roi is None:
            self._say(f"No rectangle in the '{ROI_LAYER}' layer: draw one or untick 'limit to ROI'.")
            return 0
        thr = "auto" if self.auto_check.isChecked() else float(self.thr_spin.value())
        region, block = s.prefill_region(threshold_hu=thr, slices=self.scope(), roi=roi,
                                         min_size_voxels=self.min_size_spin.value())
        within = roi_mask(roi, s.shape[1:])
        n = self.apply_block(region, block, add=self.add_check.isChecked(), within=within)
        self.thr_spin.setValue(int(round(s.threshold_hu)))
        self._refresh_slice_list()
        self._say(f"pre-filled {self.scope_combo.currentText()} at {s.threshold_hu:.0f} HU: "
                  f"{int(block.sum())} voxels, {n} changed (Ctrl+Z undoes)")
        return n

    def apply_block(self, region: tuple[slice, slice, slice], block: np.ndarray, *, add: bool = False,
                    within: np.ndarray | None = None) -> int:
        """Write ``block`` into the Labels layer at ``region`` as one undoable step (:func:`edits.apply_block`)."""
        return edits.apply_block(self.labels_layer, region, block, add=add, within=within)

    # --- save / load -----------------------------------------------------------------------
    def save(self, *, autosave: bool = False) -> Path | None:
        s = self._need_session()
        if not self.store_edit.text().strip():
            self._say("not saved: choose an annotation store folder first")
            return None
        s.store = Path(self.store_edit.text().strip())
        s.label = self.labels_layer.data
        try:
            path = s.save(autosave=autosave)
        except (OSError, ValueError) as exc:
            self._say(f"not saved: {exc}")
            return None
        self.autosaver.mark_saved()
        self._say(f"{'autosaved' if autosave else 'saved'} {path} ({len(s.annotated)} annotated slices)")
        return path

    def _on_quit(self) -> None:
        try:
            if self.session is not None and self.autosaver.dirty and self.autosave_check.isChecked():
                self.save(autosave=True)
        except RuntimeError:  # the Qt side is already gone
            pass

    def _autosave(self) -> None:
        self.save(autosave=True)

    def autosave_tick(self) -> bool:
        """Called by the timer: saves when autosave is on, edits are pending and the interval passed."""
        if self.session is None or not self.autosave_check.isChecked() or not self.store_edit.text():
            return False
        return self.autosaver.maybe_save()

    def load(self, json_path: str | Path | None = None) -> None:
        s = self._need_session()
        if json_path is None:
            s.store = Path(self.store_edit.text())
            if not s.json_path.exists():
                self._say(f"no annotation of {s.case_id} in {s.store}")
                return
        s.label = self.labels_layer.data
        ann = s.load(json_path)
        edits.clear_undo(self.labels_layer)
        self.labels_layer.refresh()
        self.autosaver.mark_saved()
        self._refresh_slice_list()
        self._on_slice_changed()
        self._say(f"loaded {ann.json_path} ({len(s.annotated)} annotated slices)")

    # --- import / export ---------------------------------------------------------------------
    def import_masks(self, paths: Iterable[str | Path], *, any_case: bool = True) -> list[int]:
        """Import PNG masks / labelme JSONs (``<case>_<slice>.*``) as one undoable step; marks the slices."""
        s = self._need_session()
        masks = read_slice_masks(paths, shape=s.shape, case_id=None if any_case else s.case_id)
        if not masks:
            self._say("nothing imported")
            return []
        ks = sorted(masks)
        self.apply_block(*edits.slices_block(self.labels_layer.data, masks))
        for k in ks:
            s.mark(k)
        self.autosaver.mark_dirty()
        self._refresh_slice_list()
        self.goto_slice(ks[0])
        self._say(f"imported {len(ks)} slices: {', '.join(map(str, ks))}")
        return ks

    def export_pngs(self, folder: str | Path, *, with_images: bool = True) -> list[Path]:
        """Write the annotated slices as the notebook workflow's PNG dataset.

        ``folder/masks/<case>_<k>.png`` (0/255) and, with ``with_images``, ``folder/images/`` (the
        coronal slice windowed -1000..3000 HU): the layout ``data.source: png`` trains from.
        """
        s = self._need_session()
        s.label = self.labels_layer.data
        folder = Path(folder)
        paths = s.export_pngs(folder / "masks", image_dir=folder / "images" if with_images else None)
        row_mm, col_mm = s.image.spacing_mm[1], s.image.spacing_mm[0]
        self._say(f"exported {len(paths)} slices to {folder} (pixels {row_mm:.3g} x {col_mm:.3g} mm)")
        return paths

    def _export_dialog(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Export PNG masks to")
        if d:
            try:
                self.export_pngs(d)
            except ValueError as exc:
                self._say(str(exc))

    def _import_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Import masks", "", "Masks (*.png *.json)")
        if files:
            try:
                self.import_masks(files)
            except (OSError, ValueError) as exc:
                self._say(str(exc))

    # --- review --------------------------------------------------------------------------------
    def load_prediction(self, source: str | Path | np.ndarray) -> None:
        """Show a model prediction (file on the image's grid, or a canonical array) to review."""
        s = self._need_session()
        pred = edits.prediction_array(source, s.image)
        self.prediction = pred
        if PREDICTION_LAYER in self.viewer.layers:
            self.viewer.layers.remove(PREDICTION_LAYER)
        self.viewer.add_image(pred, name=PREDICTION_LAYER, colormap="magenta", blending="additive",
                              opacity=0.6, contrast_limits=(0.0, 1.0), **world_transform(s.image))
        self.viewer.layers.selection.active = self.labels_layer
        ks = self.predicted_slices()
        if ks:
            self.goto_slice(ks[0])
        self._say(f"prediction on {len(ks)} slices; ◀ ▶ step through them, Accept copies one in")

    def predicted_slices(self) -> list[int]:
        """The coronal slices on which the loaded prediction has electrode."""
        return [] if self.prediction is None else prediction_slices(self.prediction)

    def accept_prediction(self, slices: Iterable[int]) -> list[int]:
        """Copy the prediction into the annotation on ``slices`` (one undoable step) and mark them."""
        s = self._need_session()
        if self.prediction is None:
            self._say("load a prediction first")
            return []
        ks = sorted({int(k) for k in slices})
        if not ks:
            return []
        self.apply_block(*edits.slices_block(self.labels_layer.data, {k: self.prediction[k] >= 0.5 for k in ks}))
        for k in ks:
            s.mark(k)
        self.autosaver.mark_dirty()
        self._refresh_slice_list()
        self._say(f"accepted the prediction on {len(ks)} slice(s)")
        return ks

    def _prediction_dialog(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Prediction", "", "Images (*.nii *.nii.gz *.nrrd *.mha)")
        if f:
            try:
                self.load_prediction(f)
            except (OSError, ValueError) as exc:
                self._say(str(exc))
