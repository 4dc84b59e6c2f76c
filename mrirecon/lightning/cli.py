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
import dataclasses
import importlib
import math
import os
import shutil
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Union

import torch
import yaml
from lightning_fabric.utilities.seed import max_seed_value, min_seed_value
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, LRSchedulerTypeTuple, SaveConfigCallback
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from mrirecon.core import atomic
from mrirecon.errors import UserError
from mrirecon import internals
# jsonargparse's and Lightning's message text (mrirecon.internals holds every such match).
from mrirecon.internals import NOISY_WARNINGS as _NOISE
from mrirecon.internals import one_line_jsonargparse_error as _one_line
from mrirecon.evaluation.provenance import checkpoint_record, dataset_record, provenance
from mrirecon.evaluation.results import EvaluationResults, publish_results
from mrirecon.lightning.callbacks import PhaseLines, ReconstructionWriter
from mrirecon.core.checkpoint_files import check_checkpoint_file, optimizer_settings, peek_checkpoint
from mrirecon.lightning.checkpoints import (
    IMPORTED_FROM,
    BestCheckpoint,
    LastCheckpoint,
    SafeCheckpointIO,
    resolve_checkpoint,
    run_folder_of,
    run_version,
)
from mrirecon.lightning.datamodule import ReconDataModule
from mrirecon.lightning.module import ReconModule, describe_network, logged_metric_names
from mrirecon.lightning.tensorboard import HParamsTable, log_test_results
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
# What Lightning's seed_everything accepts (NumPy's legacy generator takes 32-bit seeds).
SEED_RANGE = (min_seed_value, max_seed_value)
# Optimiser entries that choose an implementation, not the optimisation.
_IMPLEMENTATION_KEYS = {"foreach", "fused", "capturable", "differentiable", "initial_lr"}


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


@dataclass
class EvaluationRequest:
    """What a caller adds to a ``test`` or ``predict`` run beside its config (``mrirecon
    baseline`` and ``report`` through :mod:`mrirecon.api`): nothing of it is a config value.

    Args:
        details: more entries for ``summary.json`` (the command, the method, CS-TV's settings).
        reconstructions_dir: ``test`` also writes its reconstructions here (submission format).
        show: print the tables.
    """

    details: dict[str, Any] = field(default_factory=dict)
    reconstructions_dir: Optional[Path] = None
    show: bool = True


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


class MriReconCLI(internals.LightningCLIHooks, LightningCLI):
    """LightningCLI with Adam (lr 1e-3) as the default optimiser and the checks above.

    After a ``test``, :attr:`results` holds the scored :class:`EvaluationResults`; after a
    ``predict``, :attr:`output_dir` the reconstructions' folder.
    """

    def __init__(self, *args: Any, request: Optional[EvaluationRequest] = None, **kwargs: Any) -> None:
        self.request = request or EvaluationRequest()
        self.results: Optional[EvaluationResults] = None
        self.output_dir: Optional[Path] = None
        super().__init__(*args, **kwargs)

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

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        seed = (self.config[subcommand] if subcommand else self.config).get("seed_everything")
        if not isinstance(seed, bool) and seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
            # Lightning would raise from seed_everything with a traceback.
            raise UserError(f"seed_everything: must be true, false or an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}, got {seed}")

    def keep_config_over_checkpoint(self) -> None:
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
        self._optimizer_settings: dict[str, Any] = {}
        self._scheduler_monitor: Optional[str] = None
        try:
            optimizer = _build(section.get("optimizer"), [torch.nn.Parameter(torch.zeros(1))])
            scheduler = _build(section["lr_scheduler"], optimizer) if optimizer is not None and section.get("lr_scheduler") else None
        except (ValueError, TypeError) as err:
            key = "lr_scheduler" if "optimizer" in locals() and optimizer is not None else "optimizer"
            raise UserError(f"{key}: {_one_line(err)}") from None
        if optimizer is not None:
            self._optimizer_settings = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self._scheduler_monitor = getattr(scheduler, "monitor", None)
            if not self._scheduler_monitor:
                # Lightning finds this only when fit starts, as a traceback.
                raise UserError("lr_scheduler: ReduceLROnPlateau needs the metric it watches: use "
                                "class_path pytorch_lightning.cli.ReduceLROnPlateau with init_args.monitor, e.g. val/loss")

    def instantiate_classes(self) -> None:
        self._check_optimizer()
        try:
            super().instantiate_classes()
        except ValueError as err:
            # Network constructors name the argument ("chans: must be a positive integer").
            raise UserError(f"model.net.init_args.{_one_line(err)}") from None

    def _initialized(self, key: str, default: Any = None) -> Any:
        """An instantiated config entry of the running subcommand (or of the whole config)."""
        return self.config_init.get(str(self.subcommand), self.config_init).get(key, default)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._initialized("trainer", default={})
        kwargs["plugins"] = [*(_as_list(config.get("plugins"))), SafeCheckpointIO()]
        self.phase_lines = PhaseLines()
        callbacks = [*(_as_list(config.get("callbacks"))), self.phase_lines]
        if self.subcommand == "fit":
            callbacks.append(HParamsTable(self._resolved_config()))
            if config.get("enable_checkpointing") is not False:
                callbacks += self._checkpoint_callbacks(self._initialized("checkpoint"))
        elif not any(isinstance(c, Checkpoint) for c in callbacks):
            # Nothing is saved outside fit, but Lightning would add its default ModelCheckpoint
            # (dirpath ./checkpoints), restore the checkpoint's callback state into it and warn
            # that "the dirpath has changed".
            kwargs["enable_checkpointing"] = False
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
        config = self._section().as_dict()
        if config.get("output_dir"):  # a staged output records where it will be
            config["output_dir"] = str(atomic.final_path(config["output_dir"]))
        return config

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

    def _check_fit_settings(self) -> None:
        """Settings that Lightning accepts and then trains nothing with, or saves nothing by."""
        trainer = self.trainer
        if trainer.max_epochs == 0 or trainer.max_steps == 0:
            key = "max_epochs" if trainer.max_epochs == 0 else "max_steps"
            raise UserError(f"trainer.{key}: 0 trains nothing and saves no checkpoint; use at least 1")
        if trainer.check_val_every_n_epoch is not None and trainer.check_val_every_n_epoch < 1:
            raise UserError(f"trainer.check_val_every_n_epoch: {trainer.check_val_every_n_epoch}; use a positive number "
                            "of epochs, or null to validate by val_check_interval alone")
        self._check_resume_has_work()
        names = logged_metric_names([float(acc) for _, acc in self.datamodule.masks.pairs])
        if not getattr(self.model, "needs_targets", True):
            self.datamodule.targets_required = False
            if not self.datamodule.validation_has_targets():
                # Self-supervised on a val split without targets: its held-out k-space loss alone.
                names = ["train/loss", "val/loss"]
        settings = self._initialized("checkpoint")
        monitored = [("lr_scheduler.init_args.monitor", self._scheduler_monitor)]
        if self._initialized("trainer", default={}).get("enable_checkpointing") is not False and settings.save_top_k:
            monitored.append(("checkpoint.monitor", settings.monitor))
        for key, name in monitored:
            if name is not None and name not in names:
                raise UserError(f"{key}: {name!r} is not a metric fit logs (it would never be found); choose one of "
                                f"{', '.join(names)}")

    def _check_resume_has_work(self) -> None:
        """A resumed fit whose checkpoint is already at ``max_epochs``/``max_steps`` would train
        nothing and exit as if it had (or, below the checkpoint's epoch, fail inside Lightning)."""
        ckpt = self._section().get("ckpt_path")
        if not ckpt:
            return
        saved = peek_checkpoint(ckpt)
        epochs, step = internals.epochs_trained(saved), int(saved.get("global_step", 0))
        trainer = self.trainer
        limits = [("max_epochs", trainer.max_epochs, epochs), ("max_steps", trainer.max_steps, step)]
        for key, limit, reached in limits:
            if limit is not None and limit != -1 and reached is not None and reached >= limit:
                raise UserError(f"{ckpt}: trained {epochs} epochs ({step} steps) already; trainer.{key} {limit} would "
                                f"train nothing: set it above {reached} to train on (test or predict use the checkpoint as it is)")

    def _check_resume_keeps_optimizer(self) -> None:
        """A resumed fit continues the checkpoint's optimiser state (lr included), whatever the
        config says; a config that says otherwise would be saved as the run's config untrue."""
        ckpt = self._section().get("ckpt_path")
        saved_groups = optimizer_settings(ckpt) if ckpt else []
        if not saved_groups or not self._optimizer_settings:
            return
        saved, configured = saved_groups[0], self._optimizer_settings
        own_config = f"resume with the run's own optimizer settings ({run_folder_of(Path(ckpt)) / 'config.yaml'})"
        if set(saved) - _IMPLEMENTATION_KEYS != set(configured) - _IMPLEMENTATION_KEYS:
            raise UserError(f"{ckpt}: holds the state of another optimiser than the config's "
                            f"{self._section()['optimizer']['class_path']}; {own_config}")
        for key, value in configured.items():
            if key in _IMPLEMENTATION_KEYS:
                continue
            before = saved.get("initial_lr", saved["lr"]) if key == "lr" else saved[key]
            if not _same_setting(before, value):
                raise UserError(f"{ckpt}: its optimiser has {key}={before!r}, the config sets optimizer.init_args.{key}="
                                f"{value!r}, but a resumed fit continues the checkpoint's optimiser; {own_config}")

    def _check_resume_keeps_data(self) -> None:
        """A resumed fit continues the run's training problem: the same masks, targets, batches
        and subsets (the data order and masks resume where they stopped). A config that changes
        them would train a run whose config.yaml and curves describe two problems as one; where
        the data lie, how many workers read them and what test evaluates may change."""
        ckpt = self._section().get("ckpt_path")
        saved = (peek_checkpoint(ckpt).get("datamodule_hyper_parameters") or {}) if ckpt else {}
        if not saved:
            return
        configured = self.datamodule.hparams
        own_config = f"resume with the run's own data settings ({run_folder_of(Path(ckpt)) / 'config.yaml'})"
        for key in _RESUMED_DATA_SETTINGS:
            if key in saved and not _same_setting(saved[key], configured.get(key)):
                raise UserError(f"{ckpt}: was trained with data.{key}={saved[key]!r}, the config sets data.{key}="
                                f"{configured.get(key)!r}; a resumed fit continues the run's training; {own_config}, "
                                "or train a new run")

    def _lock_run(self) -> None:
        """Two fits in one run folder (a resume while the run still trains, two resumes at once)
        would both write into it: the fit holds a lock on its run folder from here to its end."""
        self._run_lock: Optional[atomic.FolderLock] = None
        if self.trainer.global_rank != 0 or int(os.environ.get("LOCAL_RANK", 0)) != 0:
            return  # the launching process holds it for the whole run
        if self.run_dir is not None and run_version(self.run_dir) is not None and self.run_dir.is_dir():
            folder = self.run_dir  # resumed
        elif self.trainer.logger and self.trainer.log_dir is not None:
            folder = Path(self.trainer.log_dir)  # a new run, created here to be locked
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"{folder}: cannot write ({atomic.describe_os_error(err)})") from None
        else:
            return
        self._run_lock = atomic.FolderLock(folder, "another fit is training this run now; wait for it to end")

    def _release_run_lock(self) -> None:
        lock = getattr(self, "_run_lock", None)
        if lock is not None:
            lock.release()

    def before_fit(self) -> None:
        self._check_network_matches_checkpoint()
        self._check_fit_settings()
        self._check_resume_keeps_optimizer()
        self._check_resume_keeps_data()
        log_dir = self.trainer.log_dir
        self._new_run: Optional[Path] = None
        # The highest folder this run creates, removed again if it fails before its first step;
        # only once it holds the run's lock (a fit that lost the race for it removes nothing).
        created = atomic.first_missing_folder(log_dir) if log_dir is not None and self.trainer.logger else None
        self._lock_run()
        self._new_run = created

    def after_fit(self) -> None:
        self._release_run_lock()
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

    def _output_folder(self, folder: Path) -> Path:
        """Where to write the content of ``folder``: a staging folder that is swapped in whole
        when the command has succeeded (:meth:`_publish_output`), so a test or predict that fails
        half-way (a full disk, a damaged volume, Ctrl-C) leaves the previous output as it was and
        no new folder with only some of its files; ``folder`` itself when it lies inside a
        staging folder already (a baseline's or a report's, which is swapped in whole)."""
        if atomic.is_staged(folder):
            if self.trainer.is_global_zero:
                self._created_output = atomic.first_missing_folder(folder)
            return atomic.check_writable_folder(folder)
        self._staging = atomic.staged_folder(folder)
        return self._staging.__enter__()

    def _publish_output(self) -> None:
        """Swaps the staged output in (the lead, once every process has written its part)."""
        staging, self._staging = getattr(self, "_staging", None), None
        if staging is not None:
            self.output_dir = atomic.final_path(self.output_dir)
            staging.__exit__(None, None, None)
        # Whoever reads the outputs next (a report, any process of this run) finds them whole.
        self.trainer.strategy.barrier("mrirecon: outputs written")

    def _discard_output(self) -> None:
        staging, self._staging = getattr(self, "_staging", None), None
        if staging is not None:
            failed = RuntimeError(f"mrirecon {self.subcommand} failed")
            staging.__exit__(type(failed), failed, None)
        atomic.remove_empty_folders(getattr(self, "_created_output", None))

    def _require_checkpoint(self) -> None:
        """A trained network needs its checkpoint; a parameter-free method (zero-filled, CS-TV:
        ``mrirecon baseline``) runs without one."""
        if not self._section().get("ckpt_path"):
            if not any(True for _ in self.model.net.parameters()):
                return
            raise UserError(f"{self.subcommand} needs a trained model: pass --ckpt_path path/to/checkpoint.ckpt (or last)")
        self._check_network_matches_checkpoint()

    def before_validate(self) -> None:
        self._require_checkpoint()

    def _apply_adaptation(self) -> None:
        self.model.adapt_when_evaluating(self._initialized("adapt"))

    def _adaptation_record(self) -> dict[str, Any]:
        """What summary.json says of scan-specific adaptation (and the line printed)."""
        adapted = self.model.adapted
        if adapted is None:
            return {}
        per_slice = adapted.seconds / max(adapted.slices, 1)
        if self.trainer.is_global_zero and self.request.show:
            print(f"adaptation: {adapted.seconds:.1f} s for {adapted.slices} slices ({per_slice:.2f} s a slice), "
                  f"{self._initialized('adapt').steps} steps at most, {sum(adapted.steps_taken) / max(len(adapted.steps_taken), 1):.1f} kept on average")
        return {"adaptation": {**dataclasses.asdict(self._initialized("adapt")), "seconds": adapted.seconds,
                               "slices": adapted.slices, "seconds_per_slice": per_slice,
                               "steps_kept": adapted.steps_taken}}

    def before_test(self) -> None:
        self._require_checkpoint()
        self._apply_adaptation()
        self.output_dir = self._output_folder(self._evaluation_output("test"))
        if self.request.reconstructions_dir is not None:
            self.trainer.callbacks.append(ReconstructionWriter(self.request.reconstructions_dir))

    def after_test(self) -> None:
        """Writes and prints the test's results (rank 0), and adds them to the checkpoint's run."""
        self._publish_test_results()
        self._publish_output()

    def _publish_test_results(self) -> None:
        results = self.model.test_results
        if results is None or not self.trainer.is_global_zero:
            self.results = results
            return
        ckpt = self._section().get("ckpt_path")
        saved = peek_checkpoint(ckpt) if ckpt else {}
        step = int(saved.get("global_step", 0))
        dm = self.datamodule
        volumes = dm.evaluation_volumes()
        details = {"command": "test", **self.request.details, **self._adaptation_record()}
        checkpoint = checkpoint_record(Path(ckpt), step, saved.get(IMPORTED_FROM)) if ckpt else None
        record = provenance(self._resolved_config(), checkpoint,
                            dataset_record(dm.data_path, dm.split_folder(dm.test_split), [v.path for v in volumes]))
        meta = {"split": dm.test_split, "checkpoint": ckpt, **details, "provenance": record}
        self.results = publish_results(results, self.output_dir, meta, show=self.request.show)
        if ckpt and any(run_folder_of(Path(ckpt)).glob("events.out.tfevents.*")):
            # test's numbers also go into the checkpoint's own TensorBoard run, at its step.
            log_test_results(run_folder_of(Path(ckpt)), step, dm.test_split, results.summary())

    def before_predict(self) -> None:
        self._require_checkpoint()
        self._apply_adaptation()
        self.output_dir = out = self._output_folder(self._evaluation_output("reconstructions"))
        self.trainer.callbacks.append(ReconstructionWriter(out))
        # The writer has them; keeping every prediction in memory too would not fit a large split.
        self.config_init["predict"]["return_predictions"] = False
        if self.trainer.is_global_zero and self.request.show:
            print(f"writing reconstructions to {atomic.final_path(out)}")

    def after_predict(self) -> None:
        self._adaptation_record()  # the time it took, on the terminal
        self._publish_output()

    def on_subcommand_failure(self, subcommand: str) -> None:
        """A fit that fails before its first step leaves no run folder behind; a test or predict
        that fails leaves its output folder as it was."""
        self._release_run_lock()
        self._discard_output()
        new_run = getattr(self, "_new_run", None)
        if subcommand == "fit" and new_run is not None and self.trainer.global_step == 0 and self.trainer.is_global_zero:
            shutil.rmtree(new_run, ignore_errors=True)


def _build(spec: Any, first_argument: Any) -> Any:
    """An optimiser or scheduler from its ``class_path``/``init_args`` config entry (None if unset)."""
    if not spec:
        return None
    module, name = str(spec["class_path"]).rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    return cls(first_argument, **dict(spec.get("init_args") or {}))


# The data settings that define what a run trains on; see _check_resume_keeps_data.
_RESUMED_DATA_SETTINGS = ("challenge", "mask_type", "accelerations", "center_fractions", "calibration_radius",
                          "partial_fourier", "crop_size", "batch_size",
                          "sample_rate", "volume_sample_rate", "val_volume_sample_rate", "repetitions", "seed")


def _same_setting(a: Any, b: Any) -> bool:
    """Optimiser settings as a checkpoint stores them (tuples may come back as lists)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_setting(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    if torch.is_tensor(a) or torch.is_tensor(b):
        return _same_setting(a.tolist() if torch.is_tensor(a) else a, b.tolist() if torch.is_tensor(b) else b)
    return a == b


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


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


ConfigArgs = Union[list[str], Mapping[str, Any]]


def build_cli(argv: ConfigArgs, run: bool = True, request: Optional[EvaluationRequest] = None) -> MriReconCLI:
    """Parses a config with the one config parser; runs the subcommand when ``run``.

    Args:
        argv: command-line arguments (``["test", "--config", ...]``), or the same as a nested
            dict (``{"subcommand": "test", "test": {"model": ..., "ckpt_path": ...}}``, or the
            config alone with ``run=False``): what :mod:`mrirecon.api` passes.
        run: run the subcommand.
        request: what a ``test``/``predict`` run records and writes besides its config.

    Raises:
        UserError: for config and checkpoint mistakes, as one line.
    """
    if isinstance(argv, Mapping):
        argv = dict(argv)
        subcommand = argv.get("subcommand") if run else None
    else:
        subcommand = argv[0] if run and argv and not argv[0].startswith("-") else None
    _check_config_files(argv)
    try:
        with lightning_quietly():
            # We always pass the arguments (a subcommand's, not sys.argv), which LightningCLI
            # warns about when sys.argv is not empty.
            warnings.filterwarnings("ignore", message=internals.CLI_ARGS_WARNING)
            return MriReconCLI(
                ReconModule,
                ReconDataModule,
                args=argv,
                run=run,
                request=request,
                # Only a fit needs the optimiser built on the model's parameters (zero-filled and
                # CS-TV have none); its config is checked for every command (_check_optimizer).
                auto_configure_optimizers=subcommand == "fit",
                trainer_defaults=TRAINER_DEFAULTS,
                save_config_callback=FitConfigSaver,
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"exit_on_error": False},
            )
    except argparse.ArgumentError as err:
        raise UserError(f"config: {_one_line(err)}") from None
    except RuntimeError as err:
        if internals.is_state_dict_mismatch(err):
            raise UserError(_state_dict_mismatch(err, argv)) from None
        raise


def _state_dict_mismatch(err: RuntimeError, argv: ConfigArgs) -> str:
    detail = internals.state_dict_mismatch_detail(err)
    if isinstance(argv, dict):
        ckpt = next((v.get("ckpt_path") for v in argv.values() if isinstance(v, dict) and v.get("ckpt_path")), None)
    else:
        ckpt = next((a.split("=", 1)[1] for a in argv if a.startswith("--ckpt_path=")), None)
        if ckpt is None and "--ckpt_path" in argv:
            ckpt = argv[argv.index("--ckpt_path") + 1]
    return f"{ckpt}: checkpoint does not match the model in the config ({detail})"


def _check_config_files(argv: ConfigArgs) -> None:
    """An empty config file, or one that is not a mapping of sections, named in one line
    (jsonargparse says only "Unexpected config")."""
    if isinstance(argv, Mapping):
        return
    argv = [str(a) for a in argv]
    for i, arg in enumerate(argv):
        path = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else arg.split("=", 1)[1] if arg.startswith("--config=") else None
        if path is None:
            continue
        try:
            values = yaml.safe_load(Path(path).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # the parser names a missing or unreadable file, and a YAML mistake with its line
        sections = "a YAML mapping of sections (trainer:, model:, data:, ...)"
        if values is None:
            raise UserError(f"{path}: the config is empty; a config is {sections}, as configs/demo.yaml")
        if not isinstance(values, dict):
            raise UserError(f"{path}: a config is {sections}, got a {type(values).__name__}")


class _ConfigReader(MriReconCLI):
    """Parses and validates a config without building its objects (see :func:`read_config`)."""

    def instantiate_classes(self) -> None:
        pass


def read_config(argv: ConfigArgs) -> dict[str, Any]:
    """The resolved config of ``--config FILE`` and dotted overrides (or of a config as nested
    data), as plain nested data, parsed exactly as ``mrirecon fit`` parses it (defaults filled
    in), nothing built.

    Raises:
        UserError: an unknown key or a bad value, as one line.
    """
    _check_config_files(argv)
    try:
        with lightning_quietly():
            warnings.filterwarnings("ignore", message=internals.CLI_ARGS_WARNING)
            cli = _ConfigReader(ReconModule, ReconDataModule, args=dict(argv) if isinstance(argv, Mapping) else argv, run=False, trainer_defaults=TRAINER_DEFAULTS,
                                save_config_callback=None, parser_kwargs={"exit_on_error": False})
    except argparse.ArgumentError as err:
        raise UserError(f"config: {_one_line(err)}") from None
    values = cli.config.as_dict()
    values.pop("config", None)  # the file it came from, not a setting
    return values


def run_lightning_cli(argv: list[str]) -> None:
    """Runs ``mrirecon fit|validate|test|predict ...``."""
    build_cli(argv, run=True)
