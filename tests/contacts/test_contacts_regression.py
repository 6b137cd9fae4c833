"""The contact finder's output on pinned phantoms (scripts/pin_contacts.py) has not changed.

Each pinned case is regenerated (the phantom generator is deterministic up to the last float
bits of a numpy/scipy build) and searched on the label the default model gave when it was pinned, named and blind: contacts within 1e-6 mm, the
same method, pitch, model and electrode assumed.
"""

import importlib.util
import json
from pathlib import Path

import pytest

from cochseg3d.phantom import find_model

ROOT = Path(__file__).resolve().parents[2]


def _pin_script():
    spec = importlib.util.spec_from_file_location("pin_contacts", ROOT / "scripts" / "pin_contacts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PIN = _pin_script()
CASES = json.loads(PIN.PINNED.read_text())["cases"]


def test_pin_covers_every_vendor_and_strategy():
    models = {c["model"] for c in CASES}
    vendors = {find_model(m).vendor for m in models}
    assert vendors == {"MED-EL", "Cochlear", "AB"}
    methods = {c[mode]["method"] for c in CASES for mode in ("named", "blind")}
    assert {"peaks", "pitch", "blobs"} <= methods
    assert "oblique" in {c["orientation"] for c in CASES}


@pytest.mark.parametrize("entry", CASES, ids=[f"{c['seed']}-{c['model']}-{c['orientation']}" for c in CASES])
def test_contacts_unchanged_on_pinned_phantom(entry):
    image, label, image_same = PIN.pin_inputs(entry)
    now = PIN.run_case(image, label, entry["model"])
    diffs = PIN.differences(entry, now)
    assert diffs == [], (diffs if image_same else diffs + [
        "the regenerated phantom is not bit-identical to the pinned one: if the phantom changed, re-pin with "
        "scripts/pin_contacts.py --write once the contact finder is known unchanged"])


def test_differences_reports_a_moved_contact():
    entry = CASES[0]
    moved = json.loads(json.dumps({"named": entry["named"], "blind": entry["blind"]}))
    moved["named"]["lps_mm"][3][0] += 1e-5
    moved["blind"]["method"] = "dips"
    diffs = PIN.differences(entry, moved)
    assert len(diffs) == 2 and "moved up to 1.00e-05 mm" in diffs[0] and "'dips'" in diffs[1]
