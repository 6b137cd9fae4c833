"""Slicer markups against the markups schema's required structure; the contact and cohort CSVs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from cochseg3d.clinical import measure_arrays
from cochseg3d.clinical.frequency import greenwood_hz, organ_of_corti_hz, spiral_ganglion_hz
from cochseg3d.clinical.markups import (CONTACT_COLUMNS, append_cohort_csv, write_contacts_csv,
                                        write_markups)
from cochseg3d.contacts import Contacts
from tests.clinical.conftest import truth_contacts

SCHEMA = Path(__file__).parents[1] / "data" / "markups-schema-v1.0.3-required.json"


@pytest.fixture(scope="module")
def arrays(flex_case):
    return measure_arrays(truth_contacts(flex_case))


def test_markups_follow_the_schema(arrays, tmp_path):
    p = write_markups(tmp_path / "p.contacts.mrk.json", arrays, case_id="p")
    doc = json.loads(p.read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    assert doc["@schema"].endswith("markups-schema-v1.0.3.json#")
    contacts, frame = doc["markups"]
    assert contacts["type"] == frame["type"] == "Fiducial" and contacts["coordinateSystem"] == "LPS"
    assert [cp["label"] for cp in contacts["controlPoints"]] == [f"E{i}" for i in range(1, 13)]
    want = np.array([c["lps_mm"] for c in arrays["arrays"][0]["contacts"]])
    assert np.allclose([cp["position"] for cp in contacts["controlPoints"]], want)
    o = np.array(frame["controlPoints"][0]["position"])
    z = np.array(frame["controlPoints"][3]["position"]) - o
    assert np.linalg.norm(z) == pytest.approx(1.0, abs=1e-3)


def test_a_markup_breaking_the_schema_is_caught():
    bad = {"@schema": "x", "markups": [{"type": "Fiducial", "coordinateSystem": "XYZ", "controlPoints": []}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json.loads(SCHEMA.read_text()))


def test_contact_and_cohort_csv(arrays, tmp_path):
    rows = list(csv.DictReader(open(write_contacts_csv(tmp_path / "p.contacts.csv", arrays))))
    assert len(rows) == 12 and tuple(rows[0]) == CONTACT_COLUMNS and rows[0]["name"] == "E1"
    assert float(rows[0]["angle_deg"]) > float(rows[-1]["angle_deg"])
    cohort = tmp_path / "cohort.csv"
    append_cohort_csv(cohort, arrays, case_id="p1")
    none = measure_arrays(Contacts(np.zeros((0, 3)), "none", info={"reason": "empty label"}))
    append_cohort_csv(cohort, none, case_id="p2")
    rows = list(csv.DictReader(open(cohort)))
    assert [r["case_id"] for r in rows] == ["p1", "p2"]
    assert rows[0]["fold_over"] == "False" and rows[1]["reason"] == "empty label"


def test_frequency_maps():
    assert greenwood_hz(1.0) == pytest.approx(20677, rel=0.01) and greenwood_hz(0.0) == pytest.approx(19.8, rel=0.01)
    ang = np.array([0.0, 90, 180, 360, 540, 720])
    for f in (organ_of_corti_hz(ang), spiral_ganglion_hz(ang)):
        assert np.all(np.diff(f) < 0)  # lower towards the apex
    assert spiral_ganglion_hz(0.0) == pytest.approx(organ_of_corti_hz(0.0))
    # the ganglion ends after ~1.75 turns: a contact facing it at 360 deg hears more than the organ of Corti there
    assert spiral_ganglion_hz(360.0) > organ_of_corti_hz(360.0)
