"""The optimiser/normalisation study: every choice trains, batch norm's modes, the report."""

import copy
import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from mrirecon.commands import study
from mrirecon.commands.study.probe import BatchStatsProbe
from mrirecon.data.batch import network_input, normalized_target
from mrirecon.lightning.datamodule import ReconDataModule
from mrirecon.errors import UserError
from mrirecon.models.norms import NORM_CHOICES
from mrirecon.models.unet import Unet
from mrirecon.lightning.cli import read_config
from mrirecon.lightning.module import ReconModule


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny convolutions gain nothing from a second thread and lose much on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_batch(tiny_singlecoil):
    dm = ReconDataModule(str(tiny_singlecoil), batch_size=4, num_workers=0, seed=0)
    dm.setup("fit")
    return dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)


def _train(module, optimizer, batch, steps=20):
    losses = []
    for _ in range(steps):
        loss = F.l1_loss(module.net(network_input(batch)), normalized_target(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _optimizer(key, params, lr):
    class_path, kwargs = study.OPTIMIZERS[key]
    module, name = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(params, lr=lr, **kwargs)


@pytest.mark.parametrize("key", sorted(study.OPTIMIZERS))
def test_every_optimiser_trains(key, tiny_batch):
    torch.manual_seed(0)
    module = ReconModule(Unet(chans=4, num_pool_layers=2))
    lrs = study.QUICK.lrs[key]
    losses = _train(module, _optimizer(key, module.parameters(), lrs[len(lrs) // 2]), tiny_batch)
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("norm", NORM_CHOICES)
def test_every_norm_trains(norm, tiny_batch):
    torch.manual_seed(0)
    module = ReconModule(Unet(chans=4, num_pool_layers=2, norm=norm))
    losses = _train(module, torch.optim.Adam(module.parameters(), lr=study.QUICK.norm_lr), tiny_batch)
    # Without normalisation the bias-free U-Net starts near zero output and learns slowest.
    assert losses[-1] < 0.95 * losses[0]


class _RunningStatsNorm(nn.Module):
    """Batch norm written out with the running statistics, to compare eval mode against."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.bn = bn

    def forward(self, x):
        bn = self.bn
        shape = (1, -1, 1, 1)
        scale = bn.weight.view(shape) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
        return (x - bn.running_mean.view(shape)) * scale + bn.bias.view(shape)


def _replace_batch_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, _RunningStatsNorm(child))
        else:
            _replace_batch_norms(child)


def test_batch_norm_evaluates_with_running_statistics(tiny_batch):
    torch.manual_seed(0)
    module = ReconModule(Unet(chans=4, num_pool_layers=2, norm="batch"))
    _train(module, torch.optim.Adam(module.parameters(), lr=1e-3), tiny_batch, steps=5)
    x = network_input(tiny_batch)
    module = module.net
    module.eval()
    with torch.no_grad():
        eval_out = module(x)
        explicit = copy.deepcopy(module)
        _replace_batch_norms(explicit)
        running_out = explicit(x)
        module.train()
        train_out = module(x)
    torch.testing.assert_close(eval_out, running_out, rtol=1e-4, atol=1e-5)
    assert (eval_out - train_out).abs().max() > 1e-3


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_probe_measures_batch_statistics_and_leaves_the_model_alone(norm, tiny_batch):
    torch.manual_seed(0)
    module = ReconModule(Unet(chans=4, num_pool_layers=2, norm=norm))
    _train(module, torch.optim.Adam(module.parameters(), lr=1e-3), tiny_batch, steps=5)
    module.eval()
    before = copy.deepcopy(module.state_dict())
    probe = BatchStatsProbe()
    probe.on_validation_epoch_start(None, module)
    probe.on_validation_batch_end(None, module, None, tiny_batch, 0)
    with torch.no_grad():
        eval_loss = module._loss(module(tiny_batch), tiny_batch).item()
        train_mode = copy.deepcopy(module).train()
        batch_stats_loss = train_mode._loss(train_mode(tiny_batch), tiny_batch).item()
    assert probe._total / probe._count == pytest.approx(batch_stats_loss, rel=1e-5)
    if norm == "group":
        assert batch_stats_loss == pytest.approx(eval_loss, rel=1e-6)
    else:
        assert abs(batch_stats_loss - eval_loss) > 1e-4
    assert not module.training and all(not m.training for m in module.modules())
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_plan_shares_the_base_norm_run_and_orders_seeds_first():
    plan = study.plan_runs(study.QUICK)
    names = {run.name for run in plan.runs}
    assert len(names) == 4 * 3 + len(NORM_CHOICES) - 1
    assert len(plan.runs) == len(names) * len(study.QUICK.seeds)
    assert plan.norms["group"] == "opt-adam-lr1e-3"
    assert plan.optimizers["sgd"][0.03] == "opt-sgd-lr3e-2"
    assert [run.seed for run in plan.runs] == sorted(run.seed for run in plan.runs)
    overrides = study.fit_overrides(plan.runs[0], study.QUICK, Path("r"))
    assert overrides["optimizer"]["init_args"]["momentum"] == 0.9
    assert overrides["trainer.logger"]["init_args"]["version"] == "s0"


@pytest.mark.parametrize("key", sorted(study.OPTIMIZERS))
def test_cli_overrides_give_the_intended_optimiser(key, capsys):
    # The base config's Adam arguments must not leak into the other optimisers.
    plan = study.plan_runs(study.QUICK)
    lr = study.QUICK.lrs[key][0]
    run = next(r for r in plan.runs if r.name == plan.optimizers[key][lr])
    config = read_config(study.fit_config(run, study.QUICK, Path("unused")).values)
    class_path, kwargs = study.OPTIMIZERS[key]
    assert config["optimizer"]["class_path"] == class_path
    module, name = class_path.rsplit(".", 1)
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    expected = {k: p.default for k, p in params.items() if k != "params"} | {"lr": lr} | kwargs
    resolved = {k: tuple(v) if isinstance(v, list) else v for k, v in config["optimizer"]["init_args"].items()}
    assert resolved == expected
    assert config["model"]["net"]["init_args"]["norm"] == study.QUICK.base_norm


def test_dry_run_lists_the_planned_runs(tmp_path, capsys):
    assert study.main(["--quick", "--dry-run", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^todo\s+(\S+)", out, flags=re.M)
    assert len(listed) == len(study.plan_runs(study.QUICK).runs)
    assert "opt-adamw-lr1e-2/s1" in listed and "norm-none/s0" in listed
    assert not any(tmp_path.iterdir())


# --- the report, on synthetic event files ----------------------------------------------------
SMALL = dataclasses.replace(
    study.QUICK, steps=100, val_every=50, log_every=10, seeds=(0, 1), lrs={"sgd": (0.01, 0.1), "adam": (0.001,)}, norms=("group", "batch")
)
# Validation SSIM after 50 and 100 steps per run and seed.
SSIM = {
    "opt-sgd-lr1e-2": {0: (0.60, 0.70), 1: (0.62, 0.74)},
    "opt-sgd-lr1e-1": {0: (0.55, 0.50), 1: (0.52, 0.57)},
    "opt-adam-lr1e-3": {0: (0.72, 0.80), 1: (0.74, 0.78)},
    "norm-batch": {0: (0.55, 0.65), 1: (0.58, 0.66)},
}


def _write_run(run_dir, ssim, seed):
    with SummaryWriter(str(run_dir)) as writer:
        for step in range(0, 100, 10):
            writer.add_scalar("train/loss", 1.0 / (1 + step) + 0.1 * seed, step + 9)
        for i, value in enumerate(ssim):
            step = 50 * (i + 1) - 1
            writer.add_scalar("val/ssim", value, step)
            writer.add_scalar("val/psnr", 20 + 10 * value, step)
            writer.add_scalar("val/loss", 1 - value, step)
            writer.add_scalar("val/loss_batch_stats", 1 - value + 0.05, step)
            writer.add_scalar("val_zero_filled/ssim", 0.5, step)


def test_report_from_event_files(tmp_path):
    plan = study.plan_runs(SMALL)
    root = tmp_path / "runs"
    for run in plan.runs:
        _write_run(root / run.name / run.version, SSIM[run.name][run.seed], run.seed)
    out = tmp_path / "out"
    numbers = study.write_report(plan, root, out, command="mrirecon study --test")

    assert numbers["best_lr"] == {"sgd": 0.01, "adam": 0.001}
    assert numbers["zero_filled"] == pytest.approx(0.5)
    # Best mean gain: Adam, (0.80 + 0.78) / 2 - 0.5 = 0.29.
    assert numbers["target"] == pytest.approx(0.5 + 0.8 * 0.29)
    text = (out / "results.md").read_text()
    assert "mrirecon study --test" in text
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in text.splitlines() if line.startswith("| ")}
    # SGD at 1e-2: best SSIM 0.70 and 0.74, PSNR 27.0 and 27.4 dB; 0.732 reached at step 100 by seed 1 only.
    sgd = rows[("SGD (momentum 0.9)", "1e-2")]
    assert "0.7200 ± 0.0200" in sgd and "27.20 ± 0.20" in sgd and "100, 1/2 seeds" in sgd
    adam = rows[("Adam", "1e-3")]
    # Adam reaches 0.732 after 100 steps with seed 0 and after 50 with seed 1.
    assert "0.7900 ± 0.0100" in adam and "| 75 (50–100) |" in adam
    # Seed 0 falls from 0.55 to 0.50 between its two validations.
    assert "| not reached | 0.050 |" in rows[("SGD (momentum 0.9)", "1e-1")]
    assert "| 0.000 |" in sgd
    assert "**(best)**" in rows[("SGD (momentum 0.9)", "1e-2 **(best)**")]
    batch = next(line for line in text.splitlines() if line.startswith("| batch "))
    # Final val loss 1 - (0.65, 0.66) and 0.05 more with batch statistics.
    assert "| 0.3450 ± 0.0050 | 0.3950 ± 0.0050 |" in batch
    for name in ("optimizers.png", "norms.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_needs_the_runs(tmp_path):
    with pytest.raises(UserError, match="no TensorBoard events"):
        study.write_report(study.plan_runs(SMALL), tmp_path, tmp_path / "out")


def test_study_runs_the_cli_and_resumes(tiny_singlecoil, tmp_path, capsys):
    grid = dataclasses.replace(
        study.QUICK,
        steps=4,
        val_every=2,
        log_every=1,
        seeds=(0,),
        lrs={"adam": (1e-3,)},
        norms=("group", "batch"),
        overrides={
            "data.data_path": str(tiny_singlecoil),
            "model.net.init_args.chans": 4,
            "model.net.init_args.num_pool_layers": 2,
            "data.num_workers": 0,
            "model.num_log_images": 0,
        },
        data=None,
        threads=None,
    )
    plan = study.plan_runs(grid)
    root = tmp_path / "runs"
    assert study.run_study(plan, root) == []
    assert [study.run_state(run, grid, root) for run in plan.runs] == ["done", "done"]
    scalars = study.load_scalars(root / "norm-batch" / "s0")
    assert list(scalars["val/ssim"][0]) == [2, 4]
    assert "val/loss_batch_stats" in scalars
    capsys.readouterr()
    assert study.run_study(plan, root) == []
    assert "trained 0 of 2 runs" in capsys.readouterr().out
    study.write_report(plan, root, tmp_path / "out")
    assert (tmp_path / "out" / "results.md").is_file()
