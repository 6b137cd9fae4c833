"""The main job end to end on synthetic phantoms: what ``cochseg3d demo`` runs.

phantom cohort (DICOM) -> inspect + convert -> annotations (auto pre-fill on the metal-bearing
coronal slices, corrected from the phantom truth) -> train -> segment the held-out patients' DICOM
folders -> evaluate against truth -> ``report.md``.

Every stage calls the library functions behind a ``cochseg3d`` verb (``generate_cohort``,
``discover`` / ``load_series``, ``train``, :func:`cochseg3d.segment`, ``evaluate_folders``) and
records the command a user would type for it in the report; it writes its outputs atomically and
leaves a marker in ``OUT/.demo/``; a rerun skips finished stages and an interrupted training run
resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cochseg3d.volume import atomic_write, canonical

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run."""

    patients: int
    test_patients: int
    seed: int
    epochs: int | None  # None: the demo config's own
    orientation: str = "mixed"

    @classmethod
    def make(cls, *, patients: int | None, quick: bool, seed: int, epochs: int | None = None) -> "DemoPlan":
        n = patients or (8 if quick else 16)
        if n < 4:
            raise ValueError(f"--patients must be at least 4 (train, validation and test patients), got {n}")
        test = max(1, round(n * 0.25))
        return cls(patients=n, test_patients=test, seed=seed, epochs=epochs or (16 if quick else None))


def _command(argv: list[str]) -> str:
    return "cochseg3d " + " ".join(shlex.quote(str(a)) for a in argv)


class Demo:
    """One demo run in ``out``; ``run()`` goes through the stages, skipping finished ones."""

    def __init__(self, out: Path, plan: DemoPlan, *, device: str = "auto", progress: bool = True) -> None:
        self.out = Path(out)
        self.plan = plan
        self.device = device
        self.progress = progress
        self.marks = self.out / ".demo"
        self.stages: list[dict[str, Any]] = []

    # --- bookkeeping --------------------------------------------------------------------------
    def _stage(self, name: str, title: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        mark = self.marks / f"{name}.json"
        if mark.exists():
            info = json.loads(mark.read_text())
            info["reused"] = True
            print(f"[{len(self.stages) + 1}] {title}: reused ({mark.parent.name}/{mark.name})", flush=True)
        else:
            print(f"[{len(self.stages) + 1}] {title} ...", flush=True)
            t0 = time.perf_counter()
            info = fn()
            info["seconds"] = round(time.perf_counter() - t0, 2)
            info.setdefault("commands", [])
            self.marks.mkdir(parents=True, exist_ok=True)
            atomic_write(mark, lambda tmp: tmp.write_text(json.dumps(info, indent=1, default=str)))
            print(f"    done in {info['seconds']:.1f} s", flush=True)
        info.update(name=name, title=title)
        self.stages.append(info)
        return info

    @property
    def cohort_dir(self) -> Path:
        return self.out / "phantoms"

    def cohort(self) -> list[dict[str, Any]]:
        return json.loads((self.cohort_dir / "cohort.json").read_text())

    def split(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        cases = self.cohort()
        rng = np.random.default_rng(self.plan.seed)
        order = rng.permutation(len(cases))
        test = sorted(order[: self.plan.test_patients].tolist())
        return [c for i, c in enumerate(cases) if i not in test], [cases[i] for i in test]

    # --- stages -------------------------------------------------------------------------------
    def stage_phantoms(self) -> dict[str, Any]:
        from cochseg3d.phantom import generate_cohort

        generate_cohort(self.cohort_dir, patients=self.plan.patients, seed=self.plan.seed,
                        orientation=self.plan.orientation, preview=True, progress=self.progress)
        cases = self.cohort()
        argv = ["phantom", self.cohort_dir, "--patients", self.plan.patients, "--seed", self.plan.seed,
                "--orientation", self.plan.orientation, "--preview"]
        return {"commands": [_command(argv)], "cases": len(cases),
                "vendors": sorted({c["vendor"] for c in cases}),
                "orientations": sorted({c["orientation"] for c in cases})}

    def stage_ingest(self) -> dict[str, Any]:
        from cochseg3d.commands.convert import sidecar
        from cochseg3d.dicom import discover, load_series
        from cochseg3d.export import write_json
        from cochseg3d.utils import sanitize_case_id
        from cochseg3d.volume import write_image

        first = self.cohort_dir / self.cohort()[0]["case_id"]
        seen = discover(first)
        write_json({"series": [s.summary() for s in seen], "skipped": [s.reason for s in seen.all_skipped]},
                   self.out / "inspect.json")
        # every volume series of the cohort to NIfTI with its de-identified sidecar
        nifti = self.out / "nifti"
        volumes = [s for s in discover(self.cohort_dir, progress=self.progress) if s.is_volume]
        for info in volumes:
            vol, name = load_series(info), sanitize_case_id(info.label)
            write_image(vol, nifti / f"{name}.nii.gz")
            write_json(sidecar(info, vol), nifti / f"{name}.json")
        return {"commands": [_command(["inspect", first, "--json"]), _command(["convert", self.cohort_dir, nifti])],
                "nifti_volumes": len(volumes)}

    def stage_annotate(self) -> dict[str, Any]:
        from cochseg3d.annotation import prefill_canonical, save_annotation
        from cochseg3d.dicom import load_input
        from cochseg3d.metal import auto_threshold_hu, metal_slices
        from cochseg3d.metrics import dice
        from cochseg3d.volume import read_image

        train, _ = self.split()
        store = self.out / "annotations"
        rows = []
        rng = np.random.default_rng(self.plan.seed + 1)
        for case in train:
            image = load_input(self.cohort_dir / case["dicom"])
            can = canonical(image)
            truth = canonical(read_image(self.cohort_dir / case["label"]), is_label=True).array > 0
            threshold = auto_threshold_hu(can)
            # the slices showing the array, as an annotator scrolling the stack would pick them
            show = np.flatnonzero(truth.any(axis=(1, 2))).tolist()
            pre = prefill_canonical(can.array, threshold_hu=threshold, min_size_voxels=4) > 0
            # an annotator reviews the metal-bearing slices and a few without metal
            others = np.setdiff1d(np.arange(can.array.shape[0]), show)
            negatives = rng.choice(others, size=min(len(others), max(2, len(show) // 5)), replace=False)
            annotated = sorted(set(show) | set(negatives.tolist()))
            label = np.zeros(can.array.shape, np.uint8)
            label[annotated] = truth[annotated]  # the user's corrections bring the pre-fill to the truth
            pre_on = np.zeros_like(pre)
            pre_on[show] = pre[show]
            changed = int(np.logical_xor(pre_on[annotated], label[annotated] > 0).sum())
            save_annotation(label, image=image, store=store, annotated_slices=annotated, case_id=case["case_id"],
                            image_path=self.cohort_dir / case["dicom"], threshold_hu=threshold,
                            extra={"corrected_from": "phantom truth (demo)"})
            rows.append({"case_id": case["case_id"], "vendor": case["vendor"], "slices": len(annotated),
                         "metal_slices": len(show), "detected_metal_slices": len(metal_slices(can)),
                         "threshold_hu": round(float(threshold), 1),
                         "prefill_dice": round(dice(pre_on[show], truth[show]), 3),
                         "voxels_corrected": changed})
        first = train[0]
        return {"commands": [_command(["prefill", self.cohort_dir / first["dicom"], "prefill.nii.gz",
                                       "--threshold-hu", "auto"]),
                             _command(["annotate", self.cohort_dir / first["dicom"], "--store", store])],
                "cases": rows}

    def _train_overrides(self) -> list[str]:
        return ["data.source=annotations", f"data.path={self.out / 'annotations'}", "data.split=[0.8,0.2,0.0]",
                f"train.device={self.device}", *([f"train.epochs={self.plan.epochs}"] if self.plan.epochs else [])]

    def stage_train(self) -> dict[str, Any]:
        from cochseg3d.config import PACKAGE_CONFIGS
        from cochseg3d.training import train

        config = PACKAGE_CONFIGS / "demo.yaml"  # shipped in the package: a pip-installed demo has it too
        if not config.exists():
            raise FileNotFoundError(f"{config}: the demo config is missing from the installed package")
        run = self.out / "run"
        overrides = self._train_overrides()
        if (run / "last.pt").exists():
            # an interrupted earlier demo: continue where it stopped
            train(None, resume=run, progress=self.progress)
        else:
            if run.exists():
                shutil.rmtree(run)  # a run killed before its first checkpoint holds nothing to keep
            train(config, out_dir=run, progress=self.progress, overrides=overrides)
        best = run / "best.pt"
        if not best.exists():
            raise RuntimeError(f"{run}: training finished without best.pt")
        argv = ["train", "--config", config, "--out", run, *[a for o in overrides for a in ("--set", o)]]
        return {"commands": [_command(argv)], "checkpoint": str(best)}

    def stage_segment(self) -> dict[str, Any]:
        import cochseg3d
        from cochseg3d.inference import load_model
        from cochseg3d.pipeline import resolve_device

        _, test = self.split()
        out = self.out / "segment"
        checkpoint = self.out / "run" / "best.pt"
        device = resolve_device(self.device)
        model = load_model(checkpoint, device=device)[0]  # once for all held-out patients
        commands = []
        for case in test:
            cochseg3d.segment(self.cohort_dir / case["dicom"], out, model=model, device=device,
                              electrode=case["model"], png=True)
            commands.append(_command(["segment", self.cohort_dir / case["dicom"], "-o", out, "--model", checkpoint,
                                      "--device", self.device, "--electrode", case["model"]]))
        return {"commands": commands, "cases": [c["case_id"] for c in test]}

    def stage_evaluate(self) -> dict[str, Any]:
        from cochseg3d.export import write_json
        from cochseg3d.metrics import COLUMNS, evaluate_folders, summarize

        # the held-out patients' truth only (evaluate reads no path outside its truth folder)
        _, test = self.split()
        truth = self.out / "test_truth"
        for c in test:
            src = (self.cohort_dir / c["label"]).parent
            shutil.copytree(src, truth / c["case_id"] / "truth", dirs_exist_ok=True)
        write_json([{"case_id": c["case_id"], "vendor": c["vendor"], "model": c["model"],
                     "label": f"{c['case_id']}/truth/{Path(c['label']).name}",
                     "contacts": f"{c['case_id']}/truth/{Path(c['contacts']).name}"} for c in test],
                   truth / "cohort.json")
        rows = evaluate_folders(self.out / "segment", truth, progress=self.progress)
        summary = summarize(rows)

        def clean(table: list[dict[str, Any]]) -> list[dict[str, Any]]:  # JSON has no inf / nan
            return [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in r.items()}
                    for r in table]

        write_json({"pred_dir": str(self.out / "segment"), "truth_dir": str(truth), "gate_mm": 1.0,
                    "cases": clean(rows), "summary": clean(summary)}, self.out / "evaluation.json")
        _write_csv(rows + summary, [*COLUMNS, "n", "failed", "error"], self.out / "evaluation.csv")
        argv = ["evaluate", self.out / "segment", truth, "-o", self.out / "evaluation"]
        return {"commands": [_command(argv)], "summary": clean(summary), "cases": clean(rows)}

    def stage_report(self) -> dict[str, Any]:
        from cochseg3d.demo_report import write_report

        _, test = self.split()
        path = write_report(self.out, plan=dict(self.plan.__dict__), stages=self.stages, test_cases=test,
                            cohort_dir=self.cohort_dir)
        return {"report": str(path)}

    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        self._stage("phantoms", "generate a phantom cohort (DICOM folders + truth)", self.stage_phantoms)
        self._stage("ingest", "inspect and convert the DICOM folders", self.stage_ingest)
        self._stage("annotate", "annotate: auto pre-fill of the metal, corrected from truth", self.stage_annotate)
        self._stage("train", "train the demo U-Net on the annotated slices", self.stage_train)
        self._stage("segment", "segment the held-out patients' DICOM folders", self.stage_segment)
        self._stage("evaluate", "evaluate against the phantom truth", self.stage_evaluate)
        (self.marks / "report.json").unlink(missing_ok=True)  # the report always reflects this run
        self._stage("report", "write the report", self.stage_report)
        return self.out / "report.md"


def _write_csv(rows: list[dict[str, Any]], columns: list[str], path: Path) -> Path:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, lambda tmp: tmp.write_text(buf.getvalue()))


def run_demo(out: str | Path = "demo_out", *, patients: int | None = None, quick: bool = False, seed: int = 0,
             device: str = "auto", progress: bool = True, epochs: int | None = None) -> Path:
    """Run the whole demo in ``out``; returns the report's path.

    Args:
        out: output folder (reused: finished stages are skipped).
        patients: cohort size (default 16, or 8 with ``quick``); a quarter are held out for testing.
        quick: a smaller cohort and fewer epochs (about 2 minutes on 2 CPU cores).
        seed: the cohort's and the split's seed.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        epochs: training epochs (default from ``quick``).
    """
    plan = DemoPlan.make(patients=patients, quick=quick, seed=seed, epochs=epochs)
    out = Path(out)
    saved = out / ".demo" / "plan.json"
    if saved.exists() and json.loads(saved.read_text()) != plan.__dict__:
        raise ValueError(f"{out} holds a demo run with other settings ({saved}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(saved, lambda tmp: tmp.write_text(json.dumps(plan.__dict__)))
    return Demo(out, plan, device=device, progress=progress).run()
