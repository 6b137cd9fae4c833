"""Small shared helpers: safe case ids, printable paths, file-kind and output-path checks, logging set-up."""

from __future__ import annotations

import functools

import logging
import os
import re
import stat
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_case_id(text: str, fallback: str = "case") -> str:
    """A file-name-safe id: no path separators, no ``..``, no leading dot, at most 64 chars."""
    s = _UNSAFE.sub("_", str(text or "")).strip("._-")
    s = re.sub(r"\.{2,}", "_", s)[:64].strip("._-")
    return s or fallback


def display_path(path: str | os.PathLike) -> str:
    """``path`` as printable text: bytes that are not UTF-8 become U+FFFD (names need not be UTF-8)."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        return text.decode("utf-8", "replace")
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


_FILE_KINDS = [(stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISDIR, "a folder")]


def not_regular_reason(path: str | os.PathLike) -> str | None:
    """Why ``path`` must not be opened as a file (None for a regular, non-empty file), from ``os.stat``.

    A named pipe or a device would block (or never end) a read, so these are told apart before
    anything is opened.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot stat ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(st.st_mode):
        return None if st.st_size else "empty file"
    kind = next((k for test, k in _FILE_KINDS if test(st.st_mode)), "a special file")
    return f"{kind}, not a regular file: not opened"


def check_output_folder(path: str | os.PathLike) -> Path:
    """Refuse an output folder that is an existing non-folder, or lies below one.

    Raises:
        ValueError: naming the path that is in the way.
    """
    path = Path(path)
    for p in [path, *path.parents]:
        if p.exists() and not p.is_dir():
            what = "the output folder" if p == path else f"a folder above {display_path(path)}"
            raise ValueError(f"{display_path(p)}: exists and is not a folder (it should be {what}); "
                             "choose another output path")
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """Refuse an output file whose path is an existing folder, or lies below a non-folder."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{display_path(path)}: is a folder; give a file name for the output")
    check_output_folder(path.parent)
    return path


def read_picture(path: str | os.PathLike):
    """A PNG (or other picture) opened and fully decoded by PIL, or a ValueError naming the file.

    Pipes and devices are refused before opening; a truncated or non-picture file gives one line.
    """
    from PIL import Image, UnidentifiedImageError

    kind = not_regular_reason(path)
    if kind is not None:
        raise ValueError(f"{display_path(path)}: {kind}")
    try:
        im = Image.open(path)
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{display_path(path)}: not a readable PNG ({' '.join(str(exc).split())})") from None
    return im


def read_json(path: str | os.PathLike):
    """A JSON file's content, or a ValueError naming the file (not JSON, not a regular file)."""
    import json

    kind = not_regular_reason(path)
    if kind is not None:
        raise ValueError(f"{display_path(path)}: {kind}")
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{display_path(path)}: not valid JSON ({exc})") from None


def read_cohort_json(index: str | os.PathLike, *, required: tuple[str, ...],
                     paths: tuple[str, ...] = ()) -> list[dict]:
    """A phantom cohort's ``cohort.json``: a list of objects, each with the ``required`` keys as
    non-empty strings; the ``paths`` keys (when present) are turned into paths that must stay inside
    the cohort folder. Anything else is refused in one line naming the file, the entry and the key.
    """
    index = Path(index)
    doc = read_json(index)
    if not isinstance(doc, list):
        raise ValueError(f"{index}: must be a list of case objects, got a JSON {type(doc).__name__}")
    root = index.parent.resolve()
    out = []
    for i, e in enumerate(doc):
        if not isinstance(e, dict):
            raise ValueError(f"{index}: entry {i} must be an object with {', '.join(map(repr, required))}, "
                             f"got {e!r:.60}")
        for key in required:
            if not isinstance(e.get(key), str) or not e[key]:
                raise ValueError(f"{index}: entry {i} has no {key!r} (a non-empty string)")
        e = dict(e)
        for key in paths:
            if not e.get(key):
                e[key] = None
                continue
            if not isinstance(e[key], str):
                raise ValueError(f"{index}: entry {i} {key!r} must be a path string, got {e[key]!r:.60}")
            p = index.parent / e[key]
            if root != p.resolve() and root not in p.resolve().parents:
                raise ValueError(f"{index}: entry {i} {key!r} {e[key]!r} lies outside the cohort folder")
            e[key] = p
        out.append(e)
    return out


def setup_logging(verbose: int = 0) -> None:
    level = logging.WARNING - 10 * verbose if verbose else logging.INFO
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    # pydicom logs each decoder plugin's failure with its traceback; cochseg3d reports the file and
    # the reason itself, in one line, so pydicom's own log is shown only with -v
    logging.getLogger("pydicom").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


@functools.lru_cache(maxsize=1)
def _libc():
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl): nothing to hand back
        return None


def release_freed_memory() -> bool:
    """Hand the memory a finished patient freed back to the system; False where it cannot.

    glibc keeps freed blocks in its arenas, so a long cohort run's resident size would stay at its
    largest patient's; ``malloc_trim`` returns them (a few ms). A no-op where there is no glibc.
    """
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim(0)
    return True
