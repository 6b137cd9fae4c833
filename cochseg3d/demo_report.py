"""``report.md`` of a demo run: metrics, curves, overlays, contacts, timings and the commands."""

from __future__ import annotations

import json
import math
import platform
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cochseg3d.volume import Volume, atomic_write, canonical


def overlay_png(image: Volume, pred: Volume, truth: Volume, path: Path, *, title: str,
                pred_contacts_lps_mm: list | None = None, truth_contacts_lps_mm: list | None = None,
                window_hu: tuple[float, float] = (-500.0, 3000.0)) -> Path:
    """Coronal slab MIP through the electrode: truth outline green, prediction red, contacts marked.

    The slab spans the truth's and prediction's anterior-posterior extent plus 1 mm; axes in mm,
    patient right on the image's left, superior up (the radiological coronal view).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from cochseg3d.export import electrode_slab

    can = canonical(image)
    p = canonical(pred, is_label=True).array > 0
    t = canonical(truth, is_label=True).array > 0
    sx, sy, sz = can.spacing_mm
    k0, k1 = electrode_slab(p | t, slice_spacing_mm=sz)
    mip = can.array[k0:k1].max(axis=0).astype(np.float32)
    pm, tm = p[k0:k1].any(axis=0), t[k0:k1].any(axis=0)
    rows, cols = np.nonzero(pm | tm)
    if rows.size:
        margin = int(round(6.0 / sy))
        r0, r1 = max(0, rows.min() - margin), min(mip.shape[0], rows.max() + margin + 1)
        c0, c1 = max(0, cols.min() - margin), min(mip.shape[1], cols.max() + margin + 1)
    else:
        r0, r1, c0, c1 = 0, mip.shape[0], 0, mip.shape[1]
    extent = (c0 * sx - 0.5 * sx, (c1 - 0.5) * sx, (r1 - 0.5) * sy, r0 * sy - 0.5 * sy)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=110)
    ax.imshow(mip[r0:r1, c0:c1], cmap="gray", vmin=window_hu[0], vmax=window_hu[1], extent=extent,
              interpolation="nearest")
    yy, xx = np.mgrid[r0:r1, c0:c1]
    for mask, colour, name in ((tm, "lime", "truth"), (pm, "red", "prediction")):
        if mask[r0:r1, c0:c1].any():
            ax.contour(xx * sx, yy * sy, mask[r0:r1, c0:c1].astype(float), levels=[0.5], colors=colour,
                       linewidths=1.0)
        ax.plot([], [], color=colour, label=name)
    for pts, marker, colour, name in ((truth_contacts_lps_mm, "o", "lime", "true contacts"),
                                      (pred_contacts_lps_mm, "+", "red", "found contacts")):
        if pts:
            ijk = can.lps_to_index(np.asarray(pts, dtype=float))
            style = {"facecolors": "none", "edgecolors": colour} if marker == "o" else {"c": colour}
            ax.scatter(ijk[:, 0] * sx, ijk[:, 1] * sy, s=14, marker=marker, linewidths=0.8, label=name, **style)
    ax.set_xlabel("patient right → left (mm)")
    ax.set_ylabel("superior → inferior (mm)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=7, framealpha=0.6)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "∞" if v > 0 else "–"
        return f"{v:.{digits}f}"
    return str(v)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    def numeric(key: str) -> bool:
        return any(isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) for r in rows)

    head = "| " + " | ".join(title for _, title in columns) + " |"
    sep = "|" + "|".join("---:" if numeric(key) else "---" for key, _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(r.get(key), 1 if key.endswith("_hu") else 3) for key, _ in columns) + " |"
            for r in rows]
    return "\n".join([head, sep, *body])


def overlay_title(case: dict[str, Any], row: dict[str, Any]) -> str:
    """An overlay's title: the array, Dice, contacts matched within 1 mm of the true ones / true count."""
    recall, n_true = row.get("contact_recall"), row.get("n_contacts_truth")
    # recall is matched / true (1 mm gate), so this gives back the matched count exactly
    matched = round(recall * n_true) if recall is not None and n_true is not None else None
    return (f"{case['case_id']}: {case['vendor']} {case['model']}, {case['orientation']} acquisition\n"
            f"Dice {_fmt(row.get('dice'))}, contacts {_fmt(matched)}/{_fmt(n_true)} within 1 mm, "
            f"error {_fmt(row.get('contact_error_mm'))} mm")


METRIC_COLUMNS = [("case_id", "case"), ("vendor", "vendor"), ("model", "array"), ("dice", "Dice"),
                  ("surface_dice_1mm", "surface Dice 1 mm"), ("iou", "IoU"), ("precision", "precision"),
                  ("recall", "recall"), ("hd95_mm", "HD95 mm"), ("fp_volume_far_mm3", "FP far mm³"),
                  ("contact_recall", "contact recall"), ("contact_error_mm", "contact error mm"),
                  ("n_contacts_pred", "contacts found"), ("n_contacts_truth", "contacts true")]


def write_report(out: Path, *, plan: dict[str, Any], stages: list[dict[str, Any]], test_cases: list[dict[str, Any]],
                 cohort_dir: Path) -> Path:
    """Write ``out/report.md`` (and its figures in ``report_files/``); print the headline.

    Args:
        out: the demo folder (``segment/``, ``run/`` inside it).
        plan: the run's sizes ("patients", "seed", "orientation").
        stages: one record per stage ("name", "title", "seconds", "commands", "reused", and the
            stage's own results: "evaluate" its "cases" and "summary", "annotate" its "cases").
        test_cases: the held-out patients' cohort.json entries.
        cohort_dir: the phantom cohort (the entries' paths are relative to it).
    """
    out, cohort_dir = Path(out), Path(cohort_dir)
    files = out / "report_files"
    files.mkdir(exist_ok=True)
    by_name = {s["name"]: s for s in stages}
    evaluation = by_name.get("evaluate", {})
    cases, summary = evaluation.get("cases", []), evaluation.get("summary", [])
    figures = _overlays(out, cohort_dir, test_cases, cases, files)
    curves = out / "run" / "curves.png"
    if curves.exists():
        shutil.copyfile(curves, files / "curves.png")
    overall = next((r for r in summary if r.get("case_id") == "ALL"), {})
    total = sum(float(s.get("seconds", 0.0)) for s in stages)
    lines = [*_headline(plan, len(test_cases), overall), "## Per patient", "", _table(cases + summary, METRIC_COLUMNS),
             "", "Dice and surface Dice are computed on each source series' own grid against the phantom's "
             "`truth/label.nii.gz`; contacts are matched one to one (Hungarian, 1 mm gate).", "",
             *_figure_sections(figures, (files / "curves.png").exists()),
             *_annotation_section(by_name.get("annotate", {}).get("cases", [])),
             *_timings(stages, total), *_reproduce(stages, out, cohort_dir)]
    report = out / "report.md"
    atomic_write(report, lambda tmp: tmp.write_text("\n".join(lines)))
    print(f"\nreport: {report}")
    print(f"held-out Dice {_fmt(overall.get('dice'))}, surface Dice 1 mm {_fmt(overall.get('surface_dice_1mm'))}, "
          f"contact recall {_fmt(overall.get('contact_recall'))}, contact error {_fmt(overall.get('contact_error_mm'))} mm; "
          f"total {total:.0f} s")
    return report


def _overlays(out: Path, cohort_dir: Path, test: list[dict[str, Any]], cases: list[dict[str, Any]],
              files: Path) -> list[Path]:
    """One overlay PNG per held-out patient that was segmented."""
    from cochseg3d.dicom import load_input
    from cochseg3d.volume import read_image

    figures = []
    for case in test:
        cid = case["case_id"]
        pred_path = out / "segment" / f"{cid}.nii.gz"
        if not pred_path.exists():
            continue
        image = load_input(cohort_dir / case["dicom"])
        truth = read_image(cohort_dir / case["label"])
        pc = out / "segment" / f"{cid}.contacts.json"
        pred_contacts = json.loads(pc.read_text()).get("contacts_lps_mm") if pc.exists() else None
        truth_contacts = json.loads((cohort_dir / case["contacts"]).read_text())["contacts_lps_mm"]
        title = overlay_title(case, next((r for r in cases if r.get("case_id") == cid), {}))
        figures.append(overlay_png(image, read_image(pred_path), truth, files / f"{cid}_overlay.png", title=title,
                                   pred_contacts_lps_mm=pred_contacts, truth_contacts_lps_mm=truth_contacts))
    return figures


def _headline(plan: dict[str, Any], n_test: int, overall: dict[str, Any]) -> list[str]:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        "# cochseg3d demo report", "",
        f"{now} on {platform.node() or 'this machine'} ({platform.machine()}, Python {platform.python_version()}). "
        f"{plan['patients']} synthetic phantom patients (seed {plan['seed']}, orientation "
        f"{plan['orientation']}); {n_test} held out for testing, never annotated nor seen in training.", "",
        "## Headline (held-out patients)", "",
        f"- Dice **{_fmt(overall.get('dice'))}**, surface Dice at 1 mm **{_fmt(overall.get('surface_dice_1mm'))}**, "
        f"HD95 {_fmt(overall.get('hd95_mm'))} mm, false-positive volume far from the array "
        f"{_fmt(overall.get('fp_volume_far_mm3'), 1)} mm³",
        f"- contacts: recall **{_fmt(overall.get('contact_recall'))}**, mean error "
        f"**{_fmt(overall.get('contact_error_mm'))} mm**", ""]


def _figure_sections(figures: list[Path], curves: bool) -> list[str]:
    lines = []
    if figures:
        lines += ["## Overlays", "", "Coronal slab MIP through the array (patient right on the left, superior up): "
                  "truth outline green, prediction red; circles true contacts, crosses found contacts.", ""]
        lines += [f"![{f.stem}](report_files/{f.name})" for f in figures] + [""]
    if curves:
        lines += ["## Training curves", "", "![training curves](report_files/curves.png)", ""]
    return lines


def _annotation_section(ann: list[dict[str, Any]]) -> list[str]:
    if not ann:
        return []
    return ["## Annotation", "", "Auto pre-fill (threshold from each image's histogram) on the coronal slices "
            "that show the array, then corrected to the phantom truth as an annotator would; a few "
            "slices without metal are marked annotated too.", "",
            _table(ann, [("case_id", "case"), ("vendor", "vendor"), ("slices", "annotated slices"),
                         ("metal_slices", "slices showing the array"),
                         ("detected_metal_slices", "slices flagged by the metal detector"),
                         ("threshold_hu", "auto threshold HU"),
                         ("prefill_dice", "pre-fill Dice vs truth"),
                         ("voxels_corrected", "voxels corrected")]), ""]


def _timings(stages: list[dict[str, Any]], total: float) -> list[str]:
    lines = ["## Timings", "", "| stage | seconds | |", "|---|---:|---|"]
    lines += [f"| {s['title']} | {float(s.get('seconds', 0)):.1f} | {'reused' if s.get('reused') else ''} |"
              for s in stages]
    return lines + [f"| **total** | **{total:.1f}** | |", ""]


def _reproduce(stages: list[dict[str, Any]], out: Path, cohort_dir: Path) -> list[str]:
    lines = ["## Reproduce by hand", "", "Each stage is a `cochseg3d` command (the annotation step is a person "
             "in napari; here its corrections come from the phantom truth):", "", "```bash"]
    for s in stages:
        lines += list(s.get("commands", []))
    return lines + ["```", "", "## Where things are", "",
                    f"- phantoms (DICOM + truth): `{cohort_dir}`", f"- NIfTI conversions: `{out / 'nifti'}`",
                    f"- annotations: `{out / 'annotations'}`", f"- training run: `{out / 'run'}`",
                    f"- segmentations (labels on the source grid, contacts, previews): `{out / 'segment'}`",
                    f"- evaluation: `{out / 'evaluation.csv'}`", ""]
