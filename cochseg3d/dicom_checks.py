"""Whether a DICOM header that was read describes a usable slice: what kind of image it is
(DICOMDIR, colour, secondary capture, localizer ...), and whether its image size is sane and the
pixel data present in the file can hold it (for compressed syntaxes too). Nothing is allocated.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pydicom
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    RLELossless,
    UID,
)

from cochseg3d.dicom_rawheader import _FastHeader, _int_or_none, _transfer_syntax

_SECONDARY_CAPTURE = {
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4",
}
_RAW_SYNTAXES = {ExplicitVRLittleEndian: 12, ImplicitVRLittleEndian: 8}


# --- which kind of image ------------------------------------------------------------------------
def _skip_reason(ds: pydicom.Dataset | _FastHeader) -> str | None:
    """Why a readable DICOM file is no slice of an image volume (None if it is one)."""
    sop = str(ds.get("SOPClassUID", ""))
    meta_sop = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")) if hasattr(ds, "file_meta") else ""
    if MediaStorageDirectoryStorage in (sop, meta_sop) or "DirectoryRecordSequence" in ds:
        return "DICOMDIR (a directory index; the image files are read directly)"
    spp = _int_or_none(ds.get("SamplesPerPixel")) or 1
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if spp != 1 or photometric.startswith(("RGB", "YBR", "PALETTE")):
        return f"colour image ({photometric or f'{spp} samples per pixel'}), not a volume slice"
    if sop in _SECONDARY_CAPTURE:
        return "secondary capture (screenshot/report image), not a volume slice"
    image_type = [str(t).upper() for t in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type or "SCOUT" in image_type:
        return "localizer/scout image"
    if "Rows" not in ds or "Columns" not in ds:
        return f"no image (SOP class {UID(sop).name if sop else 'unknown'})"
    if (_int_or_none(ds.get("NumberOfFrames")) or 1) > 1:
        if "PerFrameFunctionalGroupsSequence" not in ds:
            return f"multi-frame image ({ds.NumberOfFrames} frames) without per-frame geometry"
        return None  # enhanced multi-frame: geometry comes from the functional groups
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in ds]
    if missing:
        return f"no {'/'.join(missing)}: a 2D image without patient geometry"
    return None


# --- image size: checked against the bytes present before anything is allocated -----------------
#: largest accepted image side (clinical CBCT is <= 1024; 2048 for micro-CT); beyond is a broken header
MAX_IMAGE_SIDE = 8192
#: largest accepted frame count of one multi-frame file
MAX_FRAMES = 8192
#: the best compression ratio a real file can have: PackBits RLE stores at most 128 bytes in 2, and
#: JPEG / JPEG 2000 images of a scanner never come near 1000:1
_MAX_RATIO = {RLELossless: 64}
_MAX_RATIO_OTHER = 1000


def _size_reason(ds: pydicom.Dataset | _FastHeader) -> str | None:
    """Why the header's image size is unusable (None if sane): zero, absurd or unsupported."""
    rows, cols = _int_or_none(ds.get("Rows")), _int_or_none(ds.get("Columns"))
    frames = _int_or_none(ds.get("NumberOfFrames")) or 1
    bits = _int_or_none(ds.get("BitsAllocated")) or 16
    stored = _int_or_none(ds.get("BitsStored")) or bits
    if not rows or not cols or rows < 0 or cols < 0:
        return f"Rows = {rows}, Columns = {cols}: no image"
    if rows > MAX_IMAGE_SIDE or cols > MAX_IMAGE_SIDE or frames > MAX_FRAMES or frames < 1:
        return (f"header claims {cols}x{rows} pixels in {frames} frame(s); more than {MAX_IMAGE_SIDE} pixels "
                f"a side or {MAX_FRAMES} frames is a broken header, not a scan")
    if bits not in (8, 16, 32):
        return f"BitsAllocated = {bits} is not supported (8, 16 or 32)"
    if not 0 < stored <= bits:
        return f"BitsStored = {stored} does not fit BitsAllocated = {bits}"
    if (_int_or_none(ds.get("PixelRepresentation")) or 0) not in (0, 1):
        return f"PixelRepresentation = {ds.get('PixelRepresentation')} is neither 0 nor 1"
    return None


def _pixel_data_check(
    ds: pydicom.Dataset | _FastHeader, pos: int, head: bytes, file_size: int
) -> tuple[int | None, str | None]:
    """(offset of raw pixel bytes or None, reason the file is unusable or None).

    Uncompressed: the element's length and the file must hold every pixel the header claims.
    Compressed: the bytes present must be at least the claimed size over the syntax's best
    compression ratio (an RLE file claiming 60000x60000 pixels in a few kB is refused here).
    """
    reason = _size_reason(ds)
    if reason is not None:
        return None, reason
    ts = _transfer_syntax(ds)
    expected = _expected_bytes(ds)
    if ts in _RAW_SYNTAXES or ts == ExplicitVRBigEndian:
        return _uncompressed_check(ds, ts, pos, head, file_size, expected)
    return _encapsulated_check(ds, ts, pos, file_size, expected)


def _expected_bytes(ds: pydicom.Dataset | _FastHeader) -> int:
    """Bytes of pixel data the header claims (all frames, all samples)."""
    frames = _int_or_none(ds.get("NumberOfFrames")) or 1
    return int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * frames * (
        int(ds.get("BitsAllocated", 16) or 16) // 8
    )


def _uncompressed_check(
    ds: pydicom.Dataset | _FastHeader, ts: str, pos: int, head: bytes, file_size: int, expected: int
) -> tuple[int | None, str | None]:
    """The element's length and the file hold every claimed pixel; the raw offset if read directly."""
    if ts == ImplicitVRLittleEndian:
        length = struct.unpack("<I", head[4:8])[0] if len(head) >= 8 else 0
        hdr = 8
    else:
        fmt = ">I" if ts == ExplicitVRBigEndian else "<I"
        length = struct.unpack(fmt, head[8:12])[0] if len(head) >= 12 else 0
        hdr = 12
    if length == 0xFFFFFFFF:
        return None, "uncompressed transfer syntax with encapsulated pixel data"
    if pos + hdr + min(length, expected) > file_size or length < expected:
        have = max(0, file_size - pos - hdr)
        return None, f"truncated: pixel data has {min(have, length)} of {expected} bytes"
    fast = ts in _RAW_SYNTAXES and int(ds.get("BitsAllocated", 16)) in (8, 16)
    return (pos + hdr if fast else None), None


def _encapsulated_check(
    ds: pydicom.Dataset | _FastHeader, ts: str, pos: int, file_size: int, expected: int
) -> tuple[None, str | None]:
    """Compressed: a file cut short cannot hold the end of the fragments, nor beat the best ratio."""
    present = file_size - pos - 12
    if present <= 0:
        return None, "truncated: no pixel data fragments"
    ratio = _MAX_RATIO.get(ts, _MAX_RATIO_OTHER)
    if present * ratio < expected:
        frames = _int_or_none(ds.get("NumberOfFrames")) or 1
        return None, (f"header claims {int(ds.Columns)}x{int(ds.Rows)} pixels x {frames} frame(s) "
                      f"({expected} bytes) but the file holds {present} compressed bytes "
                      f"(more than {ratio}:1 is impossible for {UID(ts).name})")
    return None, None


#: deflate (zlib) never packs more than about 1032 bytes into one
_MAX_RATIO_DEFLATE = 1032


def _deflated_check(ds: pydicom.Dataset | _FastHeader, path: Path, file_size: int,
                    pos: int | None) -> tuple[int | None, str | None]:
    """Deflated Explicit VR Little Endian: the whole dataset is one zlib stream; ``pos`` is the pixel
    data element's offset in it. The claimed size must be sane and within deflate's best ratio of the
    file (a bomb is refused before inflating), and the stream must hold every claimed pixel (counted,
    not kept). Returns the pixel data's offset in the inflated stream, or why the file is skipped."""
    from cochseg3d.dicom_deflate import inflated

    reason = _size_reason(ds)
    if reason is not None:
        return None, reason
    expected = _expected_bytes(ds)
    if expected > _MAX_RATIO_DEFLATE * file_size:
        return None, (f"header claims {expected} bytes of pixels in a {file_size}-byte deflated file "
                      f"(more than {_MAX_RATIO_DEFLATE}:1 is impossible for deflate)")
    if pos is None:
        return None, "no pixel data"
    start = pos + 12  # explicit VR OB/OW: tag, VR, two reserved bytes, 4-byte length
    try:
        _, n = inflated(path, start + expected, start=start + expected)
    except (zlib.error, ValueError, OSError) as exc:
        return None, f"unreadable deflated data ({type(exc).__name__}: {exc})"
    if n < start + expected:
        return None, f"truncated: pixel data has {max(0, n - start)} of {expected} bytes"
    return start, None


def is_deflated(ds: pydicom.Dataset | _FastHeader) -> bool:
    return _transfer_syntax(ds) == DeflatedExplicitVRLittleEndian
