"""Open a case in a viewer with the annotation widget docked (used by ``cochseg3d annotate``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari_cochseg3d._widget import AnnotationWidget

if TYPE_CHECKING:
    import napari

PLUGIN = "napari-cochseg3d"


def open_case(viewer: "napari.viewer.Viewer", case: str | Path, *, store: str | Path | None = None,
              prediction: str | Path | None = None, autosave_s: float = 120.0) -> AnnotationWidget:
    """Open ``case`` (DICOM folder, image file, or ``*.annotation.json``) and start annotating it.

    Args:
        viewer: the napari viewer.
        case: the image, or an annotation record (its image is opened, its folder is the store).
        store: annotation store folder (default: the record's folder, else ``./annotations``).
        prediction: optional model label/probability file on the case's grid to review.
        autosave_s: autosave interval in seconds (0: off).

    Returns:
        The docked widget.
    """
    case = Path(case)
    if case.name.endswith(".annotation.json"):
        from cochseg3d.annotation import load_annotation

        ann = load_annotation(case)
        store = store or case.parent
        case = ann.image_path
        if not case.exists():
            raise FileNotFoundError(f"{ann.json_path}: its image {case} is missing")
    layers = viewer.open(str(case), plugin=PLUGIN)
    widget = AnnotationWidget(viewer, store=store or Path.cwd() / "annotations", autosave_s=autosave_s)
    viewer.window.add_dock_widget(widget, name="Electrode annotation", area="right")
    widget.attach(layers[0])
    if prediction:
        widget.load_prediction(prediction)
    return widget
