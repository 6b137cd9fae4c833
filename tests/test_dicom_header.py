"""Header checks of the DICOM reader (cochseg3d.dicom_header): before any pixel is allocated."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "badinput"))

import build as b  # noqa: E402

from cochseg3d.dicom import SeriesGapError, choose_main_series, discover, load_input, load_series  # noqa: E402
from cochseg3d.dicom_header import check_orientation, is_dicom_file, read_file_header  # noqa: E402


def test_orientation_exact_kept_near_unit_normalised_others_refused():
    exact = np.array([1.0, 0, 0, 0, 1, 0])
    assert check_orientation(exact)[0] is exact
    near, why = check_orientation(np.array([0.998, 0, 0, 0.001, 1.003, 0]))
    assert why is None
    assert np.allclose(np.linalg.norm(near[:3]), 1) and np.allclose(np.linalg.norm(near[3:]), 1)
    assert abs(np.dot(near[:3], near[3:])) < 1e-12
    assert "zero vector" in check_orientation(np.zeros(6))[1]
    assert "lengths 4" in check_orientation(np.array([4.0, 0, 0, 0, 4, 0]))[1]
    assert "not perpendicular" in check_orientation(np.array([1.0, 0, 0, 0.5, 0.866025, 0]))[1]


def test_rle_bomb_is_skipped_and_never_the_main_series(tmp_path):
    folder, files = b.patient(tmp_path)
    bombs = b.rle_bomb(folder, files, n=6)  # more slices than the good series
    (folder / "b").mkdir()
    small = b.rle_bomb(folder / "b", files, n=3, side=4000)
    found = discover(folder)
    reasons = {s.path: s.reason for s in found.all_skipped}
    assert all("60000x60000" in reasons[p] for p in bombs)
    assert all("compressed bytes" in reasons[p] for p in small)
    main = choose_main_series(found)
    assert len(main.slices) == 4 and main.rows == 16
    assert load_input(folder).array.shape == (4, 16, 16)


def test_rows_zero_refused_with_reason(tmp_path):
    folder, files = b.patient(tmp_path)
    b.edit(files[0], Rows=0)
    h = read_file_header(files[0])
    assert h.reason.startswith("Rows = 0")


def test_fifo_is_skipped_without_opening_it(tmp_path):
    folder, files = b.patient(tmp_path)
    b.fifo(folder / "pipe.dcm")
    result = {}
    t = threading.Thread(target=lambda: result.update(found=discover(folder)), daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():  # unblock the reader so the test process can end, then fail
        with open(folder / "pipe.dcm", "wb"):
            pass
        pytest.fail("discover blocked on a named pipe")
    reasons = {s.path.name: s.reason for s in result["found"].all_skipped}
    assert "named pipe" in reasons["pipe.dcm"]
    assert not is_dicom_file(folder / "pipe.dcm")


def test_big_endian_and_preamble_less_series_load_like_the_original(tmp_path):
    ref = load_input(b.patient(tmp_path / "ref")[0])
    for name, change in [("be", b.big_endian), ("raw", lambda f: b.no_preamble(f, keep_meta=False)),
                         ("meta", lambda f: b.no_preamble(f, keep_meta=True))]:
        folder, files = b.patient(tmp_path / name)
        change(files)
        assert all(is_dicom_file(f) for f in files), name
        vol = load_input(folder)
        assert np.array_equal(vol.array, ref.array), name
        assert np.allclose(vol.spacing_mm, ref.spacing_mm), name


def test_one_corrupt_slice_names_the_file_and_the_option(tmp_path):
    folder, files = b.patient(tmp_path)
    b.rle(files)
    b.corrupt_fragment(files[1])
    info = discover(folder)[0]
    with pytest.raises(SeriesGapError) as exc:
        load_series(info)
    msg = str(exc.value)
    assert files[1].name in msg and "cannot decode" in msg and "--on-gap interpolate" in msg
    assert "\n" not in msg
    vol = load_series(info, on_gap="interpolate")
    assert vol.array.shape == (4, 16, 16)


def test_undecodable_file_name_is_listed(tmp_path):
    folder, files = b.patient(tmp_path)
    os.rename(files[2], os.fsencode(folder) + b"/s\xff.dcm")
    (Path(os.fsdecode(os.fsencode(folder) + b"/j\xfe.txt"))).write_text("x")
    found = discover(folder)
    assert len(found[0].slices) == 4
    assert any("\ufffd" in str(s) for s in found.all_skipped)


def test_unloadable_main_series_passes_to_the_next_one(tmp_path):
    folder, files = b.patient(tmp_path)
    big = b.series(folder / "thin", seed=1, n=6, series_number=2)
    b.truncate(big[2], 0.7)
    vol = load_input(folder)
    assert vol.array.shape == (4, 16, 16) and vol.meta["series_number"] == 1
    assert big[2].name in vol.meta["passed_over"][0]
    with pytest.raises(SeriesGapError, match=big[2].name):  # the user's own pick is not replaced
        load_input(big[0])
