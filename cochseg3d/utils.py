"""Small shared helpers: safe case ids, logging set-up."""

from __future__ import annotations

import logging
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_case_id(text: str, fallback: str = "case") -> str:
    """A file-name-safe id: no path separators, no ``..``, no leading dot, at most 64 chars."""
    s = _UNSAFE.sub("_", str(text or "")).strip("._-")
    s = re.sub(r"\.{2,}", "_", s)[:64].strip("._-")
    return s or fallback


def setup_logging(verbose: int = 0) -> None:
    level = logging.WARNING - 10 * verbose if verbose else logging.INFO
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
