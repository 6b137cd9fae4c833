"""The dock's *Fine-tune on my annotations* panel: ``cochseg3d train --init`` in a background process.

Training runs as ``python -m cochseg3d train`` under a :class:`QProcess`, so napari stays responsive
and Cancel can stop it outright. The run folder and the resulting checkpoint go beside the store
(``<store>-finetune-<time>/`` and ``<store>-finetuned-<time>.pt``); the store itself is only read.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from qtpy.QtCore import QProcess, QTimer, Signal
from qtpy.QtWidgets import QApplication, QFormLayout, QGroupBox, QLabel, QProgressBar, QPushButton, QSpinBox

from napari_cochseg3d.forms import side_row

log = logging.getLogger(__name__)

#: the shipped fine-tuning config (``configs/finetune.yaml``)
DEFAULT_CONFIG = "finetune"
#: the training log's line after each epoch: ``epoch 3/8: loss ...``
_EPOCH = re.compile(r"\bepoch (\d+)/(\d+):")
#: seconds Cancel waits after an interrupt before terminating, and again before killing
CANCEL_GRACE_S = 5.0


# --- no Qt below this line up to the panel ------------------------------------------------------
def parse_epoch(line: str) -> tuple[int, int] | None:
    """``(done, total)`` from a training log line, else None."""
    m = _EPOCH.search(line)
    return (int(m.group(1)), int(m.group(2))) if m else None


def error_line(output: str) -> str:
    """The message to show for a failed run: the CLI's one-line error, else the last line printed."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ": error: " in ln:
            return ln.split(": error: ", 1)[1]
    return lines[-1] if lines else "training stopped without a message"


def new_paths(store: Path, stamp: str | None = None) -> tuple[Path, Path]:
    """``(run_dir, checkpoint)`` beside ``store``, neither of which exists yet."""
    store = Path(store).resolve()
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        tag = stamp if n == 1 else f"{stamp}-{n}"
        run = store.parent / f"{store.name}-finetune-{tag}"
        ckpt = store.parent / f"{store.name}-finetuned-{tag}.pt"
        if not run.exists() and not ckpt.exists():
            return run, ckpt
    raise FileExistsError(f"{store.parent}: no free name for a fine-tuning run beside {store.name}")


def keep_checkpoint(run_dir: Path, dest: Path) -> Path:
    """Copy the run's ``best.pt`` to ``dest``; refuses to replace an existing file."""
    src = Path(run_dir) / "best.pt"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: the run finished without a checkpoint")
    try:
        with open(src, "rb") as fin, open(dest, "xb") as fout:  # "x": never overwrite
            shutil.copyfileobj(fin, fout)
    except FileExistsError:
        raise FileExistsError(f"{dest}: exists already; the new model stays in {src}") from None
    except BaseException:
        Path(dest).unlink(missing_ok=True)
        raise
    return Path(dest)


def count_cases(store: Path) -> int:
    from cochseg3d.annotation import find_annotations

    try:
        return len(find_annotations(store))
    except OSError:
        return 0


def train_args(store: Path, run_dir: Path, *, config: str | Path = DEFAULT_CONFIG, init: str | Path | None = None,
               epochs: int | None = None) -> list[str]:
    """Arguments after ``python`` for fine-tuning on ``store`` into ``run_dir``."""
    if Path(config).is_file():  # the process runs in another folder
        config = Path(config).resolve()
    args = ["-m", "cochseg3d", "train", "--config", str(config), "--out", str(run_dir), "--no-progress",
            "--set", f"data.path={store}"]
    if init is not None:
        args += ["--init", str(init)]
    if epochs:
        args += ["--set", f"train.epochs={int(epochs)}"]
    if count_cases(store) == 1:  # one patient cannot also validate: train on it, keep the last epoch
        args += ["--set", "data.split=[1.0, 0.0, 0.0]"]
    return args


# --- the panel -----------------------------------------------------------------------------------
class FinetunePanel(QGroupBox):
    """Fine-tune, Cancel, progress over epochs, and *Segment with it* once a checkpoint is kept.

    Args:
        store: returns the annotation store folder (the dock's store field).
        init: returns what to start from (``"default"`` or a checkpoint); default ``"default"``.
        use_model: called with the new checkpoint when *Segment with it* is pressed.
        config: the training config (a YAML path or a shipped config's name).
        unsaved: returns True while the dock holds edits not yet saved to the store.

    Signals:
        done(object): the kept checkpoint's Path after a successful run, or None after a failure
            or a cancel.
    """

    done = Signal(object)

    def __init__(self, store: Callable[[], Path | str], *, init: Callable[[], str | Path | None] | None = None,
                 use_model: Callable[[Path], None] | None = None, config: str | Path = DEFAULT_CONFIG,
                 unsaved: Callable[[], bool] | None = None) -> None:
        super().__init__("Fine-tune on my annotations")
        self._store = store
        self._init = init or (lambda: "default")
        self._use_model = use_model
        self._unsaved = unsaved
        self.config = config
        self.process: QProcess | None = None
        self.run_dir: Path | None = None
        self.checkpoint: Path | None = None
        self.output = ""
        self.message = ""
        self._cancelled = False
        self._build()
        app = QApplication.instance()
        if app is not None:  # no training process outlives napari
            app.aboutToQuit.connect(self.shutdown)

    def _build(self) -> None:
        f = QFormLayout(self)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(0, 500)
        self.epochs_spin.setSpecialValueText("config")
        self.epochs_spin.setToolTip("passes over the annotated slices (config: as the training config says)")
        f.addRow("Epochs", self.epochs_spin)
        self.start_btn = QPushButton("Fine-tune")
        self.start_btn.setToolTip("train from the model above on the saved annotations of the store")
        self.start_btn.clicked.connect(lambda *_: self.start())
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(lambda *_: self.cancel())
        f.addRow(side_row(self.start_btn, self.cancel_btn))
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("epoch %v/%m")
        f.addRow(self.progress)
        self.resegment_btn = QPushButton("Segment with it")
        self.resegment_btn.setEnabled(False)
        self.resegment_btn.setToolTip("segment the image again with the fine-tuned model")
        self.resegment_btn.clicked.connect(lambda *_: self._resegment())
        f.addRow(self.resegment_btn)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        f.addRow(self.status)

    def _say(self, text: str) -> None:
        self.message = text
        self.status.setText(text)
        log.info(text)

    @property
    def running(self) -> bool:
        return self.process is not None

    # --- start / cancel ------------------------------------------------------------------------
    def start(self) -> bool:
        """Start fine-tuning; False (and a message) when it cannot start."""
        if self.running:
            self._say("fine-tuning is already running")
            return False
        text = str(self._store() or "").strip()
        if not text:
            self._say("choose an annotation store first")
            return False
        store = Path(text).resolve()
        try:
            self.run_dir, self.checkpoint = new_paths(store)
        except OSError as exc:
            self._say(f"error: {exc}")
            return False
        args = train_args(store, self.run_dir, config=self.config, init=self._init(),
                          epochs=self.epochs_spin.value() or None)
        self.output, self._cancelled = "", False
        self.resegment_btn.setEnabled(False)
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.MergedChannels)
        proc.setWorkingDirectory(str(store.parent if store.parent.is_dir() else Path.cwd()))
        proc.readyReadStandardOutput.connect(self._read)
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._failed_to_start)
        self.process = proc
        self.start_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the first epoch reports
        note = " (unsaved edits of the open case are not included: Save first)" if self._unsaved and self._unsaved() else ""
        self._say(f"reading the annotations in {store} …{note}")
        proc.start(sys.executable, args)
        return True

    def cancel(self) -> None:
        """Stop the run: an interrupt first (the CLI exits cleanly), then terminate, then kill."""
        proc = self.process
        if proc is None:
            return
        self._cancelled = True
        self.cancel_btn.setEnabled(False)
        self._say("cancelling …")
        pid = int(proc.processId())
        if os.name == "posix" and pid > 0:
            os.kill(pid, signal.SIGINT)
        else:
            proc.kill()
        ms = int(CANCEL_GRACE_S * 1000)
        QTimer.singleShot(ms, lambda: self.process is proc and proc.terminate())
        QTimer.singleShot(2 * ms, lambda: self.process is proc and proc.kill())

    def shutdown(self) -> None:
        """Kill a run still going (napari quits) and wait for it."""
        if self.process is not None:
            self.process.kill()
            self.process.waitForFinished(5000)

    # --- output ----------------------------------------------------------------------------
    def _read(self) -> None:
        chunk = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        self.output += chunk
        for line in chunk.splitlines():
            ep = parse_epoch(line)
            if ep is not None:
                self.progress.setRange(0, ep[1])
                self.progress.setValue(ep[0])
                self._say(line.split(": ", 1)[-1] if line.startswith("INFO ") else line)

    def _finished(self, code: int, status) -> None:
        self._read()
        self.process.deleteLater()
        self.process = None
        self.start_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        kept = None
        if self._cancelled:
            where = f"; the partial run is in {self.run_dir}" if self.run_dir.exists() else ""
            self._say(f"fine-tuning cancelled{where}")
        elif code != 0 or status != QProcess.NormalExit:
            self._say(f"fine-tuning failed: {error_line(self.output)}")
        else:
            try:
                kept = keep_checkpoint(self.run_dir, self.checkpoint)
            except OSError as exc:
                self._say(f"error: {exc}")
            else:
                self.progress.setValue(self.progress.maximum())
                self._say(f"fine-tuned model saved as {kept} (run folder {self.run_dir.name})")
                self.resegment_btn.setEnabled(self._use_model is not None)
        self.done.emit(kept)

    def _failed_to_start(self, error) -> None:
        if error != QProcess.FailedToStart or self.process is None:
            return  # a crash or a kill ends in _finished
        self._say(f"fine-tuning did not start: {sys.executable}: {self.process.errorString()}")
        self.process.deleteLater()
        self.process = None
        self.start_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.progress.setRange(0, 1)
        self.done.emit(None)

    def _resegment(self) -> None:
        if self._use_model is not None and self.checkpoint is not None and self.checkpoint.is_file():
            self._use_model(self.checkpoint)
