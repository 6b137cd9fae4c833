"""``cochseg3d report``: an HTML page per patient and a cohort index from a ``segment`` output folder.

* :mod:`.sources` - the patients' records, labels and (found again from ``--input``) scans.
* :mod:`.figures` - overlays through the array, the cochlear-frame view, the unrolled cochlea.
* :mod:`.html` - the self-contained pages.
* :mod:`.build` - the folder (kept apart from others' by a marker) and the loop over patients.
"""

from cochseg3d.report.build import MARKER, ReportResult, write_report

__all__ = ["MARKER", "ReportResult", "write_report"]
