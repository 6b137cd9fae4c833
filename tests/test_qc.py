"""QC verdicts: good results pass, missing contacts / far fragments / unreadable images are flagged."""

import json

import numpy as np
import pytest

from cochseg3d.cli import main
from cochseg3d.contacts import Contacts, find_contacts
from cochseg3d.inference import load_model, run_segmentation
from cochseg3d.metrics import match_contacts
from cochseg3d.phantom import generate_patient
from cochseg3d.qc import (QC_THRESHOLDS, QCThresholds, Rule, assess, contact_shift_mm, image_problem,
                          segmentation_measures)
from cochseg3d.volume import Volume, write_image

#: rules for the mechanism tests (the shipped file's values are calibrated, and may move)
RULES = QCThresholds((Rule("contact_count_error", ">", 1.5), Rule("far_fragments_mm3", ">", 1.0),
                      Rule("max_gap_pitches", ">", 1.6), Rule("contact_shift_mm", ">", 0.3),
                      Rule("volume_ratio", ">", 2.0), Rule("volume_ratio", "<", 0.5)),
                     expected_label_mm3={"default": 60.0})


@pytest.fixture(scope="module")
def model():
    return load_model(None)[0]


@pytest.fixture(scope="module")
def medel(model):
    """A MED-EL phantom (separate contacts) segmented by the default model, contacts named.

    A case the default model gets right (4247 was, until the offset read left 1.4 mm^3 of streak
    fragments on it; 4248 and 4249 are not, with either read)."""
    case = generate_patient(4250, preset="small", vendor="MED-EL")
    res = run_segmentation(case.image, model)
    contacts = find_contacts(res.label, case.image, electrode=case.contacts["model"])
    moved = [find_contacts(a, case.image, electrode=case.contacts["model"]) for a in res.alternates.values()]
    return case, res, contacts, moved


def test_good_result_is_ok(medel):
    case, res, contacts, moved = medel
    m = match_contacts(contacts.lps_mm, case.contacts["contacts_lps_mm"])
    assert m["mean_error_mm"] < 0.3 and m["recall"] >= 0.9  # a good result by the bar
    assert sorted(res.alternates) == [0.3, 0.7]
    for thresholds in (RULES, QCThresholds.load()):
        v = assess(res.label, contacts, info=res.info, electrode=case.contacts["model"], thresholds=thresholds,
                   alternate_contacts=moved)
        assert v.verdict == "ok", v.reasons
        assert v.measures["contact_shift_mm"] < 0.2
        assert 0.5 < v.measures["volume_ratio"] < 2.0
        assert v.measures["n_contacts"] == v.measures["n_expected"] == 12
        assert v.measures["far_fragments_mm3"] < 1.0
        assert 0.0 <= v.measures["uncertain_fraction"] and 0.0 < v.measures["mean_entropy_bits"] < 1.0


def test_contacts_that_move_with_the_threshold_are_flagged(medel):
    case, res, contacts, _ = medel
    pts = contacts.lps_mm
    assert contact_shift_mm(pts, [pts + [0.0, 0.4, 0.0]]) == pytest.approx(0.4)
    # two contacts lost: they count at the 1 mm gate; the worse of two alternates is taken
    assert contact_shift_mm(pts, [pts[:10], pts]) == pytest.approx(2.0 / 12)
    shifted = Contacts(pts + [0.5, 0.0, 0.0], contacts.method, info=dict(contacts.info))
    v = assess(res.label, contacts, info=res.info, electrode=case.contacts["model"], thresholds=RULES,
               alternate_contacts=[shifted])
    assert v.verdict == "review"
    assert v.reasons == ["contacts move 0.50 mm when the label is made at p 0.3 / 0.7 (limit 0.30 mm): "
                         "the network is unsure where the array is"]


def test_label_volume_far_from_the_models_is_flagged(medel):
    case, res, contacts, _ = medel
    big = QCThresholds(RULES.rules, expected_label_mm3={"default": res.info["volume_mm3"] / 3.0})
    v = assess(res.label, contacts, info=res.info, electrode=case.contacts["model"], thresholds=big)
    assert v.verdict == "review" and v.measures["volume_ratio"] == pytest.approx(3.0, rel=1e-3)
    assert "is 3.00x what" in v.reasons[0]


def test_missing_contacts_are_flagged_with_the_count(medel):
    case, res, contacts, _ = medel
    model = case.contacts["model"]
    keep = np.r_[0:4, 7:12]  # three contacts in the middle lost
    fewer = Contacts(contacts.lps_mm[keep], contacts.method, contacts.centreline_lps_mm, contacts.profile,
                     contacts.pitch_mm, dict(contacts.info))
    v = assess(res.label, fewer, info=res.info, electrode=model, thresholds=RULES)
    assert v.verdict == "review"
    assert f"9 contacts found, {model} has 12" in v.reasons
    assert any("gap of" in r for r in v.reasons)
    assert v.measures["max_gap_pitches"] > 2.5  # four pitches of arc, a shorter chord on the curl


def test_far_fragment_is_flagged(medel):
    case, res, contacts, _ = medel
    kept = res.label.array > 0
    raw = kept.copy()
    # a 2 mm cube of 'electrode' in a far corner, as a streak or bone blob would give
    n = int(round(2.0 / res.label.spacing_mm[0]))
    raw[2:2 + n, 2:2 + n, 2:2 + n] = True
    assert not kept[2:2 + n, 2:2 + n, 2:2 + n].any()
    prob = np.where(raw, 0.9, 0.0).astype(np.float32)
    qc = segmentation_measures(prob, raw, kept, res.label.spacing_mm)
    assert qc["n_far_fragments"] == 1
    assert qc["far_fragments_mm3"] == pytest.approx(n ** 3 * np.prod(res.label.spacing_mm))
    v = assess(res.label, contacts, info={"qc": qc}, electrode=case.contacts["model"], thresholds=RULES)
    assert v.verdict == "review"
    assert any("fragments more than 3 mm from the array" in r for r in v.reasons), v.reasons
    # a fragment next to the array is part of it, not far
    near = kept | np.roll(kept, 2, axis=0)
    assert segmentation_measures(prob, near, kept, res.label.spacing_mm)["n_far_fragments"] == 0


def test_other_metal_dropped_is_reported_and_reviewed_only_when_the_kept_chain_is_doubtful(medel):
    case, res, contacts, _ = medel
    assert res.info["other_metal_mm3"] == 0.0 and res.info["qc"]["array_rule"] == "catalogue"
    # a screw (50 mm^3, 20 mm away) painted and dropped: far from the array, but recognised as not one
    qc = {**res.info["qc"], "other_metal_mm3": 50.0, "n_other_metal": 1, "far_fragments_mm3": 50.0,
          "n_far_fragments": 1}
    v = assess(res.label, contacts, info={"qc": qc}, electrode=case.contacts["model"], thresholds=RULES)
    assert v.verdict == "ok"
    assert v.reasons == ["metal other than the array found (50 mm^3 in 1 piece(s): screw, fillings?), dropped"]
    assert v.measures["far_fragments_mm3"] == 50.0  # reported as measured
    # fragments beyond the recognised metal still trip the calibrated rule
    v = assess(res.label, contacts, info={"qc": {**qc, "far_fragments_mm3": 52.0}},
               electrode=case.contacts["model"], thresholds=RULES)
    assert v.verdict == "review" and any("fragments more than 3 mm" in r for r in v.reasons), v.reasons
    # no chain met the catalogue's limits: the kept one may be the other metal
    v = assess(res.label, contacts, info={"qc": {**qc, "array_rule": "tube_length"}},
               electrode=case.contacts["model"], thresholds=RULES)
    assert v.verdict == "review"
    assert any("check that it is the array" in r for r in v.reasons)
    assert any("fragments more than 3 mm" in r for r in v.reasons)
    # the kept chain is the most tube-like, but a dropped one has an array-long thin path
    v = assess(res.label, contacts, info={"qc": {**qc, "array_rule": "catalogue_disagrees", "catalogue_path_mm": 26.0,
                                                 "array_path_mm": 2.0}},
               electrode=case.contacts["model"], thresholds=RULES)
    assert v.verdict == "review" and any("array-long thin path (26 mm)" in r for r in v.reasons), v.reasons


def test_flat_image_gives_an_empty_label_and_fails(model):
    vol = Volume(np.full((40, 40, 40), 120, np.int16), (0.3, 0.3, 0.3))
    res = run_segmentation(vol, model)
    assert res.label.array.sum() == 0 and res.label.grid.allclose(vol.grid)
    contacts = find_contacts(res.label, vol)
    v = assess(res.label, contacts, info=res.info, thresholds=RULES)
    assert v.verdict == "fail"
    assert v.reasons == ["flat image: every voxel is 120; the label is empty"]


def test_image_without_metal_is_not_labelled_as_bone(model):
    # platinum without attenuation: a post-operative scan with no metal to see
    case = generate_patient(11, preset="small", mu_platinum_per_mm=1e-4)
    assert image_problem(case.image).startswith("no metal")
    res = run_segmentation(case.image, model)
    assert res.label.array.sum() == 0
    v = assess(res.label, find_contacts(res.label, case.image), info=res.info, thresholds=RULES)
    assert v.verdict == "fail" and v.reasons[0].startswith("no metal: the brightest voxels")


def test_shipped_thresholds_load_and_a_broken_file_is_named(tmp_path):
    shipped = QCThresholds.load()
    assert shipped.rules and shipped.provenance["calibration_seeds"][0] == 810_000
    assert {r.op for r in shipped.rules} <= {">", "<"}
    assert QCThresholds.load(QC_THRESHOLDS) == shipped
    broken = tmp_path / "qc.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"qc\.json: QC thresholds file is not readable JSON"):
        QCThresholds.load(broken)
    broken.write_text(json.dumps({"rules": [{"measure": "pitch_cv", "op": ">"}]}))
    with pytest.raises(ValueError, match=r"qc\.json: QC thresholds file has malformed rules"):
        QCThresholds.load(broken)
    broken.write_text(json.dumps({"rules": [{"measure": "shoe_size", "op": ">", "value": 1}]}))
    with pytest.raises(ValueError, match=r"qc\.json: .*unknown rules"):
        QCThresholds.load(broken)
    with pytest.raises(ValueError, match="not found"):
        QCThresholds.load(tmp_path / "missing.json")


def test_segment_cli_writes_qc_and_lists_flagged_patients(tmp_path, capsys):
    case = generate_patient(4250, preset="small", vendor="MED-EL")
    write_image(case.image, tmp_path / "in" / "good.nii.gz")
    write_image(Volume(np.zeros((30, 30, 30), np.int16), (0.4, 0.4, 0.4)), tmp_path / "in" / "flat.nii.gz")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "in"), "-o", str(out), "--device", "cpu", "--no-png",
                 "--electrode", "MED-EL"]) == 0
    printed = capsys.readouterr().out
    good = json.loads((out / "good.contacts.json").read_text())
    assert good["qc"]["verdict"] == "ok" and good["qc"]["measures"]["model"] == case.contacts["model"]
    flat = json.loads((out / "flat.contacts.json").read_text())
    assert flat["qc"]["verdict"] == "fail" and flat["n_contacts"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["qc"]["ok"], summary["qc"]["review"], summary["qc"]["fail"]) == (1, 0, 1)
    assert summary["qc"]["flagged"] == [{"case_id": "flat", "verdict": "fail", "reasons": flat["qc"]["reasons"]}]
    assert {d["case_id"]: d["qc"]["verdict"] for d in summary["done"]} == {"good": "ok", "flat": "fail"}
    tail = printed[printed.index("QC: 1 of 2 flagged"):]
    assert "flat (fail): flat image: every voxel is 0" in tail and "good" not in tail
    # one patient: its verdict is printed; a broken thresholds file stops before any work
    assert main(["segment", str(tmp_path / "in" / "flat.nii.gz"), "-o", str(tmp_path / "one"), "--no-png",
                 "--device", "cpu"]) == 0
    assert "QC fail\n  - flat image" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("[]")
    assert main(["segment", str(tmp_path / "in"), "-o", str(tmp_path / "x"), "--qc-thresholds",
                 str(tmp_path / "bad.json")]) == 2
    assert "bad.json: QC thresholds file has malformed rules" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
