import json

import numpy as np
import SimpleITK as sitk

from cochseg3d.demo import run_demo
from cochseg3d.volume import read_image


def test_tiny_demo_end_to_end_and_rerun_reuses(tmp_path, capsys):
    out = tmp_path / "demo"
    report = run_demo(out, patients=4, epochs=1, seed=3, device="cpu", progress=False)
    text = report.read_text()
    cohort = json.loads((out / "phantoms" / "cohort.json").read_text())
    assert len(cohort) == 4
    evaluation = json.loads((out / "evaluation.json").read_text())
    tested = [c["case_id"] for c in evaluation["cases"]]
    assert len(tested) == 1 and tested[0] in text
    assert "error" not in evaluation["cases"][0]
    # the held-out patient was never annotated
    annotated = {p.name.split(".")[0] for p in (out / "annotations").glob("*.annotation.json")}
    assert annotated and tested[0] not in annotated and len(annotated) == 3
    # the label sits on exactly the grid SimpleITK reads from the source DICOM series
    case = next(c for c in cohort if c["case_id"] == tested[0])
    reader = sitk.ImageSeriesReader()
    folder = str(out / "phantoms" / case["dicom"])
    # the CBCT volume is the series with the most files (the other is a scout)
    names = max((reader.GetGDCMSeriesFileNames(folder, uid) for uid in reader.GetGDCMSeriesIDs(folder)), key=len)
    reader.SetFileNames(names)
    src = reader.Execute()
    label = read_image(out / "segment" / f"{tested[0]}.nii.gz")
    assert label.size == src.GetSize()
    np.testing.assert_allclose(label.spacing_mm, src.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(label.origin_mm, src.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(label.direction.ravel(), src.GetDirection(), atol=1e-5)
    assert (out / "report_files" / f"{tested[0]}_overlay.png").stat().st_size > 1000
    assert "cochseg3d train" in text and "cochseg3d segment" in text
    capsys.readouterr()
    # a rerun reuses every finished stage and rewrites only the report
    run_demo(out, patients=4, epochs=1, seed=3, device="cpu", progress=False)
    printed = capsys.readouterr().out
    assert printed.count("reused") == 6


def test_report_is_written_from_plain_data(tmp_path, capsys):
    from cochseg3d.demo_report import write_report

    stages = [{"name": "train", "title": "train the demo U-Net", "seconds": 12.5,
               "commands": ["cochseg3d train --config configs/demo.yaml --out run"]},
              {"name": "evaluate", "title": "evaluate", "seconds": 1.0, "commands": [], "reused": True,
               "cases": [{"case_id": "p1", "vendor": "MED-EL", "dice": 0.81}],
               "summary": [{"case_id": "ALL", "dice": 0.81, "contact_recall": 0.9}]}]
    report = write_report(tmp_path, plan={"patients": 4, "seed": 3, "orientation": "mixed"}, stages=stages,
                          test_cases=[], cohort_dir=tmp_path / "phantoms")
    text = report.read_text()
    assert report == tmp_path / "report.md"
    assert "4 synthetic phantom patients (seed 3" in text and "Dice **0.810**" in text
    assert "cochseg3d train --config configs/demo.yaml" in text and "| **total** | **13.5** |" in text
    assert "held-out Dice 0.810" in capsys.readouterr().out


def test_overlay_title_counts_contacts_matched_within_1_mm_not_found():
    from cochseg3d.demo_report import overlay_title

    case = {"case_id": "p3", "vendor": "MED-EL", "model": "FLEX28", "orientation": "axial"}
    # 16 found, 16 true, 11 of them within 1 mm: recall 0.6875
    row = {"dice": 0.8, "contact_recall": 11 / 16, "n_contacts_pred": 16, "n_contacts_truth": 16,
           "contact_error_mm": 0.4}
    title = overlay_title(case, row)
    assert "contacts 11/16 within 1 mm" in title and "16/16" not in title
    assert "contacts –/– within 1 mm" in overlay_title(case, {})
