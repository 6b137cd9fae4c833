"""PNG masks (the notebook workflow's ``<case>_<slice>.png``) and labelme JSONs, in and out."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cochseg3d.annotation.store import BACKUP_DIR
from cochseg3d.utils import sanitize_case_id
from cochseg3d.volume import atomic_write

log = logging.getLogger(__name__)

ELECTRODE_LABELS = ("electrode",)

_SLICE_NAME = re.compile(r"^(?P<case>.+)_(?P<k>\d+)$")


def slice_png_name(case_id: str, k: int) -> str:
    """``<case>_<slice>.png``, the notebook workflow's mask name."""
    return f"{sanitize_case_id(case_id)}_{int(k)}.png"


def parse_slice_name(path: str | os.PathLike) -> tuple[str, int]:
    """``(case_id, k)`` from ``<case>_<slice>.png`` / ``.json``.

    Raises:
        ValueError: the name does not end in ``_<number>``.
    """
    stem = Path(path).name.rsplit(".", 1)[0]
    m = _SLICE_NAME.match(stem)
    if not m:
        raise ValueError(f"{path}: name is not <case>_<slice>.png (the slice number is missing)")
    return m.group("case"), int(m.group("k"))


def export_pngs(
    label: np.ndarray,
    *,
    slices: Iterable[int],
    out_dir: str | os.PathLike,
    case_id: str,
    image: np.ndarray | None = None,
    image_dir: str | os.PathLike | None = None,
    window_hu: tuple[float, float] = (-1000.0, 3000.0),
) -> list[Path]:
    """Write coronal mask slices as the notebook workflow's PNGs.

    Args:
        label: canonical label stack ``[k, row, col]``.
        slices: coronal indices to export (normally the annotated ones).
        out_dir: folder of the masks ``<case>_<k>.png`` (uint8 0/255, the slice's size, rows superior
            -> inferior, cols right -> left; neither flipped nor transposed).
        case_id: case id in the file names (sanitised).
        image: optional canonical image stack ``[k, row, col]`` (HU) to export alongside.
        image_dir: where the image PNGs go (same names), windowed to ``window_hu``.
        window_hu: ``(low, high)`` HU mapped to 0..255 for the image PNGs.

    Returns:
        The mask paths written. An existing mask that differs is first copied to
        ``out_dir/backups/<time>/`` (it may be someone's hand-made mask).
    """
    from PIL import Image

    out_dir = Path(out_dir)
    written = []
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    for k in sorted({int(s) for s in slices}):
        if not 0 <= k < label.shape[0]:
            raise ValueError(f"slice {k} lies outside the volume's 0..{label.shape[0] - 1} coronal slices")
        mask = np.where(np.asarray(label[k]) > 0, 255, 0).astype(np.uint8)
        p = out_dir / slice_png_name(case_id, k)
        if p.exists():
            try:
                same = np.array_equal(np.asarray(Image.open(p).convert("L")), mask)
            except OSError:
                same = False
            if not same:
                (out_dir / BACKUP_DIR / stamp).mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, out_dir / BACKUP_DIR / stamp / p.name)
        atomic_write(p, lambda tmp, m=mask: Image.fromarray(m, mode="L").save(tmp, format="PNG"))
        written.append(p)
        if image is not None and image_dir is not None:
            lo, hi = window_hu
            g = np.clip((np.asarray(image[k], dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)
            g8 = np.round(g * 255.0).astype(np.uint8)
            atomic_write(Path(image_dir) / p.name,
                         lambda tmp, m=g8: Image.fromarray(m, mode="L").save(tmp, format="PNG"))
    return written


def read_png_mask(path: str | os.PathLike, *, slice_shape: tuple[int, int]) -> np.ndarray:
    """A bool mask from a PNG (grey, RGB or RGBA; > 127 is electrode) of the coronal slice's size."""
    from PIL import Image

    from cochseg3d.utils import read_picture

    path = Path(path)
    with read_picture(path) as im:
        if im.mode in ("RGBA", "LA"):
            im = im.convert("RGBA")
            arr = np.asarray(im)
            g = np.where(arr[..., 3] > 0, arr[..., :3].max(axis=-1), 0)
        else:
            g = np.asarray(im.convert("L"))
    if g.shape != tuple(slice_shape):
        raise ValueError(f"{path}: mask is {g.shape[0]}x{g.shape[1]} pixels (rows x cols), "
                         f"the coronal slice is {slice_shape[0]}x{slice_shape[1]}")
    return g > 127


def read_labelme(
    path: str | os.PathLike, *, slice_shape: tuple[int, int], labels: Sequence[str] = ELECTRODE_LABELS
) -> np.ndarray:
    """Rasterise a labelme JSON's electrode shapes (polygon, circle, rectangle, ...) to a bool mask.

    labelme points are ``(x, y)`` = ``(col, row)`` pixels; rasterised with PIL as labelme itself does,
    so masks match what labelme exports.
    """
    from PIL import Image, ImageDraw

    from cochseg3d.utils import not_regular_reason

    path = Path(path)
    kind = not_regular_reason(path)
    if kind is not None:
        raise ValueError(f"{path}: {kind}")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise ValueError(f"{path}: not a labelme file (no 'shapes' list)")
    try:
        h, w = (int(doc.get("imageHeight") or slice_shape[0]), int(doc.get("imageWidth") or slice_shape[1]))
    except (TypeError, ValueError):
        raise ValueError(f"{path}: imageHeight/imageWidth are not whole numbers") from None
    if (h, w) != tuple(slice_shape):
        raise ValueError(f"{path}: labelme image is {h}x{w} pixels (rows x cols), "
                         f"the coronal slice is {slice_shape[0]}x{slice_shape[1]}")
    wanted = {s.lower() for s in labels}
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    n = 0
    for i, shape in enumerate(doc["shapes"]):
        if not isinstance(shape, dict):
            raise ValueError(f"{path}: shapes[{i}] is not an object")
        if str(shape.get("label", "")).strip().lower() not in wanted:
            continue
        try:
            xy = [(float(p[0]), float(p[1])) for p in shape.get("points") or []]
        except (TypeError, ValueError, IndexError, KeyError):
            raise ValueError(f"{path}: shapes[{i}] 'points' must be [x, y] number pairs") from None
        if not all(math.isfinite(v) for pt in xy for v in pt):
            raise ValueError(f"{path}: shapes[{i}] 'points' are not finite numbers")
        kind = shape.get("shape_type") or "polygon"
        if kind == "circle" and len(xy) >= 2:
            (cx, cy), (px, py) = xy[:2]
            d = math.hypot(cx - px, cy - py)
            draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
        elif kind == "rectangle" and len(xy) >= 2:
            (x0, y0), (x1, y1) = xy[:2]
            draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
        elif kind in ("line", "linestrip") and len(xy) >= 2:
            draw.line(xy=xy, fill=1, width=1)
        elif kind == "point" and xy:
            (cx, cy) = xy[0]
            draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], outline=1, fill=1)
        elif len(xy) >= 3:
            draw.polygon(xy=xy, outline=1, fill=1)
        else:
            log.warning("%s: skipped a %s shape with %d points", path, kind, len(xy))
            continue
        n += 1
    if n == 0:
        log.warning("%s: no shape labelled %s", path, "/".join(sorted(wanted)))
    return np.asarray(img) > 0


def read_slice_masks(
    paths: Iterable[str | os.PathLike],
    *,
    shape: Sequence[int],
    case_id: str | None = None,
) -> dict[int, np.ndarray]:
    """Read PNG masks and labelme JSONs named ``<case>_<slice>.*`` into ``{k: bool mask}``.

    Args:
        paths: files and/or folders (folders are searched for ``*.png`` and ``*.json``).
        shape: canonical volume shape ``(K, rows, cols)``; each mask must be ``rows x cols``.
        case_id: if given, only files of this case are read (others are skipped).

    Raises:
        ValueError: a mask's size differs from the slice, its slice number lies outside the volume,
            or two files give the same slice.
    """
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in (".png", ".json"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    want = sanitize_case_id(case_id) if case_id else None
    out: dict[int, np.ndarray] = {}
    origin: dict[int, Path] = {}
    plane = (int(shape[1]), int(shape[2]))
    for f in files:
        cid, k = parse_slice_name(f)
        if want is not None and sanitize_case_id(cid) != want:
            log.info("skipped %s (case %s, not %s)", f, cid, want)
            continue
        if not 0 <= k < int(shape[0]):
            raise ValueError(f"{f}: slice {k} lies outside the volume's 0..{int(shape[0]) - 1} coronal slices")
        if k in out:
            raise ValueError(f"{f}: slice {k} is also given by {origin[k]}")
        mask = read_labelme(f, slice_shape=plane) if f.suffix.lower() == ".json" else read_png_mask(f, slice_shape=plane)
        out[k], origin[k] = mask, f
    return out
