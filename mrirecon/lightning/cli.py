"""LightningCLI for ``mrirecon fit|validate|test|predict``, and the one config parser.

Every command reads configs through :class:`MriReconCLI`'s parser: the Lightning subcommands,
and (with ``run=False``) ``mrirecon baseline`` and ``mrirecon report``, so dotted overrides such
as ``--data.data_path`` work everywhere.

What it adds to LightningCLI, so that runs can be trusted:

* **Checkpoints.** ``last.ckpt`` is always the latest state, best-by-``val/ssim`` checkpoints
  are kept beside it, saves are atomic and loads verified (:mod:`mrirecon.lightning.checkpoints`).
  ``--ckpt_path last`` / ``best`` mean the newest run's files; ``--weights_only false`` is refused.
* **One run folder per run.** A fit resumed from a checkpoint inside
  ``<save_dir>/<name>/version_N/checkpoints`` continues in ``version_N`` (steps continue,
  TensorBoard drops the events logged after the checkpoint, the best-checkpoint state is kept);
  ``validate``, ``test`` and ``predict`` create no run and write next to their checkpoint; a fit
  that fails before its first step leaves nothing behind.
* **One line per mistake.** Config values, checkpoints and output folders are checked before
  any long work and reported as one ``UserError`` line naming the key or file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, LRSchedulerTypeTuple, SaveConfigCallback
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from mrirecon.core import atomic
from mrirecon.errors import UserError
from mrirecon.evaluation.provenance import checkpoint_record
from mrirecon.lightning.callbacks import PhaseLines, ReconstructionWriter
from mrirecon.core.checkpoint_files import check_checkpoint_file, peek_checkpoint
from mrirecon.lightning.checkpoints import (
    BestCheckpoint,
    LastCheckpoint,
    SafeCheckpointIO,
    resolve_checkpoint,
    run_folder_of,
    run_version,
)
from mrirecon.lightning.datamodule import ReconDataModule
from mrirecon.lightning.module import ReconModule, describe_network
from mrirecon.methods import CONFIG_SECTIONS

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "default", "default_hp_metric": False},
    },
    # Our batch sampler shards the data itself: whole volumes per process for evaluation,
    # distinct masks per process for training (Lightning's DistributedSampler would do neither).
    "use_distributed_sampler": False,
    # One line with the parameter count replaces Lightning's model table (see before_fit).
    "enable_model_summary": False,
}
EVALUATION_COMMANDS = ("validate", "test", "predict")


@dataclass
class CheckpointSettings:
    """The ``checkpoint:`` section: what ``fit`` saves in ``<run>/checkpoints``.

    Args:
        monitor: metric that ranks the best checkpoints.
        mode: ``max`` or ``min`` of ``monitor``.
        save_top_k: best checkpoints kept (``best-epoch=E-step=S.ckpt``).
        every_n_train_steps: also rewrite ``last.ckpt`` every this many steps (None: at the end
            of every validation and epoch, and when training stops); long epochs of the real
            download want it, so a preemption loses little.
    """

    monitor: str = "val/ssim"
    mode: str = "max"
    save_top_k: int = 1
    every_n_train_steps: Optional[int] = None


class FitConfigSaver(SaveConfigCallback):
    """Saves the resolved config into the run folder when fitting only, atomically.

    Evaluation commands write no run of their own, so they must not overwrite the config of the
    run their checkpoint came from.
    """

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if stage != "fit" or self.already_saved:
            return
        log_dir = trainer.log_dir  # on every process: Lightning broadcasts it
        if trainer.is_global_zero and log_dir is not None:
            atomic.write_text(Path(log_dir) / self.config_filename, self.parser.dump(self.config, skip_none=False))
        self.already_saved = True


class MriReconCLI(LightningCLI):
    """LightningCLI with Adam (lr 1e-3) as the default optimiser and the checks above."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_optimizer_args((torch.optim.Optimizer,))
        parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
        parser.set_defaults({"optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 1e-3}}})
        # Sections that methods declare for their settings (cs_tv:); training ignores them.
        for name, settings in CONFIG_SECTIONS.items():
            parser.add_class_arguments(settings, name, fail_untyped=False)
        parser.add_class_arguments(CheckpointSettings, "checkpoint")
        parser.add_argument(
            "--output_dir",
            type=Optional[str],
            default=None,
            help="test: where metrics.csv and summary.json go (default <run>/test/<checkpoint>_<split>); "
            "predict: where reconstructions go (default <run>/reconstructions/<checkpoint>_<split>)",
        )

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would overwrite the model section with the checkpoint's hyperparameters,
        # silently dropping what the config and command line say (--model.method_name, a
        # different net). The config is what runs; a checkpoint that does not fit it is an error.
        pass

    # --- before anything is built --------------------------------------------------------------
    def _section(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def _runs_root(self) -> Path:
        """``<save_dir>/<name>`` of the configured TensorBoard logger (where runs live)."""
        logger = self._section().get("trainer", {}).get("logger")
        init = logger.get("init_args", {}) if isinstance(logger, (dict, argparse.Namespace)) else {}
        return Path(init.get("save_dir", "runs") or "runs") / str(init.get("name", "default") or "")

    def before_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        section = self._section()
        if section.get("weights_only") is False:
            raise UserError(
                "--weights_only false: refused; it would let a checkpoint run code when loaded, and "
                "mrirecon checkpoints hold only tensors and plain data"
            )
        ckpt = section.get("ckpt_path")
        self.run_dir: Optional[Path] = None
        if ckpt:
            ckpt = check_checkpoint_file(resolve_checkpoint(str(ckpt), self._runs_root()))
            section["ckpt_path"] = str(ckpt)
            self.run_dir = run_folder_of(ckpt)
        if self.subcommand == "fit":
            self._continue_run(section)
        else:
            # Evaluation writes next to its checkpoint and opens no TensorBoard run of its own.
            section["trainer"]["logger"] = False

    def _continue_run(self, section: Any) -> None:
        """A fit resumed from ``.../version_N/checkpoints/x.ckpt`` logs into ``version_N`` again."""
        logger = section["trainer"].get("logger")
        if not self.run_dir or run_version(self.run_dir) is None or not logger or logger is True:
            return
        init = logger["init_args"]
        if "save_dir" not in init:
            return
        step = int(peek_checkpoint(section["ckpt_path"]).get("global_step", 0))
        init["save_dir"] = str(self.run_dir.parent.parent)
        init["name"] = self.run_dir.parent.name
        init["version"] = run_version(self.run_dir)
        # TensorBoard discards events logged after the checkpoint by the interrupted run.
        init["purge_step"] = step

    def _check_optimizer(self) -> None:
        """Builds the configured optimiser and scheduler on a dummy parameter, so a bad value
        (``--optimizer.lr -1``) is one line naming the section before anything else is built."""
        section = self._section()
        try:
            optimizer = _build(section.get("optimizer"), [torch.nn.Parameter(torch.zeros(1))])
            if optimizer is not None and section.get("lr_scheduler"):
                _build(section["lr_scheduler"], optimizer)
        except (ValueError, TypeError) as err:
            key = "lr_scheduler" if "optimizer" in locals() and optimizer is not None else "optimizer"
            raise UserError(f"{key}: {_one_line(err)}") from None

    def instantiate_classes(self) -> None:
        self._check_optimizer()
        try:
            super().instantiate_classes()
        except ValueError as err:
            # Network constructors name the argument ("chans: must be a positive integer").
            raise UserError(f"model.net.init_args.{_one_line(err)}") from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        kwargs["plugins"] = [*(_as_list(config.get("plugins"))), SafeCheckpointIO()]
        self.phase_lines = PhaseLines()
        callbacks = [*(_as_list(config.get("callbacks"))), self.phase_lines]
        if self.subcommand == "fit" and config.get("enable_checkpointing") is not False:
            callbacks += self._checkpoint_callbacks(self._get(self.config_init, "checkpoint"))
        kwargs["callbacks"] = callbacks
        # The Trainer is built from the config alone: what it rejects (an accelerator this
        # machine lacks or whose package is not installed, contradictory limits) is a config mistake.
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ImportError, ValueError) as err:
            raise UserError(f"trainer: {_one_line(err)}") from None

    @staticmethod
    def _checkpoint_callbacks(settings: CheckpointSettings) -> list:
        if settings.mode not in ("min", "max"):
            raise UserError(f"checkpoint.mode: must be 'min' or 'max', got {settings.mode!r}")
        if settings.save_top_k < 0:
            raise UserError(f"checkpoint.save_top_k: must be 0 or more, got {settings.save_top_k}")
        # Best first, then last: last.ckpt then records the updated best-checkpoint state.
        best = BestCheckpoint(
            monitor=settings.monitor,
            mode=settings.mode,
            save_top_k=settings.save_top_k,
            filename="best-epoch={epoch}-step={step}",
            auto_insert_metric_name=False,
            save_last=False,
        )
        return [best, LastCheckpoint(settings.every_n_train_steps)]

    # --- per command ---------------------------------------------------------------------------
    def _resolved_config(self) -> dict[str, Any]:
        return self._section().as_dict()

    def _check_network_matches_checkpoint(self) -> None:
        """Refuses a checkpoint whose network was built with other arguments than the config's.

        The weights of a U-Net with ``residual: true`` load into one without (same shapes), and
        would then be scored silently wrong; any constructor argument that differs is one line.
        """
        ckpt = self._section().get("ckpt_path")
        if not ckpt:
            return
        saved = (peek_checkpoint(ckpt).get("hyper_parameters") or {}).get("net")
        if not isinstance(saved, dict):
            return  # checkpoints of mrirecon 0.1 do not describe their network
        built = describe_network(self.model.net)
        if saved.get("class_path") != built["class_path"]:
            raise UserError(f"{ckpt}: holds a {saved.get('class_path')}, the config builds a {built['class_path']}: "
                            f"use the run's own config ({run_folder_of(Path(ckpt)) / 'config.yaml'})")
        saved_args = saved.get("init_args") or {}
        for name, value in built["init_args"].items():
            if name in saved_args and saved_args[name] != value:
                raise UserError(
                    f"{ckpt}: trained with model.net.init_args.{name}={saved_args[name]!r}, the config sets "
                    f"{value!r}: use the run's own config ({run_folder_of(Path(ckpt)) / 'config.yaml'}) or the same value")

    def before_fit(self) -> None:
        self._check_network_matches_checkpoint()
        self.model.hparams_table = hparams_table(self._resolved_config(), self.trainer.world_size)
        log_dir = self.trainer.log_dir
        self._new_run: Optional[Path] = None
        if log_dir is not None and self.trainer.logger and not Path(log_dir).exists():
            # The highest folder this run creates, removed again if it fails before its first step.
            created = Path(os.path.abspath(log_dir))
            while not created.parent.exists():
                created = created.parent
            self._new_run = created

    def after_fit(self) -> None:
        if self.phase_lines.early_stop and self.trainer.is_global_zero:
            print(f"mrirecon: {self.phase_lines.early_stop}", flush=True)  # the last line
        if any(getattr(c, "interrupted", False) for c in self.trainer.callbacks):
            sys.exit(130)

    def _evaluation_output(self, kind: str) -> Path:
        """``--output_dir``, or ``<run>/<kind>/<checkpoint>_<split>`` beside the checkpoint."""
        given = self._section().get("output_dir")
        if given:
            return Path(given)
        ckpt = Path(self._section()["ckpt_path"])
        return run_folder_of(ckpt) / kind / f"{ckpt.stem}_{self.datamodule.test_split}"

    def _require_checkpoint(self) -> None:
        if not self._section().get("ckpt_path"):
            raise UserError(f"{self.subcommand} needs a trained model: pass --ckpt_path path/to/checkpoint.ckpt (or last)")
        self._check_network_matches_checkpoint()

    def before_validate(self) -> None:
        self._require_checkpoint()

    def before_test(self) -> None:
        self._require_checkpoint()
        out = atomic.check_writable_folder(self._evaluation_output("test"))
        ckpt = Path(self._section()["ckpt_path"])
        step = int(peek_checkpoint(ckpt).get("global_step", 0))
        self.model.output_dir = out
        self.model.run_metadata = {"command": "test", "config": self._resolved_config(),
                                   "checkpoint": checkpoint_record(ckpt, step)}
        run = run_folder_of(ckpt)
        if any(run.glob("events.out.tfevents.*")):
            # test's numbers also go into the checkpoint's own TensorBoard run, at its step.
            self.model.checkpoint_run = (run, step)

    def before_predict(self) -> None:
        self._require_checkpoint()
        out = atomic.check_writable_folder(self._evaluation_output("reconstructions"))
        self.trainer.callbacks.append(ReconstructionWriter(out))
        # The writer has them; keeping every prediction in memory too would not fit a large split.
        self.config_init["predict"]["return_predictions"] = False
        if self.trainer.is_global_zero:
            print(f"writing reconstructions to {out}")

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            new_run = getattr(self, "_new_run", None)
            if subcommand == "fit" and new_run is not None and self.trainer.global_step == 0 and self.trainer.is_global_zero:
                shutil.rmtree(new_run, ignore_errors=True)
            raise


def hparams_table(config: dict[str, Any], world_size: int) -> dict[str, Any]:
    """The settings a study compares runs by, flat, for TensorBoard's HParams plugin."""
    model, data, trainer = config.get("model", {}), config.get("data", {}), config.get("trainer", {})
    net = model.get("net") or {}
    optimizer = config.get("optimizer") or {}
    scheduler = config.get("lr_scheduler") or {}
    table: dict[str, Any] = {"net": str(net.get("class_path", "")).rsplit(".", 1)[-1]}
    table.update({f"net.{k}": v for k, v in (net.get("init_args") or {}).items() if isinstance(v, (bool, int, float, str))})
    table.update({
        "loss": model.get("loss"),
        "optimizer": str(optimizer.get("class_path", "")).rsplit(".", 1)[-1],
        **{f"optimizer.{k}": v for k, v in (optimizer.get("init_args") or {}).items() if isinstance(v, (bool, int, float))},
        "lr_scheduler": str(scheduler.get("class_path", "none")).rsplit(".", 1)[-1],
        "batch_size": data.get("batch_size"),
        "effective_batch_size": (data.get("batch_size") or 1) * world_size,
        "challenge": data.get("challenge"),
        "mask_type": data.get("mask_type"),
        "accelerations": data.get("accelerations"),
        "center_fractions": data.get("center_fractions"),
        "seed": config.get("seed_everything"),
        "precision": trainer.get("precision"),
    })
    return {k: v for k, v in table.items() if v is not None}


def _build(spec: Any, first_argument: Any) -> Any:
    """An optimiser or scheduler from its ``class_path``/``init_args`` config entry (None if unset)."""
    if not spec:
        return None
    module, name = str(spec["class_path"]).rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    return cls(first_argument, **dict(spec.get("init_args") or {}))


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


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


# Messages of Lightning and its dependencies that say nothing to our users: tips for paid
# services are logged at INFO (Lightning's loggers go to WARNING), these are warnings.
_NOISE = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's use of a torch internal
    r".*will be overridden by `MriReconCLI.configure_optimizers`",  # the fallback is for use without the CLI
    r"You are using a custom batch sampler",  # ours returns every index, padding aside
    r"Checkpoint directory .* exists and is not empty",  # a resumed run continues in its folder
    r"The '\w+_dataloader' does not have many workers",  # num_workers is the user's choice
    r"Be aware that when using `ckpt_path`, callbacks used to create",  # test/predict need no training callbacks
)


def quiet_lightning() -> None:
    """Our lines, not Lightning's: its INFO chatter and known-irrelevant warnings are dropped."""
    import logging

    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)


@contextmanager
def lightning_quietly() -> Iterator[None]:
    """:func:`quiet_lightning` for a block, the warning filters restored after it (library users'
    own filters are not ours to change). ``baseline`` runs its Trainer calls in one too."""
    with warnings.catch_warnings():
        quiet_lightning()
        yield


def build_cli(argv: list[str], run: bool = True) -> MriReconCLI:
    """Parses ``argv`` with the one config parser; runs the subcommand when ``run``.

    Raises:
        UserError: for config and checkpoint mistakes, as one line.
    """
    try:
        with lightning_quietly():
            # We always pass the arguments (a subcommand's, not sys.argv), which LightningCLI
            # warns about when sys.argv is not empty.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            return MriReconCLI(
                ReconModule,
                ReconDataModule,
                args=argv,
                run=run,
                trainer_defaults=TRAINER_DEFAULTS,
                save_config_callback=FitConfigSaver,
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"exit_on_error": False},
            )
    except argparse.ArgumentError as err:
        raise UserError(f"config: {_one_line(err)}") from None
    except RuntimeError as err:
        if "Error(s) in loading state_dict" in str(err):
            raise UserError(_state_dict_mismatch(err, argv)) from None
        raise


def _state_dict_mismatch(err: RuntimeError, argv: list[str]) -> str:
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
    return f"{ckpt}: checkpoint does not match the model in the config ({detail})"


def run_lightning_cli(argv: list[str]) -> None:
    """Runs ``mrirecon fit|validate|test|predict ...``."""
    build_cli(argv, run=True)
