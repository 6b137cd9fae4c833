import numpy as np
import pytest
import SimpleITK as sitk

from cochseg3d.volume import (
    CANONICAL_DIRECTION,
    Grid,
    Volume,
    canonical,
    coronal_slices,
    from_canonical,
    read_image,
    write_image,
)


def _volume(direction, shape=(5, 6, 7), spacing=(0.3, 0.4, 0.5), origin=(10.0, -20.0, 30.0)):
    rng = np.random.default_rng(0)
    return Volume(rng.integers(-1000, 3000, shape).astype(np.int16), spacing, origin, direction)


AXIAL = np.eye(3)
CORONAL = np.array([[1, 0, 0], [0, 0, -1], [0, -1, 0]], dtype=float)  # IOP (1,0,0,0,0,-1)
SAGITTAL = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float)  # IOP (0,1,0,0,0,-1)


@pytest.mark.parametrize("direction", [AXIAL, CORONAL, SAGITTAL], ids=["axial", "coronal", "sagittal"])
def test_canonical_roundtrip_is_exact_and_physical(direction):
    vol = _volume(direction)
    can = canonical(vol)
    np.testing.assert_allclose(can.direction, CANONICAL_DIRECTION)
    # every voxel keeps its physical position: compare a voxel's LPS before and after
    k, j, i = 1, 2, 3
    p = vol.index_to_lps([i, j, k])
    ijk = np.rint(can.lps_to_index(p)).astype(int)
    assert can.array[ijk[2], ijk[1], ijk[0]] == vol.array[k, j, i]
    back = from_canonical(can, is_label=False)
    assert back.grid.allclose(vol.grid)
    np.testing.assert_array_equal(back.array, vol.array)


def test_coronal_slice_rows_go_inferior_and_columns_left():
    vol = _volume(AXIAL, shape=(4, 5, 6), spacing=(1, 1, 1), origin=(0, 0, 0))
    sl = coronal_slices(vol)
    assert len(sl) == vol.array.shape[1]  # axial j axis is posterior
    # first row of a coronal slice is the most superior axial slice (largest k in LPS axial)
    np.testing.assert_array_equal(sl[0].array[0], vol.array[-1, 0, :])


def test_oblique_canonical_resamples_and_returns(tmp_path):
    t = sitk.Euler3DTransform()
    t.SetRotation(0.2, 0.1, 0.3)
    direction = np.asarray(t.GetMatrix()).reshape(3, 3)
    vol = Volume(np.zeros((20, 20, 20), np.uint8), (0.5, 0.5, 0.5), (0, 0, 0), direction)
    vol.array[8:12, 8:12, 8:12] = 1
    can = canonical(vol, is_label=True)
    assert can.grid.is_axis_aligned()
    back = from_canonical(can, is_label=True)
    assert back.grid.allclose(vol.grid)
    inter = np.logical_and(back.array, vol.array).sum()
    assert 2 * inter / (back.array.sum() + vol.array.sum()) > 0.7


def test_write_read_nifti_keeps_geometry(tmp_path):
    vol = _volume(SAGITTAL)
    out = write_image(vol, tmp_path / "a.nii.gz")
    got = read_image(out)
    assert got.grid.allclose(vol.grid, atol_mm=1e-4)
    np.testing.assert_array_equal(got.array, vol.array)
    assert not list(tmp_path.glob(".*tmp*"))
    assert out.stat().st_mode & 0o044  # readable by others like any file the user writes


def test_read_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.nii.gz"):
        read_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.nii"):
        read_image(tmp_path / "missing.nii")


def test_grid_dict_roundtrip():
    g = _volume(CORONAL).grid
    assert Grid.from_dict(g.to_dict()) == g


def _nii_file(path, spacing=(0.4, 0.4, 0.4)):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.arange(4 * 16 * 16, dtype=np.int16).reshape(4, 16, 16))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


@pytest.mark.parametrize("name, damage, why", [
    ("a.nii.gz", lambda d: d[: len(d) * 6 // 10], "truncated gzip"),
    ("b.nii.gz", lambda d: d[:-4], "truncated gzip|corrupt gzip"),
    ("c.nii.gz", lambda d: d[:len(d) // 2] + bytes([d[len(d) // 2] ^ 0xFF]) + d[len(d) // 2 + 1:], "gzip"),
    ("d.nii", lambda d: d[: len(d) // 2], "truncated: holds"),
    ("e.nii", lambda d: b"", "empty file"),
])
def test_damaged_image_files_are_refused_by_name(tmp_path, name, damage, why):
    from cochseg3d.volume import read_image

    p = _nii_file(tmp_path / name)
    p.write_bytes(damage(p.read_bytes()))
    with pytest.raises(ValueError, match=rf"{name}: .*({why})"):
        read_image(p)


def test_nifti_zero_pixdim_refused_whole_file_read(tmp_path):
    import nibabel

    from cochseg3d.volume import read_image

    p = _nii_file(tmp_path / "ok.nii.gz")
    assert read_image(p).array.shape == (4, 16, 16)
    img = nibabel.load(str(p))
    img.header["pixdim"][1:4] = [0, 0, 0]
    nibabel.save(img, str(tmp_path / "zero.nii.gz"))
    with pytest.raises(ValueError, match="zero.nii.gz: voxel spacing"):
        read_image(tmp_path / "zero.nii.gz")
