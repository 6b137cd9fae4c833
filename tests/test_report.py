"""`cochseg3d report`: the patient pages and the cohort index from a real segment output folder."""

import base64
import io
import json
import re
import shutil

import numpy as np
import pytest

import cochseg3d
from cochseg3d.cli import main
from cochseg3d.preprocessing import Preprocessing
from cochseg3d.report import MARKER, write_report
from cochseg3d.volume import Volume, write_image
from tests.helpers import bright_model

PRE = Preprocessing(spacing_mm=0.4, roi_size=(64, 64))
PNG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """``segment`` of two scans: a phantom with a FLEX28 array, and soft tissue with no metal."""
    from cochseg3d.phantom import generate_patient

    root = tmp_path_factory.mktemp("cohort")
    inp, out = root / "in", root / "seg"
    write_image(generate_patient(31, preset="small", shape=64, model="FLEX28").image, inp / "p1.nii.gz")
    write_image(Volume(np.full((24, 26, 28), 40.0, np.float32), (0.4, 0.4, 0.4)), inp / "empty.nii.gz")
    for case in ("p1", "empty"):
        cochseg3d.segment(inp / f"{case}.nii.gz", out, model=bright_model(PRE), device="cpu", electrode="FLEX28",
                          case_id=case)
    return inp, out


@pytest.fixture
def seg(cohort, tmp_path):
    """A private copy of the segment output folder (the report writes into it)."""
    return shutil.copytree(cohort[1], tmp_path / "seg")


def _pngs(text):
    from PIL import Image

    return [Image.open(io.BytesIO(base64.b64decode(m))).convert("RGB") for m in PNG.findall(text)]


def _contact_rows(text):
    table = text.split("<h3>Contacts (apex → base)</h3>", 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr(?: class=\"extra\")?><td>(E\d+)</td>", table)


def test_patient_page_has_verdict_table_figures_and_the_index_links_resolve(cohort, seg, capsys):
    rc = main(["report", str(seg), "--input", str(cohort[0])])
    assert rc == 0, capsys.readouterr()
    report = seg / "report"
    assert json.loads((report / MARKER).read_text())["written_by"] == "cochseg3d report"
    rec = json.loads((seg / "p1.contacts.json").read_text())
    (array,) = rec["arrays"]
    text = (report / "p1.html").read_text()
    assert "<h1>p1</h1>" in text and f"QC: {rec['qc']['verdict']}" in text
    assert all(r.replace("'", "&#x27;") in text for r in rec["qc"]["reasons"])
    assert _contact_rows(text) == [c["name"] for c in array["contacts"]] and len(array["contacts"]) == rec["n_contacts"]
    assert f"insertion angle: <b>{array['insertion_angle_deg']} deg</b>" in text
    assert f"extracochlear contacts: <b>{array['extracochlear_contacts']}</b>" in text
    for flag in array["flags"].values():
        assert flag["evidence"].replace("'", "&#x27;") in text
    pictures = _pngs(text)  # coronal, axial, cochlear frame, unrolled cochlea
    assert len(pictures) == 4 and all(min(p.size) > 200 for p in pictures)
    assert all(np.asarray(p).std() > 5 for p in pictures)  # drawn, not blank
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', text))
    assert re.findall(r'href="([^"]*)"', text) == ["index.html"]  # self-contained: nothing fetched
    index = (report / "index.html").read_text()
    links = re.findall(r'<a href="([^"]+)">', index)
    assert sorted(links) == ["empty.html", "p1.html"] and all((report / link).is_file() for link in links)
    assert f">{rec['qc']['verdict']}</td>" in index and f">{array['insertion_angle_deg']}</td>" in index
    assert str(cohort[0]) not in text  # the input path stays out of what is shared


def _fitted_rows(text):
    section = text.split("<h2>Fitted physical array</h2>", 1)[1]
    return re.findall(r'<tr><td class="n">(\d+)</td><td>([^<]+)</td><td class="n">(\d+)</td></tr>', section)


def test_the_page_names_the_fitted_array_files_and_each_value_or_why_there_are_none(seg):
    write_report(seg)
    rec = json.loads((seg / "p1.contacts.json").read_text())["array_label"]
    assert rec["written"] and (seg / "p1.array.nii.gz").is_file()
    text = (seg / "report" / "p1.html").read_text()
    assert "<code>p1.array.nii.gz</code>" in text and "<code>p1.array.ctbl</code>" in text
    assert f"{rec['model']} at its catalogue diameter along a {rec['centreline_length_mm']} mm" in text
    assert _fitted_rows(text) == [(v, name, str(rec["voxels"][v])) for v, name in rec["values"].items()]
    assert _fitted_rows(text)[-1][1] == "carrier" and len(_fitted_rows(text)) == 12 + 1  # FLEX28: 12 contacts
    empty = (seg / "report" / "empty.html").read_text()
    why = json.loads((seg / "empty.contacts.json").read_text())["array_label"]["reason"]
    assert f"Not written: {why}" in empty.replace("&#x27;", "'")
    record = json.loads((seg / "p1.contacts.json").read_text())
    del record["array_label"]  # as segment --no-array-label (or an older version) leaves it
    (seg / "p1.contacts.json").write_text(json.dumps(record))
    write_report(seg)
    assert "Not in this output: segment ran with --no-array-label" in (seg / "report" / "p1.html").read_text()


def test_a_case_without_an_array_says_why_and_shows_its_verdict(cohort, seg):
    res = write_report(seg, input=cohort[0])
    rec = json.loads((seg / "empty.contacts.json").read_text())
    assert rec["arrays"] == [] and rec["n_contacts"] == 0 and not res.failed
    text = res.pages["empty"].read_text()
    assert "No array measures: no contacts were found on the label" in text
    assert f"QC: {rec['qc']['verdict']}" in text and len(_pngs(text)) == 2  # the overlays only


def test_without_the_scan_the_page_says_so_and_keeps_table_and_verdict(cohort, seg, tmp_path):
    text = write_report(seg, tmp_path / "r1").pages["p1"].read_text()
    assert "No overlays: the source image was not given" in text and len(_pngs(text)) == 2
    assert len(_contact_rows(text)) == json.loads((seg / "p1.contacts.json").read_text())["n_contacts"]
    other = tmp_path / "other"  # a scan of that name but not the one segmented
    write_image(Volume(np.zeros((8, 9, 10), np.float32), (1.0, 1.0, 1.0)), other / "p1.nii.gz")
    shutil.copy(cohort[0] / "empty.nii.gz", other)
    text = write_report(seg, tmp_path / "r2", input=other).pages["p1"].read_text()
    assert "does not lie on its label&#x27;s grid" in text and "QC: " in text


def test_an_unreadable_contacts_file_is_named_and_the_others_finish(seg, capsys):
    (seg / "broken.contacts.json").write_text('{"case_id": "broken", ')
    (seg / "summary.json").write_text(json.dumps({"failed": [{"case_id": "gone", "error": "ValueError: no image"}]}))
    rc = main(["report", str(seg)])
    out = capsys.readouterr().out
    assert rc == 1
    (line,) = [ln for ln in out.splitlines() if "failed:" in ln]
    assert "broken" in line and "broken.contacts.json: not valid JSON" in line
    report = seg / "report"
    assert sorted(p.name for p in report.glob("*.html")) == ["empty.html", "index.html", "p1.html"]
    index = (report / "index.html").read_text()
    assert "report failed" in index and "segment failed" in index and "no image" in index


def test_refuses_a_folder_the_report_did_not_write_and_rewrites_its_own(seg, tmp_path, capsys):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "index.html").write_text("my own page")
    rc = main(["report", str(seg), "--out", str(mine)])
    err = capsys.readouterr().err
    assert rc == 2 and "was not written by cochseg3d report" in err and len(err.strip().splitlines()) == 1
    assert (mine / "index.html").read_text() == "my own page"
    assert sorted(p.name for p in mine.iterdir()) == ["index.html"]
    (tmp_path / "empty_dir").mkdir()
    assert main(["report", str(seg), "--out", str(tmp_path / "empty_dir")]) == 0  # an empty folder is fine
    assert main(["report", str(seg), "--out", str(tmp_path / "empty_dir")]) == 0  # and so is the report's own
    (tmp_path / "afile").write_text("x")
    assert main(["report", str(seg), "--out", str(tmp_path / "afile")]) == 2


def test_page_renders_in_a_headless_browser(cohort, seg, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright (and its chromium) not installed; "
                                     "the page's structure and pictures are checked without a browser above")
    page_path = write_report(seg, input=cohort[0]).pages["p1"]
    with playwright.sync_playwright() as p:
        try:
            browser = p.chromium.launch()
        except Exception as exc:  # playwright without its browser download
            pytest.skip(f"chromium for playwright not available: {exc}")
        page = browser.new_page()
        page.goto(page_path.as_uri())
        assert page.locator("img").count() == 4
        assert all(page.evaluate(f"document.images[{i}].naturalWidth") > 0 for i in range(4))
        page.screenshot(path=str(tmp_path / "p1.png"), full_page=True)
        browser.close()
    assert (tmp_path / "p1.png").stat().st_size > 10000


def test_an_array_without_a_cochlear_frame_gives_the_reason_positions_and_escaped_text(seg):
    from cochseg3d.clinical import measure_arrays
    from cochseg3d.contacts import Contacts

    rec = json.loads((seg / "p1.contacts.json").read_text())
    line = np.column_stack([np.linspace(0, 11, 12), np.zeros(12), np.zeros(12)])  # straight: no spiral to fit
    rec["arrays"] = measure_arrays(Contacts(line, "peaks"))["arrays"]
    rec["qc"] = {"verdict": "review", "reasons": ["<script>alert(1)</script> in a reason"]}
    (seg / "p1.contacts.json").write_text(json.dumps(rec))
    (array,) = rec["arrays"]
    assert array.get("reason") and "angle_deg" not in array["contacts"][0]
    text = write_report(seg).pages["p1"].read_text()
    assert f"Cochlear measures absent: {array['reason']}".replace("'", "&#x27;") in text
    assert len(_contact_rows(text)) == 12 and not _pngs(text)  # positions; no frame or unrolled figure
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; in a reason" in text
    rec["arrays"] = []  # contacts found, measures not computed
    (seg / "p1.contacts.json").write_text(json.dumps(rec))
    text = write_report(seg).pages["p1"].read_text()
    assert "No array measures: the cochlear measures could not be computed" in text
    assert len(re.findall(r"<tr><td>C\d+</td>", text)) == 12


def test_scans_are_found_where_a_cohort_runs_summary_csv_says(cohort, seg, tmp_path):
    moved = tmp_path / "moved"  # names that the naming rule would not give back: only summary.csv knows
    (moved / "a").mkdir(parents=True)
    shutil.copy(cohort[0] / "p1.nii.gz", moved / "a" / "scan.nii.gz")
    shutil.copy(cohort[0] / "empty.nii.gz", moved / "other.nii.gz")
    (seg / "summary.csv").write_text("case_id,input,status\np1,a/scan.nii.gz,ok\nempty,other.nii.gz,ok\n")
    res = write_report(seg, input=moved)
    assert all(len(_pngs(res.pages[c].read_text())) == n for c, n in (("p1", 4), ("empty", 2)))
