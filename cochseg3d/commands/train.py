"""``cochseg3d train``: train the 2D / 2.5D U-Net from a YAML config (torchrun-aware)."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

NAME = "train"
HELP = "train a 2D or 2.5D U-Net on annotated coronal slices from a YAML config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path,
                        help="YAML config file, or the name of a shipped one (unet2d, unet25d, finetune, demo); "
                             "not needed with --resume")
    parser.add_argument("--init", metavar="default|CKPT",
                        help="start from a checkpoint's weights: 'default' (the shipped model), a .pt file or a run "
                             "folder; its network and preprocessing replace the config's")
    parser.add_argument("--out", type=Path, help="run folder to create (default runs/<config>-<time>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=50 (repeatable)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a killed run from its last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from cochseg3d.cli import UserError
    from cochseg3d.training import train
    from cochseg3d.utils import check_output_folder

    if args.resume is None and args.config is None:
        raise UserError("give --config CONFIG.yaml (or --resume RUN_DIR)")
    if args.resume is not None and args.config is not None:
        logging.getLogger("cochseg3d").warning("--resume uses the run's own config.yaml; --config %s is ignored "
                                               "(use --set to change values)", args.config)
    if args.resume is not None and args.init is not None:
        logging.getLogger("cochseg3d").warning("--resume continues from the run's last.pt; --init %s is ignored",
                                               args.init)
    out = args.out
    if out is not None:
        check_output_folder(out)  # before the data is read, not when the first checkpoint is due
    if args.resume is None and out is None:
        out = Path("runs") / f"{args.config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = train(args.config, out_dir=out, resume=args.resume, progress=not args.no_progress,
                    overrides=list(args.overrides), init=args.init)
    if os.environ.get("RANK", "0") == "0":
        print(f"run folder: {run_dir}")
    return 0
