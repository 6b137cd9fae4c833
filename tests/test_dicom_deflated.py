"""Deflated Explicit VR Little Endian (1.2.840.10008.1.2.1.99): read like any series, as SimpleITK reads
it (dcm2niix refuses the syntax); a deflated file cut short or claiming more pixels than deflate can
pack is skipped with its reason, before anything is inflated or allocated."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import DeflatedExplicitVRLittleEndian

from cochseg3d.dicom import discover, load_input
from cochseg3d.dicom_header import read_file_header
from cochseg3d.phantom import generate_patient
from cochseg3d.phantom.dicom_write import write_series


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """(the uncompressed series, its deflated copy), an oblique phantom so the geometry is not trivial."""
    root = tmp_path_factory.mktemp("deflated")
    case = generate_patient(5, preset="small", orientation="oblique", shape=40)
    raw = root / "raw"
    write_series(case.image, raw, patient_id="P5", uid_seed="p5")
    out = root / "deflated"
    out.mkdir()
    for p in sorted(f for f in raw.rglob("*") if f.is_file()):
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(out / p.name, enforce_file_format=True)
    return raw, out


def test_deflated_series_reads_as_its_uncompressed_twin_and_as_simpleitk(series):
    raw, deflated = series
    a, b = load_input(raw), load_input(deflated)
    assert np.array_equal(a.array, b.array) and a.array.any()
    for key in ("spacing_mm", "origin_mm", "direction"):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), atol=1e-9)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(deflated)))
    ref = reader.Execute()
    np.testing.assert_allclose(b.array, sitk.GetArrayFromImage(ref), atol=1e-3)
    np.testing.assert_allclose(b.spacing_mm, ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(b.origin_mm, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(b.direction.ravel(), ref.GetDirection(), atol=1e-6)


def test_a_cut_deflated_file_and_a_deflate_bomb_are_skipped_with_their_reason(series, tmp_path):
    _, deflated = series
    files = sorted(deflated.iterdir())
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(files[3].read_bytes()[:-2000])
    assert "truncated" in read_file_header(cut).reason  # the zlib stream ends early
    ds = pydicom.dcmread(files[0])
    ds.Rows = ds.Columns = 8000  # 128 MB claimed in a few kB
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    bomb = tmp_path / "bomb.dcm"
    ds.save_as(bomb, enforce_file_format=True)
    assert "impossible for deflate" in read_file_header(bomb).reason
    # one bad file does not sink the series: the cut copy among the good ones is named and skipped
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in files:
        (mixed / p.name).write_bytes(p.read_bytes())
    (mixed / files[3].name).write_bytes(cut.read_bytes())
    found = discover(mixed)
    assert any(s.path.name == files[3].name for s in found.all_skipped)
    assert len(found) == 1 and len(found[0].slices) == len(files) - 1


def _with_zeros_after_the_pixels(src: Path, dst: Path, mb: int) -> None:
    """``src`` with a private element of ``mb`` MB of zeros after its pixels: a file of ~``mb`` kB
    that pydicom would inflate whole just to read its header."""
    import struct
    import zlib

    from cochseg3d.dicom_deflate import stream_start

    raw = src.read_bytes()
    start = stream_start(src)
    dataset = zlib.decompress(raw[start:], -zlib.MAX_WBITS)
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [raw[:start], c.compress(dataset), c.compress(struct.pack("<HH2sHI", 0x7FE1, 0x0010, b"OB", 0, mb << 20))]
    zeros = bytes(1 << 20)
    parts += [c.compress(zeros) for _ in range(mb)]
    dst.write_bytes(b"".join(parts) + c.flush())


def test_a_small_file_that_inflates_to_gigabytes_is_read_with_bounded_memory(series, tmp_path):
    import tracemalloc

    raw, deflated = series
    files = sorted(deflated.iterdir())
    big = tmp_path / "big.dcm"
    _with_zeros_after_the_pixels(files[0], big, 256)  # 256 MB inflated from ~0.3 MB
    folder = tmp_path / "zeros"
    folder.mkdir()
    for p in files:  # the whole series, 24 MB of zeros past each file's pixels
        _with_zeros_after_the_pixels(p, folder / p.name, 24)
    tracemalloc.start()
    h = read_file_header(big)
    header_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    vol = load_input(folder)
    load_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert big.stat().st_size < 1 << 20 and h.reason is None
    assert header_peak < 8 << 20, f"header read allocated {header_peak / 2**20:.0f} MB"
    assert np.array_equal(vol.array, load_input(raw).array)  # the pixels, not the zeros after them
    assert load_peak < 16 << 20, f"loading allocated {load_peak / 2**20:.0f} MB"  # not 24 MB per file
