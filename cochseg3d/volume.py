"""Volumes with their geometry, the canonical coronal stack, and image file I/O.

Conventions (the same as SimpleITK / ITK / DICOM):

* ``Volume.array`` is indexed ``[k, j, i]`` (numpy order of ``sitk.GetArrayFromImage``).
* ``spacing_mm``, ``origin_mm`` and ``direction`` are in ITK order ``(i, j, k)`` and LPS patient
  space: ``direction[:, n]`` is the unit vector of index axis ``n`` in (L, P, S) coordinates.
* The canonical orientation is ``"LIP"``: i -> patient Left, j -> Inferior, k -> Posterior, so
  ``canonical_volume.array[k]`` is the k-th coronal slice (anterior -> posterior), rows run superior
  -> inferior and columns patient right -> left, as a radiologist sees a coronal image.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

CANONICAL_ORIENTATION = "LIP"
#: direction matrix of the canonical grid (columns: i -> +L, j -> -S, k -> +P in LPS)
CANONICAL_DIRECTION = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
_AXIS_TOL = 1e-4


@dataclass(frozen=True)
class Grid:
    """The sampling grid of a volume: size, spacing, origin and direction (ITK order, LPS mm)."""

    size: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major like sitk.Image.GetDirection()

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def reference_image(self) -> sitk.Image:
        img = sitk.Image([int(s) for s in self.size], sitk.sitkUInt8)
        img.SetSpacing([float(s) for s in self.spacing_mm])
        img.SetOrigin([float(o) for o in self.origin_mm])
        img.SetDirection([float(d) for d in self.direction])
        return img

    def is_axis_aligned(self, tol: float = _AXIS_TOL) -> bool:
        d = np.abs(self.direction_matrix)
        return bool(np.all((d < tol) | (np.abs(d - 1.0) < tol)))

    def allclose(self, other: "Grid", atol_mm: float = 1e-3) -> bool:
        return (
            tuple(self.size) == tuple(other.size)
            and np.allclose(self.spacing_mm, other.spacing_mm, atol=atol_mm)
            and np.allclose(self.origin_mm, other.origin_mm, atol=atol_mm)
            and np.allclose(self.direction, other.direction, atol=1e-5)
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Grid":
        return cls(
            size=tuple(int(s) for s in d["size"]),
            spacing_mm=tuple(float(s) for s in d["spacing_mm"]),
            origin_mm=tuple(float(s) for s in d["origin_mm"]),
            direction=tuple(float(s) for s in d["direction"]),
        )


@dataclass
class Volume:
    """A 3D image and its geometry; geometry never leaves an array's side.

    Attributes:
        array: voxel values indexed ``[k, j, i]`` (HU for CT, integer labels for masks).
        spacing_mm: voxel size along ``(i, j, k)`` in mm.
        origin_mm: LPS position of voxel ``(0, 0, 0)``'s centre in mm.
        direction: 3x3 matrix whose column ``n`` is index axis ``n`` in LPS.
        meta: free-form provenance (series UID, description, source grid ...). Never PatientName.
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise ValueError(f"Volume needs a 3D array, got shape {self.array.shape}")
        self.spacing_mm = tuple(float(s) for s in self.spacing_mm)  # type: ignore[assignment]
        self.origin_mm = tuple(float(o) for o in self.origin_mm)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if any(s <= 0 for s in self.spacing_mm):
            raise ValueError(f"spacing must be positive, got {self.spacing_mm}")

    # --- geometry -------------------------------------------------------------------------
    @property
    def size(self) -> tuple[int, int, int]:
        """Size in ITK order ``(i, j, k)``."""
        return tuple(int(s) for s in self.array.shape[::-1])  # type: ignore[return-value]

    @property
    def grid(self) -> Grid:
        return Grid(self.size, self.spacing_mm, self.origin_mm, tuple(self.direction.ravel()))

    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping ``(i, j, k, 1)`` to LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction @ np.diag(self.spacing_mm)
        a[:3, 3] = self.origin_mm
        return a

    def affine_ras(self) -> np.ndarray:
        """4x4 matrix mapping ``(i, j, k, 1)`` to RAS mm (the NIfTI / nibabel convention)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous indices ``(..., 3)`` in ``(i, j, k)`` order to LPS mm."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction @ np.diag(self.spacing_mm)).T + np.asarray(self.origin_mm)

    def lps_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """LPS mm ``(..., 3)`` to continuous indices in ``(i, j, k)`` order."""
        m = np.linalg.inv(self.direction @ np.diag(self.spacing_mm))
        return (np.asarray(xyz, dtype=float) - np.asarray(self.origin_mm)) @ m.T

    def with_array(self, array: np.ndarray, **meta: Any) -> "Volume":
        """A new Volume on the same grid holding ``array``."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from the grid's {self.array.shape}")
        return Volume(array, self.spacing_mm, self.origin_mm, self.direction.copy(), {**self.meta, **meta})

    # --- SimpleITK bridge -----------------------------------------------------------------
    def to_sitk(self) -> sitk.Image:
        arr = self.array
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        img.SetSpacing(self.spacing_mm)
        img.SetOrigin(self.origin_mm)
        img.SetDirection(tuple(self.direction.ravel()))
        return img

    @classmethod
    def from_sitk(cls, img: sitk.Image, meta: dict[str, Any] | None = None) -> "Volume":
        if img.GetDimension() != 3:
            raise ValueError(f"expected a 3D image, got {img.GetDimension()}D")
        return cls(
            sitk.GetArrayFromImage(img),
            img.GetSpacing(),
            img.GetOrigin(),
            np.asarray(img.GetDirection()).reshape(3, 3),
            dict(meta or {}),
        )


def orientation_code(direction: np.ndarray) -> str:
    """Three-letter code (ITK/DICOMOrient convention, e.g. ``"LPS"``) of the closest axes."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        [float(d) for d in np.asarray(direction).ravel()]
    )


def _canonical_grid_for_oblique(volume: Volume) -> Grid:
    """Axis-aligned LIP grid covering ``volume``'s physical extent at its finest spacing."""
    spacing = min(volume.spacing_mm)
    i, j, k = (np.array([0, s - 1]) for s in volume.size)
    corners = np.array([[a, b, c] for a in i for b in j for c in k], dtype=float)
    lps = volume.index_to_lps(corners)
    local = lps @ CANONICAL_DIRECTION  # coordinates along the canonical axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    size = tuple(int(np.ceil((h - l) / spacing - 1e-6)) + 1 for l, h in zip(lo, hi))
    origin = CANONICAL_DIRECTION @ lo
    return Grid(size, (spacing,) * 3, tuple(origin), tuple(CANONICAL_DIRECTION.ravel()))


def resample_to_grid(
    volume: Volume, grid: Grid, *, is_label: bool = False, default_value: float | None = None
) -> Volume:
    """Resample ``volume`` onto ``grid`` (linear for images, nearest neighbour for labels)."""
    img = volume.to_sitk()
    if default_value is None:
        default_value = 0.0 if is_label else float(np.min(volume.array)) if volume.array.size else 0.0
    interp = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    out_type = img.GetPixelID() if is_label else sitk.sitkFloat32
    res = sitk.Resample(img, grid.reference_image(), sitk.Transform(), interp, default_value, out_type)
    return Volume.from_sitk(res, dict(volume.meta))


def canonical(volume: Volume, *, is_label: bool = False) -> Volume:
    """The coronal stack: ``array[k]`` is a coronal slice, anterior -> posterior.

    Axis-aligned volumes are permuted and flipped only (bit-exact, no resampling). Oblique ones are
    resampled once onto an axis-aligned LIP grid at their finest spacing. Either way the source grid
    is kept in ``meta["source_grid"]`` so :func:`from_canonical` can go back.
    """
    source = volume.meta.get("source_grid") or volume.grid.to_dict()
    if volume.grid.is_axis_aligned():
        img = sitk.DICOMOrient(volume.to_sitk(), CANONICAL_ORIENTATION)
        out = Volume.from_sitk(img, dict(volume.meta))
        # DICOMOrient leaves tiny cosine residues; snap them so grids compare exactly
        out.direction = CANONICAL_DIRECTION.copy()
    else:
        out = resample_to_grid(volume, _canonical_grid_for_oblique(volume), is_label=is_label)
    out.meta["source_grid"] = source
    return out


def from_canonical(volume: Volume, source: Grid | None = None, *, is_label: bool = True) -> Volume:
    """Bring a canonical-space volume (e.g. a label) back onto the source series' grid."""
    if source is None:
        if "source_grid" not in volume.meta:
            raise ValueError("volume has no meta['source_grid']; pass the source Grid explicitly")
        source = Grid.from_dict(volume.meta["source_grid"])
    if source.is_axis_aligned() and volume.grid.is_axis_aligned():
        img = sitk.DICOMOrient(volume.to_sitk(), orientation_code(source.direction_matrix))
        out = Volume.from_sitk(img, dict(volume.meta))
        if tuple(out.size) == tuple(source.size) and np.allclose(
            out.spacing_mm, source.spacing_mm, atol=1e-4
        ) and np.allclose(out.origin_mm, source.origin_mm, atol=1e-3):
            out.origin_mm = tuple(source.origin_mm)
            out.spacing_mm = tuple(source.spacing_mm)
            out.direction = source.direction_matrix.copy()
            out.meta.pop("source_grid", None)
            return out
    out = resample_to_grid(volume, source, is_label=is_label)
    out.meta.pop("source_grid", None)
    return out


@dataclass
class CoronalSlice:
    """One coronal image: ``array[row, col]`` rows superior -> inferior, cols right -> left."""

    array: np.ndarray
    index: int
    pixel_spacing_mm: tuple[float, float]  # (row, col) in mm
    position_mm: float  # posterior coordinate (LPS y) of the slice plane


def coronal_slices(volume: Volume) -> list[CoronalSlice]:
    """Every coronal slice of ``volume`` (reoriented to canonical first if needed)."""
    can = volume if _is_canonical(volume) else canonical(volume)
    sy, sx = can.spacing_mm[1], can.spacing_mm[0]
    y0, dy = can.origin_mm[1], can.spacing_mm[2]
    return [CoronalSlice(can.array[k], k, (sy, sx), y0 + k * dy) for k in range(can.array.shape[0])]


def _is_canonical(volume: Volume) -> bool:
    return bool(np.allclose(volume.direction, CANONICAL_DIRECTION, atol=_AXIS_TOL))


# --- file I/O -----------------------------------------------------------------------------
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(_IMAGE_SUFFIXES)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in _IMAGE_SUFFIXES:
        if name.endswith(s):
            return s
    raise ValueError(f"{path}: unsupported image file type (use one of {', '.join(_IMAGE_SUFFIXES)})")


def _gzip_content(path: Path, keep: int) -> tuple[bytes, int]:
    """(first ``keep`` bytes, total length) of a gzip file's content, checking its CRC and length.

    ITK reads a cut-short ``.nii.gz`` without a word (zeros where the data ended); the gzip
    trailer tells a whole file from a damaged one.
    """
    import gzip
    import zlib

    head, total = b"", 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                if len(head) < keep:
                    head += chunk[: keep - len(head)]
                total += len(chunk)
    except EOFError:
        raise ValueError(f"{path}: truncated gzip data (the file ends before its end marker); "
                         "copy it again") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise ValueError(f"{path}: corrupt gzip data ({exc}); copy it again") from None
    return head, total


def _nifti_layout(head: bytes) -> tuple[int, int, list[float]] | None:
    """(bytes a NIfTI-1/-2 file needs, dimensions, spatial voxel sizes) from its header, or None."""
    import struct

    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            dim = struct.unpack(order + "8h", head[40:56])
            bitpix = struct.unpack(order + "h", head[72:74])[0]
            pixdim = struct.unpack(order + "8f", head[76:108])
            offset = int(struct.unpack(order + "f", head[108:112])[0])
            break
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            bitpix = struct.unpack(order + "h", head[14:16])[0]
            dim = struct.unpack(order + "8q", head[16:80])
            pixdim = struct.unpack(order + "8d", head[104:168])
            offset = struct.unpack(order + "q", head[168:176])[0]
            break
    else:
        return None
    n = max(1, min(int(dim[0]), 7))
    voxels = int(np.prod([max(int(d), 1) for d in dim[1:n + 1]], dtype=np.int64))
    return offset + voxels * max(int(bitpix), 0) // 8, n, [float(v) for v in pixdim[1:min(n, 3) + 1]]


def check_image_file(path: str | os.PathLike) -> None:
    """Refuse an image file that is not whole before handing it to ITK: not a regular file, empty,
    damaged gzip, a NIfTI shorter than its header says, or NIfTI voxel sizes that are not positive.

    Raises:
        ValueError: naming the file and what is wrong with it.
    """
    from cochseg3d.utils import not_regular_reason

    path = Path(path)
    kind = not_regular_reason(path)
    if kind is not None:
        raise ValueError(f"{path}: {kind}")
    name = path.name.lower()
    if name.endswith(".gz"):
        head, total = _gzip_content(path, 540)
    elif name.endswith(".nii"):
        with open(path, "rb") as f:
            head = f.read(540)
        total = path.stat().st_size
    else:
        return
    if not name.endswith((".nii", ".nii.gz")):
        return
    layout = _nifti_layout(head)
    if layout is None:
        raise ValueError(f"{path}: not a NIfTI file (no NIfTI-1/-2 header)")
    need, _, sizes = layout
    if total < need:
        raise ValueError(f"{path}: truncated: holds {total} of the {need} bytes its header describes")
    if not all(np.isfinite(v) and v > 0 for v in sizes):
        raise ValueError(f"{path}: voxel spacing (pixdim) {sizes} is not positive; the geometry is unknown")


def read_image(path: str | os.PathLike) -> Volume:
    """Read a NIfTI / NRRD / MetaImage file into a Volume (LPS geometry, as SimpleITK reads it).

    The file is checked first (:func:`check_image_file`): a truncated or damaged file is refused,
    never read with zeros in place of the missing data.
    """
    path = Path(path)
    _suffix(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    check_image_file(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: cannot read image ({str(exc).strip().splitlines()[-1]})") from exc
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: has {img.GetNumberOfComponentsPerPixel()} components; need a scalar image")
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3:
        raise ValueError(f"{path}: is {img.GetDimension()}D; need a 3D image")
    try:
        return Volume.from_sitk(img, {"source_path": str(path)})
    except ValueError as exc:  # e.g. a zero spacing in an NRRD / MHA header
        raise ValueError(f"{path}: {exc}") from None


#: ``atomic_write``'s temporaries: ``.<name>.<pid>.<random>.tmp<suffix>`` beside the target; the pid
#: says whether the writer still runs (a killed one leaves its temporary behind)
_TEMP_RE = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp(?:\.[A-Za-z0-9.]+)?$")
#: a temporary without a pid (older releases) is stale once this old
_TEMP_STALE_S = 600.0


def is_temporary(path: str | os.PathLike) -> bool:
    """True for a temporary of :func:`atomic_write` (an unfinished file, never a result)."""
    return _TEMP_RE.match(Path(path).name) is not None


def _writer_gone(path: Path) -> bool:
    m = _TEMP_RE.match(path.name)
    if m is None:
        return False
    if m["pid"] is None:
        try:
            return time.time() - path.stat().st_mtime > _TEMP_STALE_S
        except OSError:
            return False
    pid = int(m["pid"])
    return pid != os.getpid() and not process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Remove the temporaries a killed writer left in ``folder`` (those of live writers stay).

    Returns:
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")
    removed = []
    for f in found:
        if f.is_file() and _writer_gone(f):
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path`` so readers never see a partial file.

    The temporary is unique (two processes writing one file each rename a whole file) and names
    its writer's pid, so :func:`remove_stale_temporaries` knows a killed writer's leftovers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_image(volume: Volume, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write ``volume`` atomically (format from the suffix, e.g. ``.nii.gz``)."""
    path = Path(path)
    _suffix(path)
    img = volume.to_sitk()
    return atomic_write(path, lambda tmp: sitk.WriteImage(img, str(tmp), compress))
