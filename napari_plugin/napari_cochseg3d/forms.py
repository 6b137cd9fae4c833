"""The dock's two recurring form rows: a path field with its "…" button, and a main control with a side one."""

from __future__ import annotations

from typing import Callable

from qtpy.QtWidgets import QHBoxLayout, QLineEdit, QPushButton, QWidget


def side_row(main: QWidget, *side: QWidget) -> QHBoxLayout:
    """``main`` stretched, the ``side`` widgets at their own size after it."""
    row = QHBoxLayout()
    row.addWidget(main, 1)
    for w in side:
        row.addWidget(w)
    return row


def path_row(edit: QLineEdit, pick: Callable[[], None], *, tip: str = "") -> QHBoxLayout:
    """A path field and a narrow "…" button that calls ``pick`` (a file dialog)."""
    btn = QPushButton("…")
    btn.setMaximumWidth(28)
    if tip:
        btn.setToolTip(tip)
    btn.clicked.connect(lambda *_: pick())
    return side_row(edit, btn)
