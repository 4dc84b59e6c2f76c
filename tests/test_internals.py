"""The library internals that mrirecon/internals.py relies on, checked on the installed versions.

Each test builds the real object (a Trainer after one step, a ModelCheckpoint, a
TensorBoardLogger's writer, LightningCLI) or provokes the real message (jsonargparse's parse
error, torch's load_state_dict error, an error in a DataLoader worker) and fails naming the
library version that changed it. pyproject.toml bounds the versions these tests checked.
"""

from __future__ import annotations

import ast
import errno
import functools
import inspect
import mmap
import os
import re
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset

from mrirecon import errors, internals

PL = f"pytorch_lightning {version('pytorch-lightning')}"
JSONARGPARSE = f"jsonargparse {version('jsonargparse')}"
TORCH = f"torch {torch.__version__}"


def changed(library: str, what: str) -> str:
    return f"{library} changed {what}; update mrirecon/internals.py"


class Tiny(pl.LightningModule):
    """One parameter, four samples, batch size 1."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, int]] = []

    def training_step(self, batch, batch_idx):
        return ((self.w - batch) ** 2).mean()

    def on_train_batch_start(self, batch, batch_idx):
        self.seen.append((internals.batches_that_stepped(self.trainer), internals.batches_done_in_epoch(self.trainer)))

    def train_dataloader(self):
        return DataLoader(torch.ones(4, 1), batch_size=1)

    def validation_step(self, batch, batch_idx):
        self.log("val/x", batch.mean())

    def val_dataloader(self):
        return DataLoader(torch.ones(2, 1), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def tiny_trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    options = dict(logger=False, enable_checkpointing=False, max_steps=1, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                   default_root_dir=tmp_path, accelerator="cpu")
    return pl.Trainer(**(options | kwargs))


# --- Lightning: the loops -----------------------------------------------------------------------


def test_the_loops_count_optimiser_steps_and_batches(tmp_path):
    trainer = tiny_trainer(tmp_path, max_steps=2)
    epoch_loop = trainer.fit_loop.epoch_loop
    assert hasattr(epoch_loop, "_batches_that_stepped"), changed(PL, "fit_loop.epoch_loop._batches_that_stepped")
    module = Tiny()
    trainer.fit(module)
    try:
        assert internals.batches_that_stepped(trainer) == 2
        assert internals.batches_done_in_epoch(trainer) == 2  # of the epoch's 4
        assert module.seen == [(0, 0), (1, 1)]
    except (AttributeError, AssertionError) as err:
        pytest.fail(changed(PL, f"the epoch loop's step and batch counters ({err!r})"))


def test_a_training_dataloader_with_a_state_is_saved_in_the_checkpoint(tmp_path):
    class Stateful(DataLoader):
        def state_dict(self):
            return {"batches_done": 7}

        def load_state_dict(self, state):
            pass

    class Module(Tiny):
        def train_dataloader(self):
            return Stateful(torch.ones(4, 1), batch_size=1)

    trainer = tiny_trainer(tmp_path)
    trainer.fit(Module())
    saved = trainer.fit_loop.on_save_checkpoint().get("combined_loader")
    assert saved == [{"batches_done": 7}], changed(PL, "how a DataLoader's state_dict is saved (its _Stateful protocol)")


def test_a_checkpoint_says_how_many_epochs_its_fit_finished(tmp_path):
    # 4 batches an epoch: one checkpoint after 2 whole epochs, one of a fit that max_steps ended
    # in the middle of the third (which the loop counts as an epoch done).
    for max_steps, finished in [(8, 2), (10, 3)]:
        trainer = tiny_trainer(tmp_path, max_steps=max_steps)
        trainer.fit(Tiny())
        trainer.save_checkpoint(tmp_path / "c.ckpt")
        saved = torch.load(tmp_path / "c.ckpt", weights_only=True)
        assert internals.epochs_trained(saved) == finished, changed(PL, "the fit loop's epoch progress in checkpoints")
        # and the fit loop stops at once when max_epochs asks for no more epochs than that
        resumed = tiny_trainer(tmp_path, max_steps=-1, max_epochs=finished)
        module = Tiny()
        resumed.fit(module, ckpt_path=tmp_path / "c.ckpt")
        assert module.seen == [], changed(PL, "when a resumed fit loop is done")
    assert internals.epochs_trained({"epoch": 3}) is None


def test_a_time_interval_for_validations_is_kept_on_the_trainer(tmp_path):
    assert hasattr(tiny_trainer(tmp_path), "_val_check_time_interval"), changed(PL, "Trainer._val_check_time_interval")
    assert not internals.validates_by_time(tiny_trainer(tmp_path)), changed(PL, "Trainer._val_check_time_interval")
    by_time = tiny_trainer(tmp_path, val_check_interval=timedelta(seconds=30))
    assert internals.validates_by_time(by_time), changed(PL, "Trainer._val_check_time_interval")


# --- Lightning: the private hooks we override ------------------------------------------------------


def test_modelcheckpoint_saves_top_k_through_its_private_hook(tmp_path):
    signature = inspect.signature(getattr(ModelCheckpoint, "_save_topk_checkpoint", None) or (lambda: None))
    assert list(signature.parameters) == ["self", "trainer", "monitor_candidates"], changed(
        PL, "ModelCheckpoint._save_topk_checkpoint(trainer, monitor_candidates)")

    class Probe(internals.ModelCheckpointHooks, ModelCheckpoint):
        asked: list[dict] = []

        def can_rank(self, monitor_candidates):
            self.asked.append(dict(monitor_candidates))
            return False

    probe = Probe(dirpath=tmp_path / "ckpt", monitor="val/x", save_last=False)
    tiny_trainer(tmp_path, enable_checkpointing=True, callbacks=[probe], limit_train_batches=1, limit_val_batches=1).fit(Tiny())
    assert any("val/x" in candidates for candidates in probe.asked), changed(PL, "when ModelCheckpoint calls _save_topk_checkpoint")
    assert not list((tmp_path / "ckpt").glob("*.ckpt")), changed(PL, "ModelCheckpoint._save_topk_checkpoint")


def test_lightningcli_calls_the_private_methods_the_hooks_mixin_overrides(tmp_path):
    from mrirecon.internals import LightningCLIHooks

    def cli_changed(what: str) -> str:
        return f"{PL} changed {what}; update mrirecon/internals.py (LightningCLIHooks overrides it)"

    source = inspect.getsource(LightningCLI.__init__)
    for call in ("self._parse_ckpt_path()", "self._run_subcommand("):
        assert call in source, cli_changed(f"LightningCLI.__init__, which no longer calls {call}")
    for name, parameters in (("_parse_ckpt_path", ["self"]), ("_run_subcommand", ["self", "subcommand"])):
        method = getattr(LightningCLI, name, None)
        assert method is not None and list(inspect.signature(method).parameters) == parameters, cli_changed(
            f"LightningCLI.{name}")

    class Failing(Tiny):
        def training_step(self, batch, batch_idx):
            raise ValueError("boom")

    calls = []

    class CLI(LightningCLIHooks, LightningCLI):
        def keep_config_over_checkpoint(self):
            calls.append("_parse_ckpt_path")

        def on_subcommand_failure(self, subcommand):
            calls.append(f"failed {subcommand}")

    args = ["fit", "--trainer.logger=false", "--trainer.enable_checkpointing=false", "--trainer.max_steps=1",
            "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path}"]
    with pytest.raises(ValueError, match="boom"):
        CLI(Failing, args=args, save_config_callback=None, auto_configure_optimizers=False)
    assert calls == ["_parse_ckpt_path", "failed fit"], cli_changed("when LightningCLI calls _parse_ckpt_path/_run_subcommand")


# --- TensorBoard ----------------------------------------------------------------------------------


def test_the_tensorboard_writer_has_a_file_writer_for_raw_summaries(tmp_path):
    from torch.utils.tensorboard.summary import hparams

    logger = TensorBoardLogger(tmp_path, name="run")
    writer = internals.tensorboard_file_writer(logger.experiment)
    assert writer is not None and hasattr(writer, "add_summary"), changed(
        TORCH, "SummaryWriter._get_file_writer() (or its FileWriter.add_summary)")
    for summary in hparams({"lr": 0.1}, {"val/ssim": 0.0}):
        writer.add_summary(summary)
    logger.experiment.flush()
    assert list(Path(logger.log_dir).glob("events.out.tfevents.*"))
    assert internals.tensorboard_file_writer(None) is None


# --- messages ----------------------------------------------------------------------------------------


def test_jsonargparse_errors_read_as_one_line(monkeypatch):
    from mrirecon.lightning import cli

    raw = []
    monkeypatch.setattr(cli, "_one_line", lambda err: raw.append(str(err)) or internals.one_line_jsonargparse_error(err))
    with pytest.raises(errors.UserError) as plain:
        cli.build_cli(["fit", "--model.loss", "bogus"])
    assert str(plain.value).startswith('config: Parser key "model.loss": ') and "bogus" in str(plain.value), changed(
        JSONARGPARSE, f"its error text: {raw[-1]!r}")
    net = "{'class_path': 'mrirecon.models.unet.Unet', 'init_args': {'chans': 'x'}}"
    with pytest.raises(errors.UserError) as union:
        cli.build_cli(["fit", "--model.net", net])
    lines = [line.strip().lstrip("-").strip() for line in raw[-1].splitlines()]
    for noise in internals.JSONARGPARSE_UNION_NOISE:
        assert any(line.startswith(noise) for line in lines), changed(JSONARGPARSE, f"its union report ({noise!r}): {raw[-1]!r}")
    text = str(union.value)
    assert 'Parser key "chans"' in text and "Got value: x" in text, changed(JSONARGPARSE, f"its union report: {raw[-1]!r}")
    assert not any(noise in text for noise in internals.JSONARGPARSE_UNION_NOISE), text


@pytest.mark.parametrize(
    "weights, detail",
    [
        ({"weight": torch.zeros(2, 1), "bias": torch.zeros(1)}, "size mismatch for weight"),
        ({"weight": torch.zeros(1, 1)}, "missing bias"),
        ({"weight": torch.zeros(1, 1), "bias": torch.zeros(1), "extra": torch.zeros(1)}, "unexpected extra"),
    ],
)
def test_load_state_dict_errors_name_the_first_problem(weights, detail):
    with pytest.raises(RuntimeError) as err:
        torch.nn.Linear(1, 1).load_state_dict(weights)
    assert internals.is_state_dict_mismatch(err.value), changed(TORCH, f"load_state_dict's error: {err.value}")
    assert internals.state_dict_mismatch_detail(err.value) == detail, changed(TORCH, f"load_state_dict's error: {err.value}")


class UserError(Exception):
    """Named as mrirecon's, without its clean-up of worker tracebacks: the raw re-raised text."""


class Failing(Dataset):
    def __init__(self, error: type[Exception]) -> None:
        self.error = error

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise self.error("file_1.h5: no 'kspace' dataset")


@pytest.mark.parametrize("error", [UserError, errors.UserError])
def test_a_user_error_in_a_dataloader_worker_keeps_its_line(error):
    with pytest.raises(error) as err:
        next(iter(DataLoader(Failing(error), num_workers=1)))
    message = str(err.value)
    if error is UserError:
        assert internals.user_error_from_worker(message) == "file_1.h5: no 'kspace' dataset", changed(
            TORCH, f"how a DataLoader worker's exception is re-raised: {message!r}")
    else:
        assert message == "file_1.h5: no 'kspace' dataset", message
    assert internals.user_error_from_worker("file_1.h5: bad") is None


def test_peer_failure_messages_are_in_the_installed_backends():
    lib = Path(torch.__file__).parent / "lib"

    def in_binary(name: str, text: str) -> bool:
        with open(lib / name, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(text.encode()) >= 0

    assert set(internals.PEER_FAILED_MARKERS) == {
        "Connection closed by peer", "Connection reset by peer", "NCCL communicator was aborted"}
    assert in_binary("libtorch_cpu.so", "Connection closed by peer"), changed(TORCH, "gloo's peer-closed message")
    assert os.strerror(errno.ECONNRESET) == "Connection reset by peer"  # gloo reports the errno's text
    if (lib / "libtorch_cuda.so").is_file():
        assert in_binary("libtorch_cuda.so", "NCCL communicator was aborted"), changed(TORCH, "NCCL's abort message")


# --- Lightning's warnings ----------------------------------------------------------------------------

# Each pattern of NOISY_WARNINGS: the file that emits it and the message as it is rendered, with
# the f-string fields written {...} in the template (their values in the rendered message).
WARNINGS = {
    internals.NOISY_WARNINGS[0]: ("torch/utils/_pytree.py", "`isinstance(treespec, LeafSpec)` is deprecated, {}", ["use x"]),
    internals.NOISY_WARNINGS[1]: ("pytorch_lightning/cli.py", "`{}.configure_optimizers` will be overridden by `{}.configure_optimizers`.",
                                   ["ReconModule", "MriReconCLI"]),
    internals.NOISY_WARNINGS[2]: ("pytorch_lightning/utilities/data.py", "You are using a custom batch sampler `{}` for prediction.",
                                   ["SliceBatchSampler"]),
    internals.NOISY_WARNINGS[3]: ("pytorch_lightning/callbacks/model_checkpoint.py", "Checkpoint directory {} exists and is not empty.",
                                   ["runs/x/checkpoints"]),
    internals.NOISY_WARNINGS[4]: ("pytorch_lightning/trainer/connectors/data_connector.py",
                                   "The '{}' does not have many workers which may be a bottleneck.", ["val_dataloader"]),
    internals.NOISY_WARNINGS[5]: ("pytorch_lightning/trainer/call.py",
                                   "Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided", []),
    internals.CLI_ARGS_WARNING: ("pytorch_lightning/cli.py", "LightningCLI's args parameter is intended to run from within Python", []),
}


@functools.lru_cache(maxsize=None)
def library_strings(relative: str) -> list[str]:
    """The string literals of an installed library file, f-string fields written {}."""
    root = Path(torch.__file__).parents[1]
    tree = ast.parse((root / relative).read_text())

    def render(node: ast.AST) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(render(part) if isinstance(part, ast.Constant) else "{}" for part in node.values)
        return "{}"

    found = [render(node) for node in ast.walk(tree) if isinstance(node, (ast.Constant, ast.JoinedStr))]
    return found


@pytest.mark.slow  # long: the default suite must stay under 5 minutes on 2 cores
def test_the_warnings_we_silence_are_still_emitted_as_written():
    assert set(WARNINGS) == set(internals.NOISY_WARNINGS) | {internals.CLI_ARGS_WARNING}
    for pattern, (relative, template, values) in WARNINGS.items():
        library = TORCH if relative.startswith("torch/") else PL
        pieces = [piece for piece in template.split("{}") if piece.strip()]
        strings = library_strings(relative)
        assert all(any(piece in s for s in strings) for piece in pieces), changed(
            library, f"the warning {template!r} in {relative}")
        message = template.format(*values) if values else template
        assert re.match(pattern, message), f"{pattern!r} does not match {message!r}; update mrirecon/internals.py"
