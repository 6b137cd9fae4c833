"""Shared by the benchmark scripts: machine facts and writing one section of BENCHMARKS.md."""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import platform
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
_HEADER = "# Benchmarks\n\nMeasured figures of every stage, each section written by the script it names.\n"


def machine() -> str:
    """One line: CPU model, cores, memory, GPU if any, date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {gpu}; {_dt.date.today().isoformat()}"


def proc_status_mb(key: str, pid: int | str = "self") -> float:
    """A memory line of /proc/<pid>/status (e.g. ``VmRSS``, ``VmHWM``) in MiB; NaN where absent (or gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def update_section(key: str, title: str, body: str, *, command: str) -> Path:
    """Replace (or append) the section ``key`` of BENCHMARKS.md; other sections stay as they are."""
    text_block = (
        f"<!-- BEGIN {key} -->\n## {title}\n\n"
        f"Machine: {machine()}. Commit {git_rev()}. Command: `{command}`\n\n{body.strip()}\n"
        f"<!-- END {key} -->\n"
    )
    with open(ROOT / ".BENCHMARKS.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = BENCHMARKS.read_text() if BENCHMARKS.exists() else _HEADER
        pattern = re.compile(rf"<!-- BEGIN {re.escape(key)} -->.*?<!-- END {re.escape(key)} -->\n", re.S)
        text = pattern.sub(lambda _: text_block, text) if pattern.search(text) else text.rstrip() + "\n\n" + text_block
        tmp = BENCHMARKS.with_suffix(".md.tmp")
        tmp.write_text(text)
        os.replace(tmp, BENCHMARKS)
    return BENCHMARKS
