"""Make docs/napari_widget.png: the annotation widget docked beside a pre-filled coronal slice.

    xvfb-run -a .venv/bin/python napari_plugin/scripts/screenshot.py [--out docs/napari_widget.png]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "docs" / "napari_widget.png"))
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--preset", default="clinical")
    ap.add_argument("--vendor", default="MED-EL")
    ap.add_argument("--size", default="1600x960", help="window WIDTHxHEIGHT in pixels")
    ap.add_argument("--field-mm", type=float, default=30.0, help="height of the view in mm")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    import warnings

    warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")  # no toast in the picture
    import napari
    from napari.settings import get_settings
    from qtpy.QtWidgets import QApplication

    get_settings().application.gui_notification_level = "none"

    from cochseg3d.phantom import generate_patient
    from napari_cochseg3d._widget import AnnotationWidget
    from napari_cochseg3d.layers import image_layer

    case = generate_patient(args.seed, preset=args.preset, vendor=args.vendor, noise_hu=60.0)
    viewer = napari.Viewer(title="cochseg3d annotate", show=True)
    w, h = (int(x) for x in args.size.split("x"))
    viewer.window.resize(w, h)
    data, kwargs, _ = image_layer(case.image, name=case.case_id)
    layer = viewer.add_image(data, **kwargs)
    widget = AnnotationWidget(viewer, store=Path("annotations"), autosave_s=120)
    viewer.window.add_dock_widget(widget, name="Electrode annotation", area="right")
    widget.attach(layer)
    widget.scope_combo.setCurrentText("whole volume")
    widget.prefill()
    lab = widget.labels_layer.data
    counts = lab.reshape(lab.shape[0], -1).sum(1)
    k = int(np.argmax(counts))
    for extra in (k - 3, k + 4):
        if 0 <= extra < lab.shape[0] and counts[extra]:
            widget.mark(extra)
    widget.goto_slice(k)
    widget.mark(k)
    widget.preview_check.setChecked(True)
    # frame the electrode: centre on its pixels in this slice, zoomed so the cochlea fills the view
    rows, cols = np.nonzero(lab[k])
    centre = layer.data_to_world([k, rows.mean(), cols.mean()])
    viewer.camera.center = tuple(centre[1:])
    QApplication.processEvents()
    canvas_px = min(viewer.window._qt_viewer.canvas.size)
    viewer.camera.zoom = canvas_px / args.field_mm
    viewer.layers.selection.active = widget.labels_layer
    widget.labels_layer.mode = "paint"
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for _ in range(5):
        QApplication.processEvents()
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    for _ in range(5):
        QApplication.processEvents()
    img = viewer.screenshot(canvas_only=False, flash=False)
    from PIL import Image

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(img)).save(out)
    print(f"{out}: {img.shape[1]}x{img.shape[0]} px, coronal slice {k}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
