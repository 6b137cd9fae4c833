"""The annotation dock's controls, group by group (case, pre-fill, slices, save, review).

A mixin of :class:`napari_cochseg3d._widget.AnnotationWidget`: it builds the widgets and connects
them to the dock's methods (``attach``, ``prefill``, ``save`` ...), which do the work.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
)

from napari_cochseg3d.forms import path_row, side_row

SCOPES = ("current slice", "slice range", "whole volume")
ROI_LAYER = "ROI"


class DockLayout:
    """The dock's group boxes; each builder returns one, its widgets kept as attributes."""

    def _build_case(self, store: str | Path) -> QGroupBox:
        """The image to annotate and the annotation store."""
        case = QGroupBox("Case")
        f = QFormLayout(case)
        self.image_combo = QComboBox()
        self.attach_btn = QPushButton("Annotate")
        self.attach_btn.clicked.connect(self._safe(self.attach))
        f.addRow("Image", side_row(self.image_combo, self.attach_btn))
        self.store_edit = QLineEdit(str(store))
        f.addRow("Store", path_row(self.store_edit, self._choose_store))
        return case

    def _build_prefill(self) -> QGroupBox:
        """Threshold, scope, ROI and minimum size of the pre-fill."""
        pre = QGroupBox("Threshold pre-fill")
        f = QFormLayout(pre)
        self._threshold_rows(f)
        self._scope_rows(f)
        self.prefill_btn = QPushButton("Pre-fill")
        self.prefill_btn.setToolTip("threshold the scope into the electrode layer (Ctrl+Z undoes)")
        self.prefill_btn.clicked.connect(self._safe(self.prefill))
        f.addRow(self.prefill_btn)
        return pre

    def _threshold_rows(self, f: QFormLayout) -> None:
        """The threshold slider and box, auto and preview."""
        self.thr_slider = QSlider(Qt.Horizontal)
        self.thr_slider.setRange(-1000, 4000)
        self.thr_spin = QSpinBox()
        self.thr_spin.setRange(-1000, 4000)
        self.thr_spin.setMinimumWidth(110)
        self.thr_slider.valueChanged.connect(self.thr_spin.setValue)
        self.thr_spin.valueChanged.connect(self.thr_slider.setValue)
        self.auto_check = QCheckBox("auto")
        self.auto_check.setChecked(True)
        self.auto_check.setToolTip("threshold from the image histogram (robust to CBCT grey offsets)")
        self.auto_check.toggled.connect(self._on_auto_toggled)
        self.preview_check = QCheckBox("preview")
        self.preview_check.setToolTip("outline the voxels above the threshold on the current slice")
        self.preview_check.toggled.connect(lambda *_: self.update_preview())
        self.thr_spin.valueChanged.connect(lambda *_: self.update_preview())
        row = QHBoxLayout()
        row.addWidget(self.thr_slider, 1)
        row.addWidget(self.thr_spin)
        row.addWidget(QLabel("HU"))
        f.addRow("Threshold", row)
        row = QHBoxLayout()
        row.addWidget(self.auto_check)
        row.addWidget(self.preview_check)
        row.addStretch(1)
        f.addRow("", row)

    def _scope_rows(self, f: QFormLayout) -> None:
        """Scope (slice, range, volume), the range, the ROI, the minimum size and add mode."""
        self.scope_combo = QComboBox()
        self.scope_combo.addItems(SCOPES)
        self.scope_combo.setMinimumWidth(130)
        self.first_spin, self.last_spin = QSpinBox(), QSpinBox()
        self.first_spin.setToolTip("first coronal slice of the range")
        self.last_spin.setToolTip("last coronal slice of the range")
        self.scope_combo.currentTextChanged.connect(self._on_scope_changed)
        f.addRow("Scope", self.scope_combo)
        for sp in (self.first_spin, self.last_spin):
            sp.setMinimumWidth(90)
        row = QHBoxLayout()
        row.addWidget(self.first_spin)
        row.addWidget(QLabel("to"))
        row.addWidget(self.last_spin)
        row.addStretch(1)
        f.addRow("Slices", row)
        self.roi_check = QCheckBox("limit to ROI")
        self.roi_check.setToolTip(f"only inside the last rectangle of the '{ROI_LAYER}' shapes layer")
        roi_btn = QPushButton("Draw ROI")
        roi_btn.clicked.connect(self._safe(self.draw_roi))
        f.addRow("Region", side_row(self.roi_check, roi_btn))
        self.min_size_spin = QSpinBox()
        self.min_size_spin.setRange(1, 100000)
        self.min_size_spin.setValue(4)
        self.min_size_spin.setSuffix(" voxels")
        self.min_size_spin.setMinimumWidth(118)
        self.min_size_spin.setToolTip("drop connected components smaller than this")
        self.add_check = QCheckBox("add (keep painted)")
        self.add_check.setToolTip("add to the label instead of replacing the scope")
        row = QHBoxLayout()
        row.addWidget(self.min_size_spin)
        row.addStretch(1)
        row.addWidget(self.add_check)
        f.addRow("Min size", row)

    def _build_slices(self) -> QGroupBox:
        """Mark the current slice; step through and list the annotated ones."""
        sl = QGroupBox("Annotated slices (training data)")
        v = QVBoxLayout(sl)
        row = QHBoxLayout()
        self.mark_btn = QPushButton("Mark slice")
        self.mark_btn.setCheckable(True)
        self.mark_btn.clicked.connect(self._safe(lambda: self.mark(annotated=self.mark_btn.isChecked())))
        prev_btn, next_btn = QPushButton("◀"), QPushButton("▶")
        prev_btn.setToolTip("previous annotated slice")
        next_btn.setToolTip("next annotated slice")
        prev_btn.clicked.connect(lambda: self.step_to(sorted(self.session.annotated) if self.session else [], -1))
        next_btn.clicked.connect(lambda: self.step_to(sorted(self.session.annotated) if self.session else [], +1))
        row.addWidget(self.mark_btn, 1)
        row.addWidget(prev_btn)
        row.addWidget(next_btn)
        v.addLayout(row)
        self.slice_list = QListWidget()
        self.slice_list.setMaximumHeight(90)
        self.slice_list.itemDoubleClicked.connect(lambda it: self.goto_slice(int(it.data(Qt.UserRole))))
        v.addWidget(self.slice_list)
        return sl

    def _build_io(self, autosave_s: float) -> QGroupBox:
        """Save / load, autosave, PNG export and import."""
        io = QGroupBox("Save")
        g = QGridLayout(io)
        save_btn, load_btn = QPushButton("Save"), QPushButton("Load")
        save_btn.clicked.connect(self._safe(self.save))
        load_btn.clicked.connect(self._safe(self.load))
        self.autosave_check = QCheckBox("autosave every")
        self.autosave_check.setChecked(autosave_s > 0)
        self.autosave_spin = QSpinBox()
        self.autosave_spin.setRange(5, 3600)
        self.autosave_spin.setValue(int(autosave_s) if autosave_s > 0 else 120)
        self.autosave_spin.setSuffix(" s")
        self.autosave_spin.valueChanged.connect(lambda s: setattr(self.autosaver, "interval_s", float(s)))
        g.addWidget(save_btn, 0, 0)
        g.addWidget(load_btn, 0, 1)
        g.addWidget(self.autosave_check, 1, 0)
        g.addWidget(self.autosave_spin, 1, 1)
        exp_btn, imp_btn = QPushButton("Export PNGs…"), QPushButton("Import PNG/labelme…")
        exp_btn.clicked.connect(self._export_dialog)
        imp_btn.clicked.connect(self._import_dialog)
        g.addWidget(exp_btn, 2, 0)
        g.addWidget(imp_btn, 2, 1)
        return io

    def _build_review(self) -> QGroupBox:
        """Load a prediction, step through it, accept slices of it."""
        rv = QGroupBox("Review a prediction")
        g = QGridLayout(rv)
        pred_btn = QPushButton("Load prediction…")
        pred_btn.clicked.connect(self._prediction_dialog)
        p_prev, p_next = QPushButton("◀"), QPushButton("▶")
        p_prev.setToolTip("previous slice with predicted electrode")
        p_next.setToolTip("next slice with predicted electrode")
        p_prev.clicked.connect(lambda: self.step_to(self.predicted_slices(), -1))
        p_next.clicked.connect(lambda: self.step_to(self.predicted_slices(), +1))
        acc_btn, acc_all_btn = QPushButton("Accept slice"), QPushButton("Accept all")
        acc_btn.setToolTip("copy the prediction of this slice into the annotation and mark it")
        acc_btn.clicked.connect(self._safe(lambda: self.accept_prediction([self.current_slice()])))
        acc_all_btn.clicked.connect(self._safe(lambda: self.accept_prediction(self.predicted_slices())))
        g.addWidget(pred_btn, 0, 0, 1, 2)
        g.addWidget(p_prev, 0, 2)
        g.addWidget(p_next, 0, 3)
        g.addWidget(acc_btn, 1, 0, 1, 2)
        g.addWidget(acc_all_btn, 1, 2, 1, 2)
        return rv
