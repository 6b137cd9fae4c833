"""The bad-input corpus run through the real CLI: each kind of broken input ends in its class.

The class: exit 0 with what was skipped reported, or exit 1/2 with one stderr line naming the file
and the problem; never a traceback, never a hang (every process under a timeout), nothing written
outside ``out/``, the input byte-identical afterwards, no PatientName or input path in any output.
Cases run in a few batch processes (``driver.py``) to keep the corpus fast; pipes and undecodable
names run as their own ``python -m cochseg3d`` process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build as b  # noqa: E402
from cases import all_cases  # noqa: E402

REPO = HERE.parents[1]
TIMEOUT_S = 60
BATCH_TIMEOUT_S = 180
CASES = all_cases()
BY_NAME = {c.name: c for c in CASES}
#: the CLI's safety net for an unexpected exception; a corpus case must never reach it
NET = "unexpected error"


def _snapshot(root: Path) -> dict[str, str]:
    """Hash of every file under ``root`` except ``out`` (pipes and links by their kind only)."""
    snap = {}
    for dirpath, dirs, files in os.walk(os.fsencode(root)):
        rel = os.path.relpath(dirpath, os.fsencode(root))
        if rel == b"out" or rel.startswith(b"out/"):
            continue
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            key = os.fsdecode(os.path.relpath(p, os.fsencode(root)))
            if key == "out":
                continue
            if os.path.islink(p) or not os.path.isfile(p):
                snap[key] = "link" if os.path.islink(p) else ("dir" if os.path.isdir(p) else "special")
            else:
                with open(p, "rb") as fh:
                    snap[key] = hashlib.sha256(fh.read()).hexdigest()
    return snap


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": "",
            "MPLBACKEND": "Agg", "LC_ALL": "C.UTF-8"}  # a UTF-8 locale: undecodable names must not crash


def _own_process(argv: list[str], cwd: Path) -> dict:
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "cochseg3d", *argv], cwd=cwd, capture_output=True,
                           timeout=TIMEOUT_S, env=_env())
    except subprocess.TimeoutExpired:
        return {"rc": None, "stdout": "", "stderr": f"HANG: no exit within {TIMEOUT_S} s"}
    dec = lambda s: s.decode("utf-8", "replace")  # noqa: E731
    return {"rc": p.returncode, "stdout": dec(p.stdout), "stderr": dec(p.stderr),
            "seconds": round(time.perf_counter() - t0, 3)}


def _batch(spec: list[dict], work: Path, tag: str) -> dict[str, dict]:
    spec_path, res_path = work / f"spec_{tag}.json", work / f"results_{tag}.jsonl"
    spec_path.write_text(json.dumps(spec))
    try:
        subprocess.run([sys.executable, str(HERE / "driver.py"), str(spec_path), str(res_path)], cwd=work,
                       capture_output=True, timeout=BATCH_TIMEOUT_S, env=_env())
    except subprocess.TimeoutExpired:
        pass
    results, started = {}, None
    for line in res_path.read_text().splitlines() if res_path.exists() else []:
        rec = json.loads(line)
        if "start" in rec:
            started = rec["start"]
        else:
            results[rec["name"]] = rec
            started = None
    if started is not None:
        results[started] = {"rc": None, "stdout": "", "stderr": "HANG: the batch timed out in this case"}
    return results


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, request):
    """Build every selected case, run them all, return ({name: result}, {name: (before, after)}, seconds)."""
    runslow = request.config.getoption("--runslow")
    work = tmp_path_factory.mktemp("badinput")
    chosen = [c for c in CASES if runslow or not c.slow]
    argv, before = {}, {}
    for c in chosen:
        root = work / c.name
        root.mkdir()
        argv[c.name] = c.build(root)
        before[c.name] = _snapshot(root)
    t0 = time.perf_counter()
    batch = [c for c in chosen if not c.own_process]
    groups = [batch[0::2], batch[1::2]]
    single = [c for c in chosen if c.own_process]
    results: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futs = [pool.submit(_batch, [{"name": c.name, "cwd": str(work / c.name), "argv": argv[c.name]} for c in g],
                            work, str(i)) for i, g in enumerate(groups)]
        for c in single:
            results[c.name] = _own_process(argv[c.name], work / c.name)
        for f in futs:
            results.update(f.result())
    seconds = time.perf_counter() - t0
    after = {c.name: _snapshot(work / c.name) for c in chosen}
    return work, results, before, after, seconds


def _outputs(root: Path) -> list[Path]:
    out = root / "out"
    if out.is_file():
        return [out]
    return [p for p in out.rglob("*") if p.is_file()] if out.is_dir() else []


@pytest.mark.parametrize("name", [c.name for c in CASES],
                         ids=[c.name for c in CASES])
def test_bad_input_case(corpus, name, request):
    case = BY_NAME[name]
    if case.slow and not request.config.getoption("--runslow"):
        pytest.skip("slow: run with --runslow")
    work, results, before, after, _ = corpus
    root = work / name
    res = results.get(name)
    assert res is not None, f"{name}: never ran (an earlier case hung the batch?)"
    out, err = res["stdout"], res["stderr"]
    assert res["rc"] is not None, err
    assert "Traceback" not in err and NET not in err, f"{name}: traceback\n{err}"
    if case.expect == "ok":
        assert res["rc"] == 0, f"{name}: exit {res['rc']}\n{err}"
        text = out + err
        for m in case.mention:
            assert m in text, f"{name}: {m!r} not reported\nstdout: {out}\nstderr: {err}"
    else:
        assert res["rc"] in (1, 2), f"{name}: exit {res['rc']}\n{out}\n{err}"
        lines = [ln for ln in err.splitlines() if all(m in ln for m in case.mention)]
        assert lines, f"{name}: no stderr line names {case.mention}\n{err}"
    assert after[name] == before[name], f"{name}: input changed or written outside out/"
    for p in _outputs(root):
        data = p.read_bytes()
        assert b.SECRET.encode() not in data, f"{name}: {p} holds the patient name or input path"
        assert os.fsencode(root) not in data, f"{name}: {p} holds the input's absolute path"
    if case.check is not None:
        case.check(root)


def test_corpus_size_and_runtime(corpus):
    """At least 60 kinds across every family; the whole corpus well within a minute on 2 cores."""
    work, results, _, _, seconds = corpus
    families = {c.family for c in CASES}
    assert len(CASES) >= 60 and families == {"dicom", "nifti", "png", "config", "cohort", "paths"}
    summary = {"kinds": len(CASES), "ran": len(results), "seconds": round(seconds, 1),
               "ok": sum(1 for c in CASES if c.expect == "ok"), "errors": sum(1 for c in CASES if c.expect == "error"),
               "hangs": sum(1 for r in results.values() if r["rc"] is None),
               "tracebacks": sum(1 for r in results.values() if "Traceback" in r["stderr"])}
    print(json.dumps(summary))
    slowest = sorted(results.items(), key=lambda kv: -kv[1].get("seconds", 0))[:8]
    print("slowest:", ", ".join(f"{k} {v.get('seconds', 0):.1f}s" for k, v in slowest))
    assert summary["hangs"] == 0 and summary["tracebacks"] == 0
    assert seconds < 120, summary
