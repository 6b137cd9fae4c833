"""napari plugin for cochseg3d: annotate electrode masks on coronal slices."""

__version__ = "0.1.0"
