"""Deflated Explicit VR Little Endian files, read with bounded memory.

Such a file is its file meta group followed by one raw deflate stream holding the whole dataset.
pydicom inflates the stream whole even to read the header, so a few hundred kB of file can hold
gigabytes once inflated (zeros pack ~1000:1); here only the header's first bytes are inflated to read
it, the check that every claimed pixel is there counts bytes without keeping them, and a slice
keeps only its own pixels.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset, read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

#: bytes of file read (and inflated output kept) per step
CHUNK = 1 << 20
#: the header (everything before the pixel data) is read from at most this much inflated data
MAX_HEADER_BYTES = 64 << 20
#: most of a file meta group searched for the transfer syntax
MAX_META_BYTES = 1 << 16
_PIXEL_DATA = 0x7FE00010
_PIXEL_DATA_TAG = struct.pack("<HH", 0x7FE0, 0x0010)
_UID = DeflatedExplicitVRLittleEndian.encode()


def _meta_end(head: bytes) -> int | None:
    """Where the file meta group ends, from a file's first 144 bytes (preamble, ``DICM`` and the
    group length element (0002,0000)); None when they are not laid out so."""
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        return None
    return 144 + struct.unpack("<I", head[140:144])[0]


def looks_deflated(f: BinaryIO) -> bool:
    """The open file ``f`` (at its start) has a file meta group naming the deflated syntax."""
    end = _meta_end(f.read(144))
    return end is not None and _UID in f.read(max(0, min(end - 144, MAX_META_BYTES)))


def _seek_stream(f: BinaryIO) -> None:
    end = _meta_end(f.read(144))
    if end is None:
        raise ValueError("deflated file without a file meta group length (0002,0000)")
    f.seek(end)


def stream_start(path: Path) -> int:
    """Where the deflate stream starts: after the 128-byte preamble, ``DICM`` and the file meta
    group, whose length its first element (0002,0000) gives.

    Raises:
        ValueError: no file meta group length where the standard puts it.
    """
    with open(path, "rb") as f:
        _seek_stream(f)
        return f.tell()


def inflated(path: Path, stop: int, start: int = 0) -> tuple[bytes, int]:
    """Bytes ``start:stop`` of the inflated dataset and how many it has up to ``stop`` (fewer: the
    stream ends first). Output before ``start`` is counted, not kept.

    Raises:
        ValueError: no file meta group length.
        zlib.error: a corrupt stream.
    """
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    kept, n = [], 0
    with open(path, "rb") as f:
        _seek_stream(f)
        data = b""
        while n < stop and not d.eof:
            if not data:
                data = f.read(CHUNK)
                if not data:
                    break
            out = d.decompress(data, min(CHUNK, stop - n))
            data = d.unconsumed_tail
            if out[max(0, start - n):]:
                kept.append(out[max(0, start - n):])
            n += len(out)
    return b"".join(kept), min(n, stop)


def read_header(path: Path) -> tuple[pydicom.Dataset, int | None, bytes]:
    """The dataset before its pixel data (with its file meta), the pixel data element's offset in
    the inflated stream (None: no pixel data) and the element's first 12 bytes (tag, VR, length).

    Raises:
        ValueError: no file meta group length; a header over :data:`MAX_HEADER_BYTES`.
        zlib.error, pydicom's errors: a corrupt stream or header.
    """
    size = 1 << 16
    while True:
        prefix, n = inflated(path, size)
        fp = DicomBytesIO(prefix)
        fp.is_little_endian, fp.is_implicit_VR = True, False
        complete = n < size  # the whole stream is in the prefix
        try:
            ds = read_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                              stop_when=lambda tag, vr, length: tag == _PIXEL_DATA)
            pos = fp.tell()
            at_pixels = prefix[pos:pos + 4] == _PIXEL_DATA_TAG
        except (EOFError, struct.error, ValueError, OSError):
            if complete:
                raise
            at_pixels = False
        if at_pixels and len(prefix) >= pos + 12:
            break
        if complete:
            pos = None
            break
        if size >= MAX_HEADER_BYTES:
            raise ValueError(f"a header of more than {MAX_HEADER_BYTES >> 20} MB before the pixel data")
        size *= 4
    ds.file_meta = read_file_meta_info(path)
    return ds, pos, (prefix[pos:pos + 12] if pos is not None else b"")
