"""The plugin manifest: napari offers the reader for the kinds it reads, and only those."""

from __future__ import annotations

from pathlib import Path

import npe2
import pytest

import napari_cochseg3d

_MANIFEST = Path(napari_cochseg3d.__file__).with_name("napari.yaml")


@pytest.fixture(scope="module")
def plugins() -> npe2.PluginManager:
    pm = npe2.PluginManager()
    pm.register(npe2.PluginManifest.from_file(_MANIFEST))
    return pm


def _offered(pm: npe2.PluginManager, path: Path) -> bool:
    return any(r.plugin_name == "napari-cochseg3d" for r in pm.iter_compatible_readers([str(path)]))


@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz", "CT.NII.GZ", "ct.nrrd", "ct.nhdr", "ct.mha",
                                  "ct.mhd", "IM0001.dcm", "P.01.label.nii.gz"])
def test_reader_offered_for_image_files(plugins, tmp_path, name) -> None:
    (tmp_path / name).write_bytes(b"")
    assert _offered(plugins, tmp_path / name)


def test_reader_offered_for_folders(plugins, tmp_path) -> None:
    assert _offered(plugins, tmp_path)


@pytest.mark.parametrize("name", ["notes.txt", "mask_12.png", "ct.tif", "record.annotation.json"])
def test_reader_not_offered_for_other_files(plugins, tmp_path, name) -> None:
    (tmp_path / name).write_bytes(b"")
    assert not _offered(plugins, tmp_path / name)
