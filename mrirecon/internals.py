"""Every use of a library's internals, in one place.

mrirecon needs a few things that Lightning, jsonargparse, torch and TensorBoard have no public
API for: private attributes and methods, and the text of their messages. Each entry below says
which public API is missing; ``tests/test_internals.py`` builds the real objects and provokes the
real messages of the installed versions, and fails naming this module when one changes.
``pyproject.toml`` bounds pytorch-lightning and jsonargparse to the minor versions it checked.

This module imports no library: it works on the objects it is given (a Trainer, a
SummaryWriter, an exception) and holds the patterns as constants and small functions, so the
light commands that use it stay Lightning-free.
"""

from __future__ import annotations

import re
from typing import Any, Optional

# --- Lightning: the Trainer's loops ------------------------------------------------------------


def batches_that_stepped(trainer: Any) -> int:
    """The step Lightning logs ``self.log`` metrics at now (the optimiser steps counted before
    this batch's increment), so that what we log ourselves lines up with its scalars.

    Missing public API: no Trainer property gives the logger connector's step
    (``Trainer.global_step`` is incremented at the optimiser step, before the epoch's val/*
    scalars are logged). Uses ``trainer.fit_loop.epoch_loop._batches_that_stepped``.
    """
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def batches_done_in_epoch(trainer: Any) -> int:
    """How many training batches of the current epoch the loop has finished (restored on resume).

    Missing public API: the loops and their progress trackers are not documented API. Uses
    ``trainer.fit_loop.epoch_loop.batch_progress.current.processed``.
    """
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def validates_by_time(trainer: Any) -> bool:
    """Whether ``val_check_interval`` was given as a time (validations every N seconds).

    Missing public API: ``Trainer.val_check_interval`` does not say so; Lightning keeps the
    parsed interval in ``trainer._val_check_time_interval`` (None when validations count batches).
    """
    return getattr(trainer, "_val_check_time_interval", None) is not None


def epochs_trained(checkpoint: dict[str, Any]) -> Optional[int]:
    """The training epochs a checkpoint's fit loop counts as done (an epoch that ``max_steps`` or
    a stop cut short counts); None for a checkpoint without loop state.

    A resumed fit with ``max_epochs`` at or below it trains nothing (Lightning's fit loop is
    done at once, or raises when ``max_epochs`` is below the restored epoch). Missing public API:
    the checkpoint's ``loops`` entry is the loops' undocumented state; this reads
    ``loops.fit_loop.epoch_progress.current.processed``, what ``FitLoop.done`` compares with
    ``max_epochs``.
    """
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        return None


# Relied on without a private name (mrirecon.lightning.datamodule.ResumableDataLoader): Lightning
# saves and restores a training DataLoader that has ``state_dict``/``load_state_dict`` (its private
# ``_Stateful`` protocol) in the checkpoint's fit-loop state. Missing public API: no documented
# hook for a DataLoader's own state. tests/test_internals.py checks it too.


# --- Lightning: overrides of private hooks ----------------------------------------------------


class ModelCheckpointHooks:
    """Mixed in before ``ModelCheckpoint``: ``can_rank(monitor_candidates)`` decides whether a
    top-k checkpoint is saved at all.

    Missing public API: ModelCheckpoint has no hook between "time to save" and "rank by the
    monitor" (it warns when the monitored metric is missing); its ``_save_topk_checkpoint`` is it.
    """

    def can_rank(self, monitor_candidates: dict[str, Any]) -> bool:
        return True

    def _save_topk_checkpoint(self, trainer: Any, monitor_candidates: dict[str, Any]) -> None:
        if self.can_rank(monitor_candidates):
            super()._save_topk_checkpoint(trainer, monitor_candidates)  # type: ignore[misc]


class LightningCLIHooks:
    """Mixed in before ``LightningCLI``: two hooks it lacks, on its private steps.

    * ``keep_config_over_checkpoint()`` replaces ``_parse_ckpt_path``, which would overwrite the
      config's model section with a checkpoint's hyperparameters. Missing public API: no switch
      to keep the config (``LightningCLI(..., load_from_checkpoint_support=False)`` only turns
      off the instantiators).
    * ``on_subcommand_failure(subcommand)`` runs when a subcommand raises, before the error goes
      on. Missing public API: ``before_<subcommand>``/``after_<subcommand>`` hooks have no
      failure counterpart; ``_run_subcommand`` runs them.
    """

    def keep_config_over_checkpoint(self) -> None:
        pass

    def on_subcommand_failure(self, subcommand: str) -> None:
        pass

    def _parse_ckpt_path(self) -> None:
        self.keep_config_over_checkpoint()

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)  # type: ignore[misc]
        except BaseException:
            self.on_subcommand_failure(subcommand)
            raise


# --- TensorBoard -----------------------------------------------------------------------------


def tensorboard_file_writer(experiment: Any) -> Optional[Any]:
    """The ``FileWriter`` of a ``torch.utils.tensorboard.SummaryWriter`` (None for another
    experiment), to write raw summaries (the HParams plugin's records) into its own run.

    Missing public API: ``SummaryWriter.add_summary`` does not exist and ``add_hparams`` writes
    into a new sub-run; ``SummaryWriter._get_file_writer()`` is the way to the run's event file.
    """
    if experiment is None or not hasattr(experiment, "_get_file_writer"):
        return None
    return experiment._get_file_writer()


# --- torch: an exception raised in a DataLoader worker -----------------------------------------

# torch re-raises a worker's exception in the main process as ``type(msg)`` where ``msg`` holds
# the worker's whole formatted traceback ("Caught UserError in DataLoader worker process 0.\n
# Original Traceback ..."); its last line is ``mrirecon.errors.UserError: <the message>``.
# Missing public API: the original exception (or its message) is not kept.
WORKER_TRACEBACK = re.compile(r"^Caught UserError in .*?Original Traceback", re.DOTALL)
LAST_USER_ERROR = re.compile(r"UserError: (.*)\s*$")


def user_error_from_worker(message: str) -> Optional[str]:
    """The original message of a UserError re-raised from a DataLoader worker (None otherwise)."""
    if not WORKER_TRACEBACK.match(message):
        return None
    found = LAST_USER_ERROR.search(message.rstrip())
    return found.group(1).strip() if found else None


# --- torch: load_state_dict's error ----------------------------------------------------------

# Missing public API: ``load_state_dict(strict=True)`` raises a RuntimeError with text only
# (``strict=False`` returns missing and unexpected keys but raises on sizes); Lightning calls it.
STATE_DICT_ERROR = "Error(s) in loading state_dict"
STATE_DICT_MISSING = re.compile(r'Missing key\(s\) in state_dict: "([^"]+)"')
STATE_DICT_UNEXPECTED = re.compile(r'Unexpected key\(s\) in state_dict: "([^"]+)"')
STATE_DICT_SIZE = re.compile(r"size mismatch for ([\w.]+)")


def is_state_dict_mismatch(err: BaseException) -> bool:
    return isinstance(err, RuntimeError) and STATE_DICT_ERROR in str(err)


def state_dict_mismatch_detail(err: BaseException) -> str:
    """The first problem of a load_state_dict error: a size mismatch, a missing or unexpected key."""
    text = str(err)
    shape, missing, unexpected = (p.search(text) for p in (STATE_DICT_SIZE, STATE_DICT_MISSING, STATE_DICT_UNEXPECTED))
    return (
        f"size mismatch for {shape.group(1)}" if shape
        else f"missing {missing.group(1)}" if missing
        else f"unexpected {unexpected.group(1)}" if unexpected
        else "parameters differ"
    )


# --- torch.distributed: a peer process died ----------------------------------------------------

# Missing public API: a collective whose peer died raises a plain RuntimeError (gloo) or
# DistBackendError with backend text; only the text says the peer is gone.
PEER_FAILED_MARKERS = ("Connection closed by peer", "Connection reset by peer", "NCCL communicator was aborted")


def is_peer_failure(err: BaseException) -> bool:
    return any(marker in str(err) for marker in PEER_FAILED_MARKERS)


# --- jsonargparse: its error reports ------------------------------------------------------------

# Missing public API: jsonargparse's ArgumentError carries only its multi-line message (no key,
# no reason); these lines of its union reports say nothing about the user's mistake.
JSONARGPARSE_UNION_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Expected a <class 'NoneType'>",
)


def one_line_jsonargparse_error(err: BaseException) -> str:
    """jsonargparse's multi-line report as one line: the key, then the nested problem.

    The first line alone is often just ``Parser key "model.loss":``; the reason follows on
    indented lines, among the alternatives of a union (``net`` may be a Module or None).
    """
    lines = [line.strip().lstrip("-").strip() for line in str(err).splitlines()]
    lines = [line for line in lines if line and not line.startswith(JSONARGPARSE_UNION_NOISE)]
    if not lines:
        return type(err).__name__
    text = lines[0]
    for line in lines[1:]:
        text += (" " if text.endswith(":") else "; ") + line
    return text


# --- Lightning's warnings ---------------------------------------------------------------------

# Missing public API: Lightning's warnings have no categories or ids of their own to filter by,
# only their text. Messages of Lightning and its dependencies that say nothing to our users
# (mrirecon.lightning.cli.quiet_lightning filters them; tips for paid services are logged at
# INFO, and Lightning's loggers go to WARNING).
NOISY_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's use of a torch internal
    r".*will be overridden by `MriReconCLI.configure_optimizers`",  # the fallback is for use without the CLI
    r"You are using a custom batch sampler",  # ours returns every index, padding aside
    r"Checkpoint directory .* exists and is not empty",  # a resumed run continues in its folder
    r"The '\w+_dataloader' does not have many workers",  # num_workers is the user's choice
    r"Be aware that when using `ckpt_path`, callbacks used to create",  # test/predict need no training callbacks
)
# LightningCLI warns when given ``args`` while sys.argv is not empty; we always pass them.
CLI_ARGS_WARNING = "LightningCLI's args parameter"
