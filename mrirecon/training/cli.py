"""LightningCLI for ``mrirecon fit|validate|test|predict``."""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, LRSchedulerTypeTuple
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from mrirecon.baselines.run import CSTVSettings
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
        # Read by `mrirecon baseline`; declared here so one config file serves training and baselines.
        parser.add_class_arguments(CSTVSettings, "cs_tv", fail_untyped=False)
        parser.add_argument(
            "--output_dir",
            type=Optional[str],
            default=None,
            help="test: where metrics.csv and summary.json go; predict: where reconstructions go "
            "(default: the run's log folder, <log_dir>/reconstructions for predict)",
        )

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would overwrite the model section with the checkpoint's hyperparameters,
        # silently dropping what the config and command line say (--model.method_name, a
        # different net). The config is what runs; a checkpoint that does not fit it is an error.
        pass

    def _check_ckpt(self) -> Optional[str]:
        ckpt = self.config[self.subcommand].get("ckpt_path")
        if ckpt and ckpt not in ("best", "last", "hpc", "registry"):
            if not Path(ckpt).is_file():
                raise UserError(f"{ckpt}: no such checkpoint file")
            # torch.save writes a zip archive; anything else (a config, a truncated copy) would
            # fail deep inside torch.load with an unrelated error.
            if not zipfile.is_zipfile(ckpt):
                raise UserError(f"{ckpt}: not a checkpoint file (not the zip archive torch.save writes)")
        return ckpt

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # The Trainer is built from the config alone: what it rejects (an accelerator this
        # machine lacks or whose package is not installed, contradictory limits) is a config mistake.
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ImportError) as err:
            raise UserError(f"trainer: {_one_line(err)}") from None

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


# Lines of jsonargparse's union reports that say nothing about the user's mistake.
_UNION_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Expected a <class 'NoneType'>",
)


def _one_line(err: BaseException) -> str:
    """jsonargparse's multi-line report as one line: the key, then the nested problem.

    The first line alone is often just ``Parser key "model.loss":``; the reason follows on
    indented lines, among the alternatives of a union (``net`` may be a Module or None).
    """
    lines = [line.strip().lstrip("-").strip() for line in str(err).splitlines()]
    lines = [line for line in lines if line and not line.startswith(_UNION_NOISE)]
    if not lines:
        return type(err).__name__
    text = lines[0]
    for line in lines[1:]:
        text += (" " if text.endswith(":") else "; ") + line
    return text


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
