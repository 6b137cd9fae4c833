"""The report's HTML: one self-contained page per patient and the cohort index (no external assets).

Every value from the files is escaped; figures arrive as ``data:`` URIs from :mod:`.figures`.
"""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any

from cochseg3d.clinical.markups import contact_rows

VERDICT_COLOURS = {"ok": "#1b7f3b", "review": "#b26a00", "fail": "#b3261e"}
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f2f2f2} td.n{text-align:right} tr.extra td{background:#fde8e6}
.qc{border:3px solid;border-radius:8px;padding:.6em 1em;margin:1em 0;font-size:1.05em}
.qc .verdict{font-size:1.6em;font-weight:bold;text-transform:uppercase}
.note{background:#fff6d6;border-left:4px solid #d4a300;padding:.4em .8em;margin:.6em 0}
.figs img{margin:0 .5em .5em 0;border:1px solid #ddd;vertical-align:top}
.verdict-cell{color:#fff;font-weight:bold;text-align:center}
"""
CONTACT_COLUMNS = [("name", "contact"), ("x_lps_mm", "x LPS mm"), ("y_lps_mm", "y LPS mm"), ("z_lps_mm", "z LPS mm"),
                   ("angle_deg", "angle deg"), ("depth_mm", "depth mm"), ("modiolus_distance_mm", "to modiolus mm"),
                   ("inside_cochlea", "inside"), ("frequency_oc_hz", "freq. OC Hz (Greenwood)"),
                   ("frequency_sg_hz", "freq. SG Hz (Stakhovskaya)")]


def _doc(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, (int, float)):
        return f'<td class="n">{escape(str(v))}</td>'
    return f"<td>{escape('' if v is None else str(v))}</td>"


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], *, row_class=None) -> str:
    head = "".join(f"<th>{escape(t)}</th>" for _, t in columns)
    body = []
    for r in rows:
        cls = row_class(r) if row_class else ""
        attr = f' class="{cls}"' if cls else ""
        body.append(f"<tr{attr}>"
                    + "".join(_cell(r.get(k)) for k, _ in columns) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>"


def _img(uri: str | None, alt: str) -> str:
    return f'<img src="{uri}" alt="{escape(alt)}">' if uri else ""


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def qc_box(qc: dict[str, Any] | None) -> str:
    """The QC verdict and its reasons, in a box coloured by the verdict."""
    qc = qc or {}
    verdict = str(qc.get("verdict") or "not judged")
    colour = VERDICT_COLOURS.get(verdict, "#666")
    reasons = qc.get("reasons") or []
    items = "".join(f"<li>{escape(str(r))}</li>" for r in reasons) or "<li>no reasons given</li>"
    return (f'<div class="qc" style="border-color:{colour}"><span class="verdict" style="color:{colour}">'
            f"QC: {escape(verdict)}</span><ul>{items}</ul></div>")


def _flags(flags: dict[str, Any]) -> str:
    rows = [{"flag": k.replace("_", " "), "value": bool((f or {}).get("value")), "evidence": (f or {}).get("evidence")}
            for k, f in flags.items()]
    return table(rows, [("flag", "flag"), ("value", "raised"), ("evidence", "evidence")])


def array_section(n: int, array: dict[str, Any], figs: dict[str, str | None]) -> str:
    """One array: insertion angle, extracochlear count, flags with evidence, figures, contact table."""
    head = f"Array {n}" + "".join(f", {escape(str(array[k]))}" for k in ("side", "vendor", "model") if array.get(k))
    out = [f"<h2>{head}</h2>"]
    if array.get("reason"):
        out.append(note(f"Cochlear measures absent: {array['reason']}"))
    facts = [("insertion angle", array.get("insertion_angle_deg"), "deg"),
             ("insertion depth", array.get("insertion_depth_mm"), "mm"),
             ("extracochlear contacts", array.get("extracochlear_contacts"), ""),
             ("contacts", array.get("n_contacts"), ""),
             ("cochlear frame confidence", (array.get("cochlear_frame") or {}).get("confidence"), "")]
    out.append("<ul>" + "".join(f"<li>{escape(k)}: <b>{escape('–' if v is None else f'{v} {u}'.strip())}</b></li>"
                                for k, v, u in facts) + "</ul>")
    if array.get("side_evidence"):
        out.append(f"<p>Side: {escape(str(array.get('side')))} ({escape(str(array['side_evidence']))})</p>")
    if array.get("flags"):
        out += ["<h3>Flags</h3>", _flags(array["flags"])]
    pictures = [_img(figs.get("cochlear_3d"), "contacts in the cochlear frame"),
                _img(figs.get("unrolled"), "unrolled cochlea")]
    if any(pictures):
        out.append('<div class="figs">' + "".join(pictures) + "</div>")
    rows = contact_rows({"arrays": [array]})
    if rows:
        out += ["<h3>Contacts (apex → base)</h3>",
                table(rows, CONTACT_COLUMNS, row_class=lambda r: "extra" if r.get("inside_cochlea") is False else "")]
    return "\n".join(out)


def fitted_array_section(case_id: str, info: dict[str, Any] | None) -> str:
    """The fitted physical array segment wrote (its files, model, voxels per value), or why there is none."""
    out = ["<h2>Fitted physical array</h2>"]
    if not info:
        return "\n".join(out + [note("Not in this output: segment ran with --no-array-label, or by an older "
                                      "cochseg3d.")])
    if not info.get("written"):
        return "\n".join(out + [note(f"Not written: {info.get('reason') or 'no reason recorded'}.")])
    length = info.get("centreline_length_mm")
    out.append(f"<p><code>{escape(case_id)}.array.nii.gz</code> with its colour table <code>{escape(case_id)}"
               f".array.ctbl</code> (3D Slicer: one segment per contact): {escape(str(info.get('model', '?')))} at "
               f"its catalogue diameter along a {escape('–' if length is None else str(length))} mm centreline, "
               "contacts apex first, then the carrier.</p>")
    voxels = info.get("voxels") or {}
    rows = [{"value": int(v), "name": name, "voxels": voxels.get(v)} for v, name in (info.get("values") or {}).items()]
    return "\n".join(out + [table(rows, [("value", "value"), ("name", "segment"), ("voxels", "voxels")])])


def bare_contacts(record: dict[str, Any]) -> str:
    """The contacts of a record without measured arrays: positions only."""
    rows = [{"name": f"C{i + 1}", "x_lps_mm": p[0], "y_lps_mm": p[1], "z_lps_mm": p[2]}
            for i, p in enumerate(record.get("contacts_lps_mm") or [])]
    return table(rows, CONTACT_COLUMNS[:4]) if rows else ""


def patient_page(case_id: str, record: dict[str, Any], *, overlays: dict[str, str], image_note: str,
                 arrays_html: list[str], no_array_reason: str = "", fitted_array_html: str = "") -> str:
    """One patient's page; the sections come ready made from :func:`array_section`."""
    series = record.get("series") or {}
    sub = ", ".join(f"{k.replace('_', ' ')} {escape(str(v))}" for k, v in series.items() if v not in (None, ""))
    body = ['<p><a href="index.html">← cohort index</a></p>', f"<h1>{escape(case_id)}</h1>",
            f"<p>{sub or 'series not recorded'}; {escape(str(record.get('n_contacts', 0)))} contacts "
            f"({escape(str(record.get('method', '?')))}); electrode assumed "
            f"{escape(str(record.get('model_assumed') or record.get('electrode_assumed') or 'none'))}</p>",
            qc_box(record.get("qc")), "<h2>Image</h2>"]
    if image_note:
        body.append(note(f"No overlays: {image_note}."))
    body.append('<div class="figs">' + "".join(_img(u, f"{v} overlay") for v, u in overlays.items()) + "</div>")
    if no_array_reason:
        body += ["<h2>Array</h2>", note(f"No array measures: {no_array_reason}"), bare_contacts(record)]
    body += [*arrays_html, fitted_array_html]
    return _doc(f"{case_id}: cochseg3d report", body)


INDEX_KEYS = ("n_contacts", "insertion_angle", "extracochlear", "flags", "note")


def index_page(rows: list[dict[str, Any]], *, title: str = "cochseg3d cohort report") -> str:
    """The cohort index: one row per patient, the verdict coloured, a link to its page."""
    head = ("<tr><th>patient</th><th>QC</th><th>contacts</th><th>insertion angle deg</th>"
            "<th>extracochlear</th><th>flags raised</th><th>note</th></tr>")
    body = []
    for r in rows:
        verdict = str(r.get("verdict") or "–")
        link = (f'<a href="{escape(r["page"])}">{escape(r["case_id"])}</a>' if r.get("page")
                else escape(r["case_id"]))
        colour = VERDICT_COLOURS.get(verdict, "#777")
        body.append(f'<tr><td>{link}</td><td class="verdict-cell" style="background:{colour}">{escape(verdict)}</td>'
                    + "".join(_cell(r.get(k)) for k in INDEX_KEYS) + "</tr>")
    counts = Counter(str(r.get("verdict") or "–") for r in rows)
    summary = ", ".join(f"{escape(k)}: {v}" for k, v in sorted(counts.items()))
    return _doc(title, [f"<h1>{escape(title)}</h1>", f"<p>{len(rows)} patients ({summary})</p>",
                        f"<table><thead>{head}</thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>"])
