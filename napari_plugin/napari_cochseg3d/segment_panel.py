"""The dock's *Segment* panel: run ``cochseg3d.segment`` on the shown image in a worker thread.

The prediction becomes a Labels layer and the contacts a Points layer (E1..EN), both with the image
layer's own transform, so they overlay it in 2D and in 3D (the *3D* toggle).
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
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
)

from cochseg3d.volume import Volume

if TYPE_CHECKING:
    import napari
    import torch

    from cochseg3d.pipeline import Result

log = logging.getLogger(__name__)

SEGMENTATION_LAYER = "segmentation"
CONTACTS_LAYER = "contacts"
#: the electrode choice that lets the contact finder decide
AUTO_ELECTRODE = "auto"


# --- no Qt below this line up to the panel ------------------------------------------------------
def layer_transform(layer) -> dict[str, Any]:
    """The data -> world transform of a napari layer, as keyword arguments for a new layer."""
    kw = {"scale": tuple(layer.scale), "translate": tuple(layer.translate), "rotate": np.asarray(layer.rotate),
          "shear": np.asarray(layer.shear), "affine": np.asarray(layer.affine.affine_matrix)}
    if getattr(layer, "units", None) is not None:
        kw["units"] = tuple(str(u) for u in layer.units)
    return kw


def detached(can: Volume) -> Volume:
    """``can`` without its ``source_grid``: :func:`cochseg3d.segment` then returns the label on
    exactly this (the layer's) grid instead of resampling it back to the original series."""
    return Volume(can.array, can.spacing_mm, can.origin_mm, can.direction,
                  {k: v for k, v in can.meta.items() if k != "source_grid"})


def contacts_to_data(can: Volume, lps_mm: np.ndarray) -> np.ndarray:
    """Contact centres (LPS mm) as continuous ``(k, row, col)`` indices of the stack ``can``."""
    lps = np.asarray(lps_mm, dtype=float).reshape(-1, 3)
    return can.lps_to_index(lps)[:, ::-1]  # (i, j, k) -> numpy's (k, j, i)


def contact_labels(result: "Result", electrode: str | None) -> list[str]:
    """E1..EN in the vendor's numbering (the chosen electrode, else the one the finder assumed)."""
    from cochseg3d.clinical.measures import contact_names, vendor_of

    vendor = None
    if electrode:
        from cochseg3d.electrodes import VENDORS, find_model

        vendor = electrode if electrode in VENDORS else getattr(find_model(electrode), "vendor", None)
    if vendor is None:
        vendor = vendor_of(result.contacts.info)[0]
    return contact_names(len(result.contacts.lps_mm), vendor)


def run_segment(can: Volume, model: "str | Path | torch.nn.Module | None", *, electrode: str | None,
                device: str = "auto") -> tuple["Result", np.ndarray]:
    """Segment the canonical stack ``can``; returns the result and the label as an array of ``can``'s shape."""
    import cochseg3d

    res = cochseg3d.segment(detached(can), model=model, electrode=electrode, device=device)
    if not res.label.grid.allclose(can.grid):  # the pipeline keeps the input's grid; guard it anyway
        raise ValueError(f"segmentation came back on another grid ({res.label.array.shape}, stack {can.array.shape})")
    return res, np.asarray(res.label.array, dtype=np.uint8)


def result_layers(transform: dict[str, Any], can: Volume, result: "Result", label: np.ndarray,
                  names: list[str]) -> tuple[Any, Any]:
    """The Labels and Points layers of a result, on ``transform`` (the image layer's).

    Built in the worker thread: a first Labels layer costs seconds (imports, colour tables) that
    the UI thread then does not wait for; only adding them to the viewer is left to it.
    """
    from napari.layers import Labels, Points

    labels = Labels(label, name=SEGMENTATION_LAYER, opacity=0.6,
                    metadata={"cochseg3d": {"qc": result.qc, "case_id": result.case_id}}, **transform)
    lps = np.asarray(result.contacts.lps_mm, dtype=float).reshape(-1, 3)
    points = Points(contacts_to_data(can, lps), name=CONTACTS_LAYER, features={"name": names},
                    size=2.0 * float(min(can.spacing_mm)), face_color="yellow", border_color="black",
                    text={"string": "{name}", "color": "yellow", "size": 10, "anchor": "upper_left"},
                    metadata={"cochseg3d": {"lps_mm": lps.tolist()}}, **transform)
    return labels, points


def segment_job(can: Volume, model: "str | Path | torch.nn.Module | None", electrode: str | None,
                transform: dict[str, Any]) -> tuple["Result", tuple[Any, Any]]:
    """What the worker thread does: segment, then build the layers to show."""
    result, label = run_segment(can, model, electrode=electrode)
    return result, result_layers(transform, can, result, label, contact_labels(result, electrode))


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
        self._build()
        self._say_fn = say
        viewer.dims.events.ndisplay.connect(self._sync_3d)

    def _build(self) -> None:
        from cochseg3d.electrodes import VENDORS

        f = QFormLayout(self)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("default (the model shipped with cochseg3d)")
        self.model_edit.setToolTip("a checkpoint (.pt) or a training run folder; empty: the shipped model")
        self.model_edit.textEdited.connect(lambda *_: setattr(self, "_network", None))
        pick = QPushButton("…")
        pick.setMaximumWidth(28)
        pick.clicked.connect(self._choose_model)
        row = QHBoxLayout()
        row.addWidget(self.model_edit, 1)
        row.addWidget(pick)
        f.addRow("Model", row)
        self.electrode_combo = QComboBox()
        self.electrode_combo.addItems([AUTO_ELECTRODE, *VENDORS])
        self.electrode_combo.setToolTip("the implanted array's vendor: its contact count and pitch place the contacts")
        f.addRow("Electrode", self.electrode_combo)
        self.segment_btn = QPushButton("Segment")
        self.segment_btn.clicked.connect(lambda *_: self.run())
        self.view3d_check = QCheckBox("3D")
        self.view3d_check.setToolTip("show the volume and the array in 3D (napari's 2D/3D switch)")
        self.view3d_check.toggled.connect(self.set_3d)
        row = QHBoxLayout()
        row.addWidget(self.segment_btn, 1)
        row.addWidget(self.view3d_check)
        f.addRow(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
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
        return self.worker is not None

    # --- 3D --------------------------------------------------------------------------------
    def set_3d(self, on: bool) -> None:
        self.viewer.dims.ndisplay = 3 if on else 2

    def _sync_3d(self, event=None) -> None:
        self.view3d_check.blockSignals(True)
        self.view3d_check.setChecked(self.viewer.dims.ndisplay == 3)
        self.view3d_check.blockSignals(False)

    # --- segment -----------------------------------------------------------------------------
    def run(self) -> bool:
        """Start segmenting the current image in a worker thread; False when it cannot start."""
        from napari.qt.threading import create_worker

        from napari_cochseg3d._widget import _volume_of

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
        can = _volume_of(layer)
        self.result = None
        # errors go to the status line (one line), not to napari's traceback notification
        self.worker = create_worker(segment_job, can, model, self.electrode(), layer_transform(layer),
                                    _ignore_errors=True)
        self.worker.returned.connect(lambda out: self._on_done(layer, *out))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.segment_btn.setEnabled(False)
        self.progress.setRange(0, 0)  # busy: the pipeline reports no fraction done
        self._t0 = time.perf_counter()
        self._clock.start(500)
        self._say(f"segmenting {layer.name} with {self._model_name(model)} …")
        self.worker.start()
        return True

    def _model_name(self, model) -> str:
        if model is None:
            return "the shipped model"
        return Path(model).name if isinstance(model, (str, Path)) else f"a {type(model).__name__} network"

    def _tick(self) -> None:
        self.status.setText(f"segmenting … {time.perf_counter() - self._t0:.0f} s")

    def _on_finished(self) -> None:
        self.worker = None
        self._clock.stop()
        self.segment_btn.setEnabled(True)
        self.progress.setRange(0, 1)

    def _on_error(self, exc: Exception) -> None:
        self.progress.setValue(0)
        self._say(f"segmentation failed: {' '.join(str(exc).split())}")

    def _on_done(self, layer, result: "Result", layers: tuple) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.show_layers(layer, *layers)
        self.progress.setValue(1)
        n = len(result.contacts.lps_mm)
        verdict = (result.qc or {}).get("verdict", "-")
        self._say(f"{layer.name}: {int(result.label.array.sum())} electrode voxels, {n} contacts "
                  f"({result.contacts.method}), QC {verdict}, in {self.seconds:.1f} s")
        self.result = result
        self.segmented.emit(result)

    def show_layers(self, image, labels, points) -> None:
        """Add the segmentation and contacts layers (replacing earlier ones); ``image`` stays selected."""
        active = self.viewer.layers.selection.active
        for new in (labels, points):
            if new.name in self.viewer.layers:
                self.viewer.layers.remove(new.name)
            self.viewer.add_layer(new)
        self.viewer.layers.selection.active = active if active in self.viewer.layers else image
