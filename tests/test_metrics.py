import math

import numpy as np
import pytest

from cochseg3d.metrics import (
    dice,
    fp_volume_far_mm3,
    hd95_mm,
    iou,
    match_contacts,
    precision,
    recall,
    segmentation_metrics,
    surface_dice,
)
from cochseg3d.volume import Volume


def _box(shape, sl):
    m = np.zeros(shape, bool)
    m[sl] = True
    return m


def test_overlap_metrics_on_known_boxes():
    t = _box((10, 10, 10), (slice(2, 6), slice(2, 6), slice(2, 6)))  # 64 voxels
    p = _box((10, 10, 10), (slice(2, 6), slice(2, 6), slice(4, 8)))  # 64, overlap 32
    assert dice(p, t) == pytest.approx(0.5)
    assert iou(p, t) == pytest.approx(32 / 96)
    assert precision(p, t) == pytest.approx(0.5)
    assert recall(p, t) == pytest.approx(0.5)
    assert dice(t, t) == pytest.approx(1.0)
    assert dice(np.zeros_like(t), np.zeros_like(t)) == 1.0
    assert dice(np.zeros_like(t), t) == 0.0


def test_distances_use_spacing_in_itk_order():
    t = _box((10, 12, 40), (slice(4, 6), slice(4, 6), slice(10, 20)))
    p = _box((10, 12, 40), (slice(4, 6), slice(4, 6), slice(13, 23)))  # shifted 3 voxels along i
    # spacing (i, j, k) = (0.5, 0.1, 0.1): the shift is 1.5 mm
    assert hd95_mm(p, t, spacing_mm=(0.5, 0.1, 0.1)) == pytest.approx(1.5, abs=1e-6)
    assert hd95_mm(p, t, spacing_mm=(0.1, 0.5, 0.5)) == pytest.approx(0.3, abs=1e-6)
    # tolerance 1 mm: every surface point within 0.3 mm when i-spacing is 0.1
    assert surface_dice(p, t, spacing_mm=(0.1, 0.5, 0.5)) == pytest.approx(1.0)
    assert surface_dice(p, t, spacing_mm=(0.5, 0.1, 0.1)) < 1.0
    assert math.isinf(hd95_mm(np.zeros_like(t), t, spacing_mm=(1, 1, 1)))


def test_fp_volume_far_counts_only_detections_beyond_1mm():
    t = _box((20, 20, 20), (slice(5, 10), slice(5, 10), slice(5, 10)))
    near = _box((20, 20, 20), (slice(5, 10), slice(5, 10), slice(10, 12)))  # 2 voxels = 0.4 mm out
    far = _box((20, 20, 20), (slice(15, 17), slice(15, 17), slice(15, 17)))  # 8 voxels, far
    sp = (0.2, 0.2, 0.2)
    assert fp_volume_far_mm3(t | near, t, spacing_mm=sp) == 0.0
    assert fp_volume_far_mm3(t | near | far, t, spacing_mm=sp) == pytest.approx(8 * 0.008)


def test_match_contacts_gate_and_hungarian():
    truth = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], float)
    pred = np.array([[0.1, 0, 0], [1.05, 0, 0], [2.0, 0.2, 0], [10, 0, 0], [0.55, 0, 0]], float)
    r = match_contacts(pred, truth, gate_mm=1.0)
    assert r["n_matched"] == 3
    assert r["recall"] == pytest.approx(3 / 4)
    assert r["precision"] == pytest.approx(3 / 5)
    assert r["mean_error_mm"] == pytest.approx((0.1 + 0.05 + 0.2) / 3)
    # the point between contacts 0 and 1 must not steal a closer pair
    assert {(p, t) for p, t, _ in r["pairs"]} == {(0, 0), (1, 1), (2, 2)}
    empty = match_contacts([], truth)
    assert empty["recall"] == 0.0 and math.isnan(empty["mean_error_mm"])


def test_segmentation_metrics_resamples_prediction_on_another_grid():
    t = _box((10, 10, 10), (slice(3, 7), slice(3, 7), slice(3, 7)))
    truth = Volume(t.astype(np.uint8), (0.4, 0.4, 0.4), (1.0, 2.0, 3.0))
    # the same box on a grid twice as fine
    p = np.zeros((20, 20, 20), np.uint8)
    p[6:14, 6:14, 6:14] = 1
    pred = Volume(p, (0.2, 0.2, 0.2), (1.0 - 0.1, 2.0 - 0.1, 3.0 - 0.1))
    m = segmentation_metrics(pred, truth)
    assert m["dice"] == pytest.approx(1.0)
    assert m["fp_volume_far_mm3"] == 0.0
    assert m["truth_volume_mm3"] == pytest.approx(64 * 0.064)


def test_evaluate_cli_table_csv_json(tmp_path):
    import csv
    import json

    from cochseg3d.cli import main
    from cochseg3d.volume import write_image

    truth_dir, pred_dir = tmp_path / "cohort", tmp_path / "pred"
    lab = np.zeros((12, 12, 12), np.uint8)
    lab[4:8, 4:8, 2:10] = 1
    vol = Volume(lab, (0.3, 0.3, 0.3), (1.0, 2.0, 3.0))
    contacts = [[1.0 + 0.3 * i, 2.0 + 1.5, 3.0 + 1.5] for i in (3, 5, 7)]
    for case, vendor, shift in (("c1", "MED-EL", 0.0), ("c2", "Cochlear", 0.2)):
        write_image(vol, truth_dir / case / "truth" / "label.nii.gz")
        (truth_dir / case / "truth" / "contacts.json").write_text(json.dumps(
            {"case_id": case, "vendor": vendor, "model": "m", "contacts_lps_mm": contacts}))
        write_image(vol, pred_dir / f"{case}.nii.gz")
        pred_c = (np.array(contacts) + [shift, 0, 0]).tolist()
        (pred_dir / f"{case}.contacts.json").write_text(json.dumps({"contacts_lps_mm": pred_c}))
    (truth_dir / "c3" / "truth").mkdir(parents=True)  # a case with no prediction
    write_image(vol, truth_dir / "c3" / "truth" / "label.nii.gz")
    rc = main(["evaluate", str(pred_dir), str(truth_dir)])
    assert rc == 1  # c3 has no prediction
    rows = list(csv.DictReader(open(pred_dir / "evaluation.csv")))
    by = {r["case_id"]: r for r in rows}
    assert float(by["c1"]["dice"]) == pytest.approx(1.0)
    assert float(by["c2"]["contact_error_mm"]) == pytest.approx(0.2)
    assert "no prediction" in by["c3"]["error"]
    assert float(by["ALL"]["contact_error_mm"]) == pytest.approx(0.1)
    assert float(by["ALL[Cochlear]"]["contact_error_mm"]) == pytest.approx(0.2)
    js = json.loads((pred_dir / "evaluation.json").read_text())
    assert len(js["cases"]) == 3 and js["summary"][0]["n"] == 2
