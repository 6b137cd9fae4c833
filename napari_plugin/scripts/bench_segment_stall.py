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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--preset", default="clinical", help="phantom preset (clinical: 200^3 at 0.2 mm)")
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--tick-ms", type=int, default=10)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--no-prepare", action="store_true",
                    help="the peer: result layers made when the result comes, not ahead at image open")
    args = ap.parse_args(argv)

    import napari
    import torch
    from qtpy.QtCore import QElapsedTimer, QEventLoop, QTimer

    from cochseg3d.phantom import generate_patient
    from cochseg3d.volume import write_image
    from napari_cochseg3d._widget import AnnotationWidget
    from napari_cochseg3d.launch import PLUGIN

    case = generate_patient(args.seed, preset=args.preset)
    tmp = Path(tempfile.mkdtemp(prefix="bench_segment_"))
    path = write_image(case.image, tmp / f"{case.case_id}.nii.gz")
    viewer = napari.Viewer(show=True)
    widget = AnnotationWidget(viewer, store=tmp / "store", autosave_s=0)
    viewer.window.add_dock_widget(widget, name="Electrode annotation", area="right")
    panel = widget.segment_panel
    panel.use_model(args.model)
    if args.no_prepare:
        panel.prepare = lambda image: None

    clock = QElapsedTimer()
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(args.tick_ms)
    timer.timeout.connect(lambda: ticks.append(clock.nsecsElapsed() / 1e6))
    # opening the image (the panel makes its result layers then): its own stalls, measured apart
    clock.start()
    timer.start()
    (image,) = viewer.open(str(path), plugin=PLUGIN)
    opened_ms = clock.nsecsElapsed() / 1e6
    marks: dict[str, float] = {}
    show = panel.show_layers

    def timed_show(*a, **kw):  # when the main thread's part starts and ends
        marks["show_start"] = clock.nsecsElapsed() / 1e6
        show(*a, **kw)
        marks["show_end"] = clock.nsecsElapsed() / 1e6

    panel.show_layers = timed_show
    loop = QEventLoop()
    for _ in range(50):  # let the window settle (and the result layers be made) before measuring
        napari.qt.get_qapp().processEvents()
        time.sleep(0.01)
    open_gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    opening = {"open_ms": round(opened_ms, 1), "max_gap_after_open_ms": round(max(open_gaps, default=0.0), 1),
               "result_layers_ready": all(n in viewer.layers for n in ("segmentation", "contacts"))}
    timer.stop()
    ticks.clear()
    clock.start()
    timer.start()
    ticks.append(0.0)
    assert panel.run(), panel.status.text()
    check = QTimer()
    check.timeout.connect(lambda: None if panel.busy else loop.quit())
    check.start(5)
    loop.exec_()
    total_ms = clock.nsecsElapsed() / 1e6
    timer.stop()
    if panel.result is None:
        raise SystemExit(f"segmentation failed: {panel.status.text()}")

    def max_gap(lo: float, hi: float) -> float:
        ts = [t for t in ticks if lo <= t <= hi]
        return max((b - a for a, b in zip(ts, ts[1:])), default=0.0)

    gaps = sorted(b - a for a, b in zip(ticks, ticks[1:]))
    worker_end = marks.get("show_start", total_ms)
    # the stall that contains the layer adding: from the last tick before it to the first after
    before = max([t for t in ticks if t <= worker_end], default=0.0)
    after = min([t for t in ticks if t >= marks.get("show_end", total_ms)], default=total_ms)
    out = {
        "shape": list(case.image.array.shape), "spacing_mm": list(case.image.spacing_mm),
        "result_layers": "on the Segment click" if args.no_prepare else "made at image open",
        "torch_threads": torch.get_num_threads(), "segment_s": round(total_ms / 1000, 2),
        "pipeline_s": panel.result.info.get("seconds"),
        "contacts": len(panel.result.contacts.lps_mm), "voxels": panel.result.info.get("voxels"),
        "ticks": len(ticks), "max_gap_ms": round(gaps[-1], 1), "p99_gap_ms": round(gaps[int(0.99 * (len(gaps) - 1))], 1),
        "median_gap_ms": round(gaps[len(gaps) // 2], 1),
        "max_gap_worker_ms": round(max_gap(0.0, worker_end), 1),
        "add_layers_ms": round(marks.get("show_end", 0) - marks.get("show_start", 0), 1),
        "stall_around_add_layers_ms": round(after - before, 1),
        **opening,
    }
    # the 3D toggle on the segmented clinical volume: the stall of the first 3D draw
    t0 = time.perf_counter()
    panel.view3d_check.setChecked(True)
    napari.qt.get_qapp().processEvents()
    out["switch_to_3d_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
