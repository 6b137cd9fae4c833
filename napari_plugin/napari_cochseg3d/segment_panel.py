"""The dock's *Segment* panel: run ``cochseg3d.segment`` on the shown image in a separate process.

The process (:mod:`napari_cochseg3d.segment_process`) leaves napari's interpreter lock free; a worker
thread waits for it and passes its progress on. The prediction becomes a Labels layer and the
contacts a Points layer (E1..EN), and on request the physical array fitted through the contacts a
second Labels layer (each contact named), all with the image layer's own transform, so they overlay it
in 2D and in 3D (the *3D* toggle).

napari builds a new layer's visuals and shaders on the UI thread (0.2-0.6 s each with software
OpenGL), so the result layers are made ahead, empty, when an image is opened (:meth:`SegmentPanel.prepare`,
one per event-loop turn); *Segment* then only hands them its data, and the UI answers throughout.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
)

from cochseg3d.volume import Volume
from napari_cochseg3d.edits import volume_of
from napari_cochseg3d.forms import path_row, side_row
from napari_cochseg3d.layers import array_label_kwargs, contact_names_for, contacts_to_data, points_kwargs
from napari_cochseg3d.segment_process import segment_in_process

if TYPE_CHECKING:
    import napari
    import torch

    from cochseg3d.clinical.array_label import ArrayLabel
    from cochseg3d.pipeline import Result

log = logging.getLogger(__name__)

SEGMENTATION_LAYER = "segmentation"
CONTACTS_LAYER = "contacts"
ARRAY_LAYER = "fitted array"
#: the electrode choice that lets the contact finder decide
AUTO_ELECTRODE = "auto"
#: ms between making the empty result layers: each its own event-loop turn, after the image's first draw
PREPARE_STEP_MS = 150


# --- no Qt below this line up to the panel ------------------------------------------------------
def layer_transform(layer) -> dict[str, Any]:
    """The data -> world transform of a napari layer, as keyword arguments for a new layer."""
    kw = {"scale": tuple(layer.scale), "translate": tuple(layer.translate), "rotate": np.asarray(layer.rotate),
          "shear": np.asarray(layer.shear), "affine": np.asarray(layer.affine.affine_matrix)}
    if getattr(layer, "units", None) is not None:
        kw["units"] = tuple(str(u) for u in layer.units)
    return kw


def contact_labels(result: "Result", electrode: str | None) -> list[str]:
    """E1..EN in the vendor's numbering (the chosen electrode, else the one the finder assumed)."""
    return contact_names_for(len(result.contacts.lps_mm), electrode, result.contacts.info)


def result_layers(transform: dict[str, Any], can: Volume, result: "Result", label: np.ndarray,
                  names: list[str], array: "ArrayLabel | None" = None) -> tuple[Any, ...]:
    """The Labels and Points layers of a result, on ``transform`` (the image layer's), and the
    fitted array's Labels layer when ``array`` has a label.

    Built in the worker thread: a first Labels layer costs seconds (imports, colour tables) that
    the UI thread then does not wait for; only adding them to the viewer is left to it.
    """
    from napari.layers import Labels, Points

    labels = Labels(label, name=SEGMENTATION_LAYER, opacity=0.6,
                    metadata={"cochseg3d": {"qc": result.qc, "case_id": result.case_id}}, **transform)
    lps = np.asarray(result.contacts.lps_mm, dtype=float).reshape(-1, 3)
    points = Points(contacts_to_data(can, lps), **points_kwargs(can, lps, names, name=CONTACTS_LAYER), **transform)
    if array is None or array.label is None:
        return labels, points
    return labels, points, array_layer(transform, array)


def array_layer(transform: dict[str, Any], array: "ArrayLabel"):
    """The fitted physical array as a Labels layer whose values are named and coloured as in its ``.ctbl``."""
    from napari.layers import Labels

    from cochseg3d.clinical.array_label import colours

    data = np.asarray(array.label.array, dtype=np.uint8)
    return Labels(data, name=ARRAY_LAYER, **array_label_kwargs(colours(array.names)), **transform)


def segment_job(can: Volume, model: "str | Path | torch.nn.Module | None", electrode: str | None,
                transform: dict[str, Any], fit_array: bool = False):
    """What the worker thread does: wait for the segmenting process (yielding its progress), then
    build the layers to show; returns ``(result, (labels, points[, array]), array)``."""
    result, label, array = yield from segment_in_process(can, model, electrode, fit_array=fit_array)
    return result, result_layers(transform, can, result, label, contact_labels(result, electrode), array), array


# --- the panel -----------------------------------------------------------------------------------
class SegmentPanel(QGroupBox):
    """Model choice, *Segment* (in a worker thread, with a busy bar) and the *3D* toggle.

    Args:
        viewer: the napari viewer.
        image_layer: returns the image layer to segment (the dock's current one), or None.
        say: where messages go (the dock's status line); default this panel's own label.

    Signals:
        segmented(object): the :class:`cochseg3d.pipeline.Result` after the layers were added.
    """

    segmented = Signal(object)

    def __init__(self, viewer: "napari.viewer.Viewer", image_layer: Callable[[], Any], *,
                 say: Callable[[str], None] | None = None) -> None:
        super().__init__("Segment with a model")
        self.viewer = viewer
        self._image_layer = image_layer
        self._network: "torch.nn.Module | None" = None
        self.worker = None
        self.result: "Result | None" = None
        self.seconds: float | None = None
        self._t0 = 0.0
        self._showing = False
        self._build()
        self._say_fn = say
        viewer.dims.events.ndisplay.connect(self._sync_3d)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)

    def _build(self) -> None:
        from cochseg3d.electrodes import VENDORS

        f = QFormLayout(self)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("default (the model shipped with cochseg3d)")
        self.model_edit.setToolTip("a checkpoint (.pt) or a training run folder; empty: the shipped model")
        self.model_edit.textEdited.connect(lambda *_: setattr(self, "_network", None))
        f.addRow("Model", path_row(self.model_edit, self._choose_model))
        self.electrode_combo = QComboBox()
        self.electrode_combo.addItems([AUTO_ELECTRODE, *VENDORS])
        self.electrode_combo.setToolTip("the implanted array's vendor: its contact count and pitch place the contacts")
        f.addRow("Electrode", self.electrode_combo)
        self.segment_btn = QPushButton("Segment")
        self.segment_btn.clicked.connect(lambda *_: self.run())
        self.view3d_check = QCheckBox("3D")
        self.view3d_check.setToolTip("show the volume and the array in 3D (napari's 2D/3D switch)")
        self.view3d_check.toggled.connect(self.set_3d)
        self.array_check = QCheckBox("fitted array")
        self.array_check.setToolTip("also show the physical array fitted through the contacts (each contact "
                                    "and the carrier a named label), as segment writes <case>.array.nii.gz")
        self.array_check.toggled.connect(lambda on: on and self.prepare(self._image_layer()))
        f.addRow(side_row(self.segment_btn, self.view3d_check, self.array_check))
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("chunk %v/%m")
        f.addRow(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        f.addRow(self.status)
        self._clock = QTimer(self)
        self._clock.timeout.connect(self._tick)

    # --- small helpers -----------------------------------------------------------------------
    def _say(self, text: str) -> None:
        self.status.setText(text)
        if self._say_fn is not None:
            self._say_fn(text)
        log.info(text)

    def _choose_model(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Model checkpoint", self.model_edit.text(), "Checkpoints (*.pt *.pth)")
        if f:
            self.use_model(f)

    def use_model(self, model: "str | Path | torch.nn.Module | None") -> None:
        """Segment with ``model`` from now on: a checkpoint path, a loaded network, or None (shipped)."""
        import torch

        if isinstance(model, torch.nn.Module):
            self._network = model
            self.model_edit.setText("")
            self.model_edit.setPlaceholderText(f"(a loaded {type(model).__name__} network)")
            return
        self._network = None
        self.model_edit.setPlaceholderText("default (the model shipped with cochseg3d)")
        self.model_edit.setText("" if model is None else str(model))

    def model(self) -> "str | torch.nn.Module | None":
        """What :func:`cochseg3d.segment` gets as ``model``."""
        if self._network is not None:
            return self._network
        return self.model_edit.text().strip() or None

    def checkpoint(self) -> str:
        """The checkpoint to fine-tune from: the one chosen, else ``"default"`` (the shipped model)."""
        return self.model_edit.text().strip() or "default"

    def electrode(self) -> str | None:
        e = self.electrode_combo.currentText()
        return None if e == AUTO_ELECTRODE else e

    @property
    def busy(self) -> bool:
        """True from *Segment* until the result layers are shown (or the run failed)."""
        return self.worker is not None or self._showing

    # --- 3D --------------------------------------------------------------------------------
    def set_3d(self, on: bool) -> None:
        self.viewer.dims.ndisplay = 3 if on else 2

    def _sync_3d(self, event=None) -> None:
        self.view3d_check.blockSignals(True)
        self.view3d_check.setChecked(self.viewer.dims.ndisplay == 3)
        self.view3d_check.blockSignals(False)

    # --- the result layers, made ahead ------------------------------------------------------------
    def prepare(self, image) -> None:
        """Add the result layers this panel lacks, empty and on ``image``'s transform, one per
        event-loop turn (the fitted array's only while *fitted array* is ticked); ``image`` stays selected."""
        from napari.layers import Image

        if not isinstance(image, Image) or image.ndim != 3:
            return
        wanted = [SEGMENTATION_LAYER, CONTACTS_LAYER] + ([ARRAY_LAYER] if self.array_check.isChecked() else [])
        missing = [n for n in wanted if n not in self.viewer.layers]
        if not missing:
            return
        transform, can = layer_transform(image), volume_of(image)
        for turn, name in enumerate(missing, start=1):
            QTimer.singleShot(PREPARE_STEP_MS * turn,
                              lambda name=name: self._add_empty(name, image, transform, can))

    def _on_layer_inserted(self, event) -> None:  # a bound method: napari holds it weakly
        self.prepare(event.value)

    def _add_empty(self, name: str, image, transform: dict[str, Any], can: Volume) -> None:
        from napari.layers import Labels, Points

        if name in self.viewer.layers or image not in self.viewer.layers:
            return  # a run came first, or the image is gone
        if name == CONTACTS_LAYER:
            empty = np.zeros((0, 3))
            layer = Points(empty, **points_kwargs(can, empty, [], name=name), **transform)
        else:
            layer = Labels(np.zeros((1, 1, 1), np.uint8), name=name, opacity=0.8 if name == ARRAY_LAYER else 0.6,
                           **transform)
        active = self.viewer.layers.selection.active
        self.viewer.add_layer(layer)
        self.viewer.layers.selection.active = active if active in self.viewer.layers else image

    # --- segment -----------------------------------------------------------------------------
    def run(self) -> bool:
        """Start segmenting the current image in a worker thread; False when it cannot start."""
        from napari.qt.threading import create_worker

        if self.busy:
            self._say("a segmentation is already running")
            return False
        layer = self._image_layer()
        if layer is None:
            self._say("open an image first (a DICOM folder or a NIfTI file)")
            return False
        model = self.model()
        if isinstance(model, str) and not Path(model).exists():
            self._say(f"error: {model}: no such checkpoint")
            return False
        can = volume_of(layer)
        self.result = None
        # errors go to the status line (one line), not to napari's traceback notification
        self.worker = create_worker(segment_job, can, model, self.electrode(), layer_transform(layer),
                                    self.array_check.isChecked(), _ignore_errors=True)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(lambda out: self._on_done(layer, *out))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.segment_btn.setEnabled(False)
        self.progress.setRange(0, 0)  # busy until the process reports its first chunk
        self._t0 = time.perf_counter()
        self._clock.start(500)
        self._say(f"segmenting {layer.name} with {self._model_name(model)} …")
        self.worker.start()
        return True

    def _model_name(self, model) -> str:
        if model is None:
            return "the shipped model"
        return Path(model).name if isinstance(model, (str, Path)) else f"a {type(model).__name__} network"

    def _on_progress(self, done: "tuple[int, int] | None") -> None:
        if done is not None:
            self.progress.setRange(0, done[1])
            self.progress.setValue(done[0])

    def _tick(self) -> None:
        self.status.setText(f"segmenting … {time.perf_counter() - self._t0:.0f} s")

    def _on_finished(self) -> None:
        self.worker = None
        self._clock.stop()
        self.segment_btn.setEnabled(True)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)

    def _on_error(self, exc: Exception) -> None:
        self.progress.setValue(0)
        self._say(f"segmentation failed: {' '.join(str(exc).split())}")

    def _on_done(self, layer, result: "Result", layers: tuple, array: "ArrayLabel | None") -> None:
        self.seconds = time.perf_counter() - self._t0
        self._showing = True  # show_layers lets the event loop run: the worker's end may come first
        try:
            self.show_layers(layer, *layers)
        finally:
            self._showing = False
        self.progress.setValue(self.progress.maximum())
        n = len(result.contacts.lps_mm)
        verdict = (result.qc or {}).get("verdict", "-")
        no_array = f"; no fitted array: {array.reason}" if array is not None and array.reason else ""
        self._say(f"{layer.name}: {int(result.label.array.sum())} electrode voxels, {n} contacts "
                  f"({result.contacts.method}), QC {verdict}, in {self.seconds:.1f} s{no_array}")
        self.result = result
        self.segmented.emit(result)

    def show_layers(self, image, *layers) -> None:
        """Show the segmentation, contacts and fitted-array layers (replacing earlier ones; an earlier
        fitted array this run has none for is removed); ``image`` stays selected.

        A layer of the same name and kind from an earlier run takes the new data (no new visual,
        no shader build); otherwise the layer is added. Each layer costs one event-loop turn.
        """
        from napari.layers import Labels, Points

        active = self.viewer.layers.selection.active
        if ARRAY_LAYER in self.viewer.layers and ARRAY_LAYER not in [ly.name for ly in layers]:
            self.viewer.layers.remove(ARRAY_LAYER)  # it belongs to the earlier contacts
        for new in layers:
            kind = Points if isinstance(new, Points) else Labels
            old = self.viewer.layers[new.name] if new.name in self.viewer.layers else None
            if isinstance(old, kind) and old.ndim == new.ndim:
                _take_over(old, new)
            else:
                if old is not None:
                    self.viewer.layers.remove(old)
                self.viewer.add_layer(new)
            _process_events()  # draw it before the next one: two short stalls instead of a long one
        self.viewer.layers.selection.active = active if active in self.viewer.layers else image


def _take_over(old, new) -> None:
    """Give layer ``old`` the data, transform, features and metadata of the freshly built ``new``."""
    for attr in ("scale", "translate", "rotate", "shear", "affine"):
        setattr(old, attr, getattr(new, attr))
    old.metadata = dict(new.metadata)
    old.data = new.data
    if hasattr(new, "size"):  # Points: one name per point, after the data has its new length
        old.features = new.features
        old.size = new.size
    elif len(new.features):  # the fitted array: its names and colours follow this run's contacts
        old.colormap = new.colormap
        old.features = new.features


def _process_events() -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None:
        app.processEvents()
