"""The bad-input corpus: each case builds one kind of broken input and says what the CLI must do.

A case's ``build(root)`` writes its input under ``root/in`` and returns the argv (run with ``root``
as working folder; outputs go to ``root/out``). ``expect`` is ``"ok"`` (exit 0, and ``mention`` found
in the output: what was skipped, and why) or ``"error"`` (exit 1 or 2, and one stderr line holding
every ``mention``: the file and the problem). ``own_process`` cases (a pipe, undecodable names on a
UTF-8 terminal) run as a real ``python -m cochseg3d`` subprocess under a timeout; the other pipe
cases run in the batch processes, whose timeout pins a hang on its case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import build as b


@dataclass
class Case:
    name: str
    family: str
    build: Callable[[Path], list[str]]
    expect: str
    mention: tuple[str, ...] = ()
    own_process: bool = False
    slow: bool = False
    #: extra check on the finished case folder (raises AssertionError)
    check: Callable[[Path], None] | None = field(default=None, repr=False)


CASES: list[Case] = []


def case(family: str, expect: str, *mention: str, own_process: bool = False, slow: bool = False, check=None):
    def deco(fn: Callable[[Path], list[str]]):
        CASES.append(Case(fn.__name__, family, fn, expect, tuple(mention), own_process, slow, check))
        return fn
    return deco


def _converted_size(root: Path, size=(16, 16, 4), spacing=0.4) -> None:
    docs = [json.loads(p.read_text()) for p in (root / "out").glob("*.json")]
    assert docs, "nothing converted"
    assert docs[0]["size"] == list(size), docs[0]["size"]
    assert np.allclose(docs[0]["spacing_mm"], spacing, atol=1e-3), docs[0]["spacing_mm"]


P = f"in/{b.PATIENT_DIR}"


def _every_file(root, **values) -> list[str]:
    """The series with header ``values`` changed in every file, converted."""
    f, files = b.patient(root)
    for p in files:
        b.edit(p, **values)
    return ["convert", P, "out"]


def _with_extra(root, verb: str, name: str, **values) -> list[str]:
    """The series plus one more file ``name``: a copy of a slice, another series, ``values`` changed."""
    f, files = b.patient(root)
    b.extra_file(f, files, name, **values)
    return ["inspect", P] if verb == "inspect" else ["convert", P, "out", "--no-progress"]


def all_cases() -> list[Case]:
    """Every kind, registered by importing the modules that define them."""
    import cases_dicom  # noqa: F401
    import cases_files  # noqa: F401

    return CASES
