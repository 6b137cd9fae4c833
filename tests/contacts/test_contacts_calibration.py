"""The contact finder's calibration as data: the shipped file, bad files, its effect, the script."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from cochseg3d.contacts import Calibration, CalibrationError, find_contacts
from cochseg3d.contacts.calibration import DEFAULT_PATH
from tests.helpers import BrightDetector

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("calibrate_contacts", ROOT / "scripts" / "calibrate_contacts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shipped_calibration_loads_and_round_trips(tmp_path):
    cal = Calibration.load()
    doc = json.loads(DEFAULT_PATH.read_text())
    assert cal.to_dict() == doc and doc["version"] == 1
    assert cal.band_to_first_mm["CI632 Slim Modiolar"] == doc["band_to_first_mm"]["CI632 Slim Modiolar"]
    assert isinstance(cal.refine_separate_iterations, int) and cal.apex_track is True
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal.to_dict()))
    assert Calibration.load(path) == cal
    with pytest.raises(dataclasses.FrozenInstanceError):
        cal.band_level = 0.5
    with pytest.raises(TypeError):
        cal.radial_offset_mm["FLEX28"] = 0.1  # tables are read-only too
    assert cal.replace(radial_offset_mm={}).radial_offset_mm == {} and cal.radial_offset_mm


def _broken(doc, change):
    doc = json.loads(json.dumps(doc))
    change(doc)
    return doc


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(version=2), "version 2"),
    (lambda d: d["bloom"].pop("ref_mm"), "missing 'bloom.ref_mm'"),
    (lambda d: d.pop("band_to_last_mm"), "missing 'band_to_last_mm'"),
    (lambda d: d["constants"].update(band_levl=0.9), "unknown entry constants.band_levl"),
    (lambda d: d.update(extra=1), "unknown entry extra"),
    (lambda d: d["switches"].update(apex_turn="yes"), "'switches.apex_turn' must be true or false"),
    (lambda d: d["constants"].update(max_separate_contacts=12.5), "must be an integer"),
    (lambda d: d["band_to_first_mm"].update(AB="far"), "'band_to_first_mm' must map names to mm"),
], ids=["version", "missing-bloom", "missing-table", "unknown-constant", "unknown-key", "switch-type", "int-type",
        "table-type"])
def test_bad_calibration_file_names_the_file_and_the_problem(tmp_path, change, message):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(_broken(Calibration.load().to_dict(), change)))
    with pytest.raises(CalibrationError, match="mine.json") as err:
        Calibration.load(path)
    assert message in str(err.value)


def test_unreadable_calibration_files(tmp_path):
    with pytest.raises(CalibrationError, match=r"nothere\.json: no such file"):
        Calibration.load(tmp_path / "nothere.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CalibrationError, match=r"bad\.json: not JSON"):
        Calibration.load(tmp_path / "bad.json")


def test_band_offsets_from_the_calibration_move_the_end_contacts():
    # a merged array placed between its band's ends: 0.3 mm more from the band start to the first
    # contact moves the first contact ~0.3 mm along the array and leaves the last one in place
    from cochseg3d.phantom import generate_patient

    case = generate_patient(1, preset="small", model="CI612 Contour Advance", spacing_mm=0.35)
    cal = Calibration.load()
    moved = cal.replace(band_to_first_mm={**cal.band_to_first_mm,
                                          "CI612 Contour Advance": cal.band_to_first_mm["CI612 Contour Advance"] + 0.3})
    a = find_contacts(case.label, case.image, electrode="CI612 Contour Advance")
    b = find_contacts(case.label, case.image, electrode="CI612 Contour Advance", calibration=moved)
    assert a.method == b.method == "pitch" and len(a.lps_mm) == len(b.lps_mm) == 22
    assert 0.2 < np.linalg.norm(b.lps_mm[0] - a.lps_mm[0]) < 0.4
    assert np.linalg.norm(b.lps_mm[-1] - a.lps_mm[-1]) < 0.05
    assert b.pitch_mm < a.pitch_mm
    # switching the outward shift off moves the centreline back inside the spiral
    c = find_contacts(case.label, case.image, electrode="CI612 Contour Advance",
                      calibration=cal.replace(radial_offset_mm={}))
    shift, _ = cKDTree(c.centreline_lps_mm).query(a.centreline_lps_mm[:100])  # the apical 5 mm, curled
    assert 0.04 < np.median(shift) <= cal.radial_offset_mm["CI612 Contour Advance"] + 0.01


def test_calibration_tables_recover_a_bloom_slope_and_model_offsets():
    # the calibration script fits one slope per band end across models, and medians per model at
    # the reference bloom; an outlier case (an end contact off the centreline) does not move them
    cal = _script()
    rng = np.random.default_rng(0)
    rows = []
    for model, vendor, first, last in (("CI632 Slim Modiolar", "Cochlear", 0.33, 0.55),
                                       ("HiFocus 1J", "AB", 0.50, 0.68)):
        for _ in range(40):
            bloom = rng.uniform(0.45, 0.85)
            rows.append({"case_id": "x", "vendor": vendor, "model": model, "bloom_mm": bloom,
                         "band_to_first_mm": first + 0.6 * (bloom - 0.65) + rng.normal(0, 0.02),
                         "last_to_band_end_mm": last + 0.2 * (bloom - 0.65) + rng.normal(0, 0.02)})
    rows[0]["band_to_first_mm"] += 5.0
    bloom, adjusted = cal.bloom_slopes(rows)
    assert bloom["slope_first"] == pytest.approx(0.6, abs=0.05)
    assert bloom["slope_last"] == pytest.approx(0.2, abs=0.05)
    bands = cal.summarise(adjusted, ("band_to_first_mm", "last_to_band_end_mm"))
    radial = cal.summarise([{"vendor": "Cochlear", "model": "CI632 Slim Modiolar", "inward_mm": 0.07}] * 5
                           + [{"vendor": "AB", "model": "HiFocus 1J", "inward_mm": 0.005}] * 5, ("inward_mm",))
    tables = cal.constants(radial, bands)
    ref = bloom["ref_mm"]
    assert tables["band_to_first_mm"]["CI632 Slim Modiolar"] == pytest.approx(0.33 + 0.6 * (ref - 0.65), abs=0.02)
    assert tables["band_to_last_mm"]["HiFocus 1J"] == pytest.approx(0.68 + 0.2 * (ref - 0.65), abs=0.02)
    assert tables["radial_offset_mm"] == {"CI632 Slim Modiolar": 0.07}  # below 0.02 mm: left out
    # the file it writes: measured tables over the base's switches and constants, readable back
    base = Calibration.load().replace(apex_turn=False)
    doc = cal.calibration_document(base, tables, bloom, {"cohort": {"seeds": [1, 2]}, "date": "2026-12-02"})
    got = Calibration.from_dict(json.loads(json.dumps(doc)))
    assert got.radial_offset_mm == {"CI632 Slim Modiolar": 0.07} and got.bloom_ref_mm == ref
    assert got.band_to_last_mm["HiFocus 1J"] == tables["band_to_last_mm"]["HiFocus 1J"]
    assert got.apex_turn is False and got.band_level == base.band_level
    assert got.source["cohort"] == {"seeds": [1, 2]}


def test_segment_path_places_contacts_with_the_calibration_file(tmp_path):
    from cochseg3d.inference import segment_path
    from cochseg3d.phantom import generate_patient
    from cochseg3d.preprocessing import Preprocessing
    from cochseg3d.volume import read_image, write_image

    case = generate_patient(1, preset="small", model="CI612 Contour Advance", spacing_mm=0.35, shape=72)
    src = write_image(case.image, tmp_path / "p.nii.gz")
    cal = Calibration.load()
    moved = cal.replace(band_to_first_mm={**cal.band_to_first_mm, "CI612 Contour Advance": 0.664})
    (tmp_path / "moved.json").write_text(json.dumps(moved.to_dict()))
    pre = Preprocessing(spacing_mm=0.35, roi_size=(64, 64))
    segment_path(src, tmp_path / "out", BrightDetector(), preprocessing=pre, png=False,
                 electrode="CI612 Contour Advance", calibration=tmp_path / "moved.json")
    got = np.array(json.loads((tmp_path / "out" / "p.contacts.json").read_text())["contacts_lps_mm"])
    label, image = read_image(tmp_path / "out" / "p.nii.gz"), read_image(src)
    want = find_contacts(label, image, electrode="CI612 Contour Advance", calibration=moved).lps_mm
    shipped = find_contacts(label, image, electrode="CI612 Contour Advance").lps_mm
    assert len(got) == 22 and np.abs(got - want).max() < 1e-3  # json rounds to 0.1 um
    assert 0.2 < np.linalg.norm(got[0] - shipped[0]) < 0.4  # the first contact 0.3 mm further from the band start


def test_bad_calibration_file_stops_segment_before_any_work(tmp_path, capsys):
    from cochseg3d.cli import main
    from cochseg3d.inference import segment_path

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**Calibration.load().to_dict(), "version": 7}))
    with pytest.raises(CalibrationError, match="bad.json"):
        segment_path(tmp_path / "missing.nii.gz", tmp_path / "out", BrightDetector(), calibration=bad)
    assert not (tmp_path / "out").exists()  # nothing written
    argv = ["segment", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "cli"), "--calibration", str(bad)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--calibration" in err and "bad.json" in err and "version 7" in err and "Traceback" not in err
    assert not (tmp_path / "cli").exists()
