"""cochseg3d: cochlear-implant electrode segmentation in cone-beam CT, built on MONAI.

``cochseg3d.segment(input, output)`` segments one patient (see :func:`cochseg3d.pipeline.segment`);
it and its ``Result`` are imported on first use, so ``import cochseg3d`` loads neither torch nor itk.
"""

from typing import TYPE_CHECKING, Any

from cochseg3d.volume import Grid, Volume, canonical, coronal_slices, from_canonical, read_image, write_image

if TYPE_CHECKING:
    from cochseg3d.pipeline import Result, segment

__version__ = "0.1.0"
__all__ = ["Grid", "Result", "Volume", "canonical", "coronal_slices", "from_canonical", "read_image", "segment",
           "write_image"]

_LAZY = {"segment": "cochseg3d.pipeline", "Result": "cochseg3d.pipeline"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cochseg3d' has no attribute {name!r}")
