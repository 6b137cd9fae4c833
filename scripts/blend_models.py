#!/usr/bin/env python
"""Blend two checkpoints of one network by weight interpolation (WiSE-FT).

``(1 - alpha) * BASE + alpha * TUNED``, tensor by tensor: a fine-tune from the shipped weights
stays in the same loss basin, and the blend often keeps what each end does well (the base on its
own distribution, the fine-tune on the new one). Writes ``default.pt`` / ``default.json`` into
``--out``, ready for ``train_default_model.py --evaluate-only --weights OUT``.

    .venv/bin/python scripts/blend_models.py cochseg3d/weights/default.pt candidates/union_weighted/model.pt \
        --alpha 0.5 --out build/blend50/weights
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any


def blend_states(base: dict[str, Any], tuned: dict[str, Any], alpha: float) -> dict[str, Any]:
    """Interpolate two state dicts of the same network; non-float tensors are taken from ``base``."""
    if set(base) != set(tuned):
        raise ValueError(f"the checkpoints are of different networks: {sorted(set(base) ^ set(tuned))[:4]} ...")
    out = {}
    for k, a in base.items():
        b = tuned[k]
        if a.shape != b.shape:
            raise ValueError(f"{k}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
        out[k] = (1.0 - alpha) * a + alpha * b if a.is_floating_point() else a.clone()
    return out


def blend_checkpoints(base: Path, tuned: Path, alpha: float) -> dict[str, Any]:
    """The tuned checkpoint with blended weights and a provenance naming both ends."""
    import torch

    a = torch.load(base, map_location="cpu", weights_only=False)
    b = torch.load(tuned, map_location="cpu", weights_only=False)
    if a["model"] != b["model"]:
        diff = {k: (a["model"].get(k), b["model"].get(k)) for k in set(a["model"]) | set(b["model"])
                if a["model"].get(k) != b["model"].get(k)}
        raise ValueError(f"{base} and {tuned} are different architectures: {diff}")
    out = dict(b)
    out["model_state"] = blend_states(a["model_state"], b["model_state"], alpha)
    out["provenance"] = {
        "blend": {"alpha": alpha, "base": str(base), "tuned": str(tuned), "method": "(1-alpha)*base + alpha*tuned"},
        "base": {k: v for k, v in a.get("provenance", {}).items() if k != "evaluation"},
        "tuned": {k: v for k, v in b.get("provenance", {}).items() if k != "evaluation"},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "training_data": "synthetic only: cochseg3d phantom patients (no patient data)",
        "limits": "trained on synthetic phantoms only; not validated on patient scans; research use",
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", type=Path, help="the starting checkpoint (e.g. the shipped default.pt)")
    ap.add_argument("tuned", type=Path, help="a fine-tune of it")
    ap.add_argument("--alpha", type=float, required=True, help="weight of the fine-tune, 0..1")
    ap.add_argument("--out", type=Path, required=True, help="folder for default.pt / default.json")
    args = ap.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        ap.error(f"--alpha {args.alpha}: must lie in [0, 1]")
    from cochseg3d.models import save_checkpoint
    from cochseg3d.volume import atomic_write

    for p in (args.base, args.tuned):
        if not p.is_file():
            ap.error(f"{p}: no such checkpoint")
    dest = args.out / "default.pt"
    if dest.exists():
        ap.error(f"{dest} exists; choose another --out (nothing is overwritten)")
    try:
        ckpt = blend_checkpoints(args.base, args.tuned, args.alpha)
    except (ValueError, KeyError, RuntimeError) as e:  # other networks, or not a cochseg3d checkpoint
        ap.error(str(e))
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dest, ckpt)
    meta = {"file": dest.name, "size_mb": round(dest.stat().st_size / 2**20, 2), "provenance": ckpt["provenance"]}
    atomic_write(args.out / "default.json", lambda t: Path(t).write_text(json.dumps(meta, indent=1)))
    print(f"wrote {dest} (alpha {args.alpha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
