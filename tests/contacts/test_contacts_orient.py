"""The found contacts' apex end: turned round when the chain came out base first; scored by the metrics."""

import json

import numpy as np
import pytest

from cochseg3d.contacts import Calibration
from cochseg3d.contacts.calibration import DEFAULT_PATH
from cochseg3d.contacts.orient import base_first
from cochseg3d.metrics import match_contacts


def _spiral(n: int, turns: float) -> np.ndarray:
    """Contacts apex -> base on a flat spiral whose radius grows toward the base (as a cochlea's)."""
    theta = np.linspace(2 * np.pi * turns, 0.0, n)  # the apex at the largest angle
    r = 4.0 * np.exp(-0.18 * theta)
    return np.stack([r * np.cos(theta), r * np.sin(theta), 0.3 * theta], axis=1)


@pytest.mark.parametrize("turns", [0.75, 1.0, 1.5])
def test_a_base_first_spiral_is_turned_and_an_apex_first_one_kept(turns):
    pts = _spiral(12, turns)
    assert not base_first(pts, 0.85)
    assert base_first(pts[::-1], 0.85)


def test_short_chains_and_ratio_zero_are_never_turned():
    pts = _spiral(12, 1.5)[::-1]
    assert not base_first(pts, 0.0)  # the switch off
    assert not base_first(pts[:3], 0.85)  # too few contacts to tell the ends apart
    straight = np.stack([np.arange(8.0), np.zeros(8), np.zeros(8)], axis=1)
    assert not base_first(straight, 0.85) and not base_first(straight[::-1], 0.85)  # no inner end


def test_calibration_files_without_the_new_entry_still_load(tmp_path):
    doc = json.loads(DEFAULT_PATH.read_text())
    assert doc["constants"].pop("apex_inside_ratio") == Calibration.load().apex_inside_ratio
    assert doc["switches"].pop("chain_order") == Calibration.load().chain_order
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    assert Calibration.load(old) == Calibration.load()  # both default to the finder as it was (off)


def test_match_contacts_tells_misnamed_contacts():
    truth = _spiral(12, 1.5)
    found = truth + 0.05
    assert match_contacts(found, truth)["misnamed"] == 0.0
    assert match_contacts(found[2:], truth)["misnamed"] == 0.0  # two apical contacts missed: the rest named right
    m = match_contacts(found[::-1], truth)
    assert m["misnamed"] > 0.9 and m["recall"] == 1.0 and m["mean_error_mm"] < 0.1  # order-free error cannot see it
    swapped = found[[0, 1, 3, 2, *range(4, 12)]]
    assert match_contacts(swapped, truth)["misnamed"] == pytest.approx(2 / 12)
    assert np.isnan(match_contacts(found[:1], truth)["misnamed"])


def test_contacts_beyond_a_cut_short_centreline_extend_the_chain_at_its_end():
    from cochseg3d.contacts.chain import chain_along

    truth = _spiral(12, 1.5)  # apex first
    # the centreline covers contacts 3..11 only (the label's apex was cut short)
    s = np.linspace(0.0, 1.0, 400)[:, None]
    curve = np.concatenate([truth[k] + s * (truth[k + 1] - truth[k]) for k in range(3, 11)])
    shuffled = truth[[5, 0, 9, 2, 11, 3, 1, 4, 6, 10, 7, 8]]
    pitch = float(np.median(np.linalg.norm(np.diff(truth, axis=0), axis=1)))
    ordered = chain_along(shuffled, curve, pitch / 2)
    assert np.allclose(ordered, truth)
    # sorted by their nearest centreline sample alone, the three apical contacts land across the spiral
    assert not np.allclose(chain_along(shuffled, curve, np.inf), truth)
