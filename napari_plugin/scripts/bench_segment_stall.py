"""Time the dock's Segment action on a clinical-size phantom and the longest stall of napari's event loop.

    nice -n 19 xvfb-run -a .venv/bin/python napari_plugin/scripts/bench_segment_stall.py [--preset clinical]

A QTimer asks to tick every 10 ms; the largest gap between two ticks is the longest time the UI could
not answer. Gaps are reported for the whole action and for its two parts: the worker thread's run
(network, contacts, QC) and the main thread's handing the result to the Labels and Points layers;
and, apart, for opening the image (when the panel makes those layers, empty).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


class Ticks:
    """A QTimer asking to tick every ``ms``: the times (ms) it got to, on one clock."""

    def __init__(self, ms: int) -> None:
        from qtpy.QtCore import QElapsedTimer, QTimer

        self.clock, self.times = QElapsedTimer(), []
        self.timer = QTimer()
        self.timer.setInterval(ms)
        self.timer.timeout.connect(lambda: self.times.append(self.now()))

    def now(self) -> float:
        return self.clock.nsecsElapsed() / 1e6

    def start(self) -> None:
        self.times.clear()
        self.clock.start()
        self.timer.start()

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:])]

    def max_gap(self, lo: float, hi: float) -> float:
        ts = [t for t in self.times if lo <= t <= hi]
        return max((b - a for a, b in zip(ts, ts[1:])), default=0.0)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--preset", default="clinical", help="phantom preset (clinical: 200^3 at 0.2 mm)")
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--tick-ms", type=int, default=10)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--no-prepare", action="store_true",
                    help="the peer: result layers made when the result comes, not ahead at image open")
    return ap


def _dock(args: argparse.Namespace):
    """A viewer with the dock, set to segment with ``--model`` (the peer makes no layers ahead)."""
    import napari

    from napari_cochseg3d._widget import AnnotationWidget

    viewer = napari.Viewer(show=True)
    widget = AnnotationWidget(viewer, store=Path(tempfile.mkdtemp(prefix="bench_store_")), autosave_s=0)
    viewer.window.add_dock_widget(widget, name="Electrode annotation", area="right")
    widget.segment_panel.use_model(args.model)
    if args.no_prepare:
        widget.segment_panel.prepare = lambda image: None
    return viewer, widget.segment_panel


def _open(viewer, path: Path, ticks: Ticks) -> dict:
    """Open the image and let the window settle (the panel makes its result layers then): its stalls."""
    import napari

    from napari_cochseg3d.launch import PLUGIN

    ticks.start()
    viewer.open(str(path), plugin=PLUGIN)
    opened_ms = ticks.now()
    for _ in range(50):
        napari.qt.get_qapp().processEvents()
        time.sleep(0.01)
    ticks.timer.stop()
    return {"open_ms": round(opened_ms, 1), "max_gap_after_open_ms": round(max(ticks.gaps(), default=0.0), 1),
            "result_layers_ready": all(n in viewer.layers for n in ("segmentation", "contacts"))}


def _segment(panel, ticks: Ticks) -> dict:
    """Press Segment and wait for the layers: when the main thread's part started and ended, and the total."""
    from qtpy.QtCore import QEventLoop, QTimer

    marks: dict[str, float] = {}
    show = panel.show_layers

    def timed_show(*a, **kw):
        marks["show_start"] = ticks.now()
        show(*a, **kw)
        marks["show_end"] = ticks.now()

    panel.show_layers = timed_show
    loop = QEventLoop()
    ticks.start()
    ticks.times.append(0.0)
    assert panel.run(), panel.status.text()
    check = QTimer()
    check.timeout.connect(lambda: None if panel.busy else loop.quit())
    check.start(5)
    loop.exec_()
    marks["total"] = ticks.now()
    ticks.timer.stop()
    if panel.result is None:
        raise SystemExit(f"segmentation failed: {panel.status.text()}")
    return marks


def _segment_numbers(panel, ticks: Ticks, marks: dict[str, float]) -> dict:
    gaps = sorted(ticks.gaps())
    total = marks["total"]
    worker_end = marks.get("show_start", total)
    # the stall that contains the layer filling: from the last tick before it to the first after
    before = max([t for t in ticks.times if t <= worker_end], default=0.0)
    after = min([t for t in ticks.times if t >= marks.get("show_end", total)], default=total)
    return {
        "segment_s": round(total / 1000, 2), "pipeline_s": panel.result.info.get("seconds"),
        "contacts": len(panel.result.contacts.lps_mm), "voxels": panel.result.info.get("voxels"),
        "ticks": len(ticks.times), "max_gap_ms": round(gaps[-1], 1),
        "p99_gap_ms": round(gaps[int(0.99 * (len(gaps) - 1))], 1), "median_gap_ms": round(gaps[len(gaps) // 2], 1),
        "max_gap_worker_ms": round(ticks.max_gap(0.0, worker_end), 1),
        "add_layers_ms": round(marks.get("show_end", 0) - marks.get("show_start", 0), 1),
        "stall_around_add_layers_ms": round(after - before, 1),
    }


def _switch_to_3d_ms(panel) -> float:
    """The 3D toggle on the segmented volume: the stall of the first 3D draw."""
    import napari

    t0 = time.perf_counter()
    panel.view3d_check.setChecked(True)
    napari.qt.get_qapp().processEvents()
    return round((time.perf_counter() - t0) * 1000, 1)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from cochseg3d.phantom import generate_patient
    from cochseg3d.volume import write_image

    case = generate_patient(args.seed, preset=args.preset)
    path = write_image(case.image, Path(tempfile.mkdtemp(prefix="bench_segment_")) / f"{case.case_id}.nii.gz")
    viewer, panel = _dock(args)
    ticks = Ticks(args.tick_ms)
    opening = _open(viewer, path, ticks)
    marks = _segment(panel, ticks)
    out = {"shape": list(case.image.array.shape), "spacing_mm": list(case.image.spacing_mm),
           "result_layers": "on the Segment click" if args.no_prepare else "made at image open",
           "torch_threads": torch.get_num_threads(), **_segment_numbers(panel, ticks, marks), **opening,
           "switch_to_3d_ms": _switch_to_3d_ms(panel)}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
