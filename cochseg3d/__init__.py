"""cochseg3d: cochlear-implant electrode segmentation in cone-beam CT, built on MONAI."""

from cochseg3d.volume import Grid, Volume, canonical, coronal_slices, from_canonical, read_image, write_image

__version__ = "0.1.0"
__all__ = ["Grid", "Volume", "canonical", "coronal_slices", "from_canonical", "read_image", "write_image"]
