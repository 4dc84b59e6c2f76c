"""LightningCLI for ``mrirecon fit|validate|test|predict``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional

import torch
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, LRSchedulerTypeTuple

from mrirecon.data.datamodule import ReconDataModule
from mrirecon.errors import UserError
from mrirecon.evaluation.writer import ReconstructionWriter
from mrirecon.training.module import ReconModule

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "default", "default_hp_metric": False},
    },
}


class MriReconCLI(LightningCLI):
    """LightningCLI with Adam (lr 1e-3) as the default optimiser and checks on checkpoints."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_optimizer_args((torch.optim.Optimizer,))
        parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
        parser.set_defaults({"optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 1e-3}}})
        parser.add_argument(
            "--output_dir",
            type=Optional[str],
            default=None,
            help="test: where metrics.csv and summary.json go; predict: where reconstructions go "
            "(default: the run's log folder, <log_dir>/reconstructions for predict)",
        )

    def _check_ckpt(self) -> Optional[str]:
        ckpt = self.config[self.subcommand].get("ckpt_path")
        if ckpt and ckpt not in ("best", "last", "hpc", "registry") and not Path(ckpt).is_file():
            raise UserError(f"{ckpt}: no such checkpoint file")
        return ckpt

    def before_fit(self) -> None:
        self._check_ckpt()

    def before_validate(self) -> None:
        self._check_ckpt()

    def before_test(self) -> None:
        if not self._check_ckpt():
            raise UserError("test needs a trained model: pass --ckpt_path path/to/checkpoint.ckpt")
        self.model.output_dir = self.config.test.get("output_dir")

    def before_predict(self) -> None:
        if not self._check_ckpt():
            raise UserError("predict needs a trained model: pass --ckpt_path path/to/checkpoint.ckpt")
        out = self.config.predict.get("output_dir") or str(Path(self.trainer.log_dir or ".") / "reconstructions")
        dm = self.datamodule
        dm.setup("predict")
        num_slices = {v.path.name: v.num_slices for v in dm.volumes(dm.test_split)}
        self.trainer.callbacks.append(ReconstructionWriter(out, per_acceleration=not dm.use_file_masks, num_slices=num_slices))
        print(f"writing reconstructions to {out}")


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    # jsonargparse lists every alternative of a union; the first line names the key and problem.
    return text.splitlines()[0] if text else type(err).__name__


def run_lightning_cli(argv: list[str]) -> None:
    """Run LightningCLI, turning config and checkpoint mistakes into one-line UserErrors."""
    try:
        MriReconCLI(
            ReconModule,
            ReconDataModule,
            # LightningCLI warns when given args that equal sys.argv; it reads sys.argv itself then.
            args=None if argv == sys.argv[1:] else argv,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},
        )
    except argparse.ArgumentError as err:
        raise UserError(f"config: {_one_line(err)}") from None
    except RuntimeError as err:
        if "Error(s) in loading state_dict" in str(err):
            missing = re.search(r'Missing key\(s\) in state_dict: "([^"]+)"', str(err))
            unexpected = re.search(r'Unexpected key\(s\) in state_dict: "([^"]+)"', str(err))
            shape = re.search(r"size mismatch for ([\w.]+)", str(err))
            detail = (
                f"size mismatch for {shape.group(1)}" if shape
                else f"missing {missing.group(1)}" if missing
                else f"unexpected {unexpected.group(1)}" if unexpected
                else "parameters differ"
            )
            ckpt = next((a.split("=", 1)[1] for a in argv if a.startswith("--ckpt_path=")), None)
            if ckpt is None and "--ckpt_path" in argv:
                ckpt = argv[argv.index("--ckpt_path") + 1]
            raise UserError(f"{ckpt}: checkpoint does not match the model in the config ({detail})") from None
        raise
