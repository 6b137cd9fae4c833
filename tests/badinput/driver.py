"""Run many CLI invocations in one process, as ``python -m cochseg3d`` would run each.

``python driver.py SPEC.json RESULTS.jsonl``: SPEC is a list of ``{"name", "cwd", "argv"}``. For each,
the working folder is ``cwd``, stdout/stderr are captured, logging is set up afresh, and
``cochseg3d.cli.main(argv)`` runs; an exception escaping it is recorded with its traceback exactly
where Python would print one. One JSON line per case is appended (and flushed) to RESULTS, a
``start`` line first, so a hang is pinned on its case when the caller's timeout kills the process.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import time
import traceback


def run_one(argv: list[str], cwd: str) -> dict:
    from cochseg3d.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    old = os.getcwd()
    os.chdir(cwd)
    rc = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse usage errors
                rc = exc.code if isinstance(exc.code, int) else 2
            except BaseException:  # noqa: BLE001 - what the real CLI would print as a traceback
                traceback.print_exc()
                rc = 1
    finally:
        os.chdir(old)
        for h in list(root.handlers):
            root.removeHandler(h)
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main(spec_path: str, results_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    with open(results_path, "a") as res:
        for case in spec:
            res.write(json.dumps({"start": case["name"]}) + "\n")
            res.flush()
            t0 = time.perf_counter()
            result = run_one(case["argv"], case["cwd"])
            result["seconds"] = round(time.perf_counter() - t0, 3)
            res.write(json.dumps({"name": case["name"], **result}) + "\n")
            res.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
