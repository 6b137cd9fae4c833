"""Segment in a separate process so napari's interpreter lock stays free (no Qt here).

The network, the contact finder and QC run in a ``spawn`` child; napari's worker thread only
waits on a pipe (which releases the lock) and passes on the child's progress: the fraction of
coronal-slice chunks done, read from the pipeline's own progress bar.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from cochseg3d.volume import Volume

if TYPE_CHECKING:
    import torch

    from cochseg3d.clinical.array_label import ArrayLabel

    from cochseg3d.pipeline import Result

#: the pipeline's progress bar (tqdm, ``segment: 43%|... | 3/7 [...]``): chunks done / all
_BAR = re.compile(r"\bsegment:.*?(\d+)/(\d+)")
#: seconds between checks that the child is still alive (and that nobody asked to stop)
POLL_S = 0.2


class SegmentError(Exception):  # not RuntimeError: napari's worker swallows those without emitting finished
    """The child's one-line error (its exception does not cross the process boundary)."""


def detached(can: Volume) -> Volume:
    """``can`` without its ``source_grid``: :func:`cochseg3d.segment` then returns the label on
    exactly this (the layer's) grid instead of resampling it back to the original series."""
    return Volume(can.array, can.spacing_mm, can.origin_mm, can.direction,
                  {k: v for k, v in can.meta.items() if k != "source_grid"})


def run_segment(can: Volume, model: "str | Path | torch.nn.Module | None", *, electrode: str | None,
                device: str = "auto", progress: bool = False, fit_array: bool = False
                ) -> tuple["Result", np.ndarray, "ArrayLabel | None"]:
    """Segment the canonical stack ``can``; returns the result, the label as an array of ``can``'s
    shape and, with ``fit_array``, the physical array fitted through the contacts."""
    import cochseg3d

    res = cochseg3d.segment(detached(can), model=model, electrode=electrode, device=device, progress=progress)
    if not res.label.grid.allclose(can.grid):  # the pipeline keeps the input's grid; guard it anyway
        raise ValueError(f"segmentation came back on another grid ({res.label.array.shape}, stack {can.array.shape})")
    if not fit_array:
        return res, np.asarray(res.label.array, dtype=np.uint8), None
    from cochseg3d.pipeline import fitted_array

    return res, np.asarray(res.label.array, dtype=np.uint8), fitted_array(res.contacts, res.label, res.case_id)


class _ProgressStream:
    """The child's stderr: progress-bar updates go to the pipe, everything else to the real stderr."""

    def __init__(self, conn, real) -> None:
        self._conn, self._real, self._last = conn, real, None

    def write(self, text: str) -> int:
        for part in re.split(r"[\r\n]", text):
            m = _BAR.search(part)
            if m is None:
                continue
            done = (int(m.group(1)), int(m.group(2)))
            if done != self._last:
                self._last = done
                self._conn.send(("progress", done))
        if not _BAR.search(text) and text.strip("\r\n\x1b[A "):
            self._real.write(text)
        return len(text)

    def flush(self) -> None:
        self._real.flush()

    def isatty(self) -> bool:
        return False


def _child(conn, can: Volume, model, electrode: str | None, fit_array: bool) -> None:
    """The child process: segment and send back ``("done", (result, label, array))`` or ``("error", text)``."""
    sys.stderr = _ProgressStream(conn, sys.stderr)
    try:
        conn.send(("done", run_segment(can, model, electrode=electrode, progress=True, fit_array=fit_array)))
    except Exception as exc:  # the parent shows it as one line
        conn.send(("error", " ".join(str(exc).split()) or type(exc).__name__))
    finally:
        conn.close()


def segment_in_process(can: Volume, model, electrode: str | None, *,
                       fit_array: bool = False) -> Iterator[tuple[int, int] | None]:
    """A generator for napari's worker thread: yields ``(done, total)`` progress (or None while
    waiting, so that the worker can be stopped) and returns :func:`run_segment`'s ``(result, label, array)``.

    Raises:
        SegmentError: the child failed (its message) or died without an answer.
    """
    ctx = mp.get_context("spawn")  # no fork: the parent holds Qt and OpenGL state
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, can, model, electrode, fit_array), daemon=True,
                       name="cochseg3d-segment")
    proc.start()
    send.close()  # the child holds the only writer: recv raises EOFError when it dies
    try:
        while True:
            if not recv.poll(POLL_S):
                yield None
                continue
            try:
                kind, payload = recv.recv()
            except EOFError:
                proc.join(5)
                raise SegmentError(f"the segmentation process stopped without a result (exit code {proc.exitcode})") \
                    from None
            if kind == "progress":
                yield payload
            elif kind == "error":
                raise SegmentError(payload)
            else:
                return payload
    finally:
        recv.close()
        if proc.is_alive():
            proc.terminate()
        proc.join(5)

