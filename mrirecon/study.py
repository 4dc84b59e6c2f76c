"""``mrirecon study``: which optimiser and which normalisation layer for a reconstruction U-Net.

Trains the same U-Net on the same data for the same number of steps under a grid of

* optimisers (SGD with momentum 0.9, RMSprop, Adam, AdamW), each over a few learning rates,
  with the configuration's normalisation;
* normalisation layers (group, batch, instance, layer, none) with Adam at one learning rate,

over several seeds. Every run goes through the real ``mrirecon fit`` path
(:func:`mrirecon.training.cli.run_lightning_cli`, in-process) with command-line overrides of
a base config, so the study measures exactly what users run, and logs to TensorBoard under one
root (``<root>/<run name>/s<seed>``) so the runs overlay in one view. Finished runs are
skipped, so an interrupted study resumes where it stopped.

The report is read back from the event files: ``optimizers.png`` and ``norms.png`` (validation
SSIM and smoothed training loss against step, mean over seeds with a min-max band) and
``results.md`` (best validation SSIM, PSNR, steps to a target SSIM, the largest fall of
validation SSIM between validations, and batch norm's train/eval gap).

Every run also carries :class:`BatchStatsProbe`, which logs ``val/loss_batch_stats``: the
validation loss with batch-norm layers normalising by each validation batch's own statistics
(train mode) instead of their running statistics (eval mode, what ``val/loss`` uses).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from mrirecon.data.simulate import Preset
from mrirecon.errors import UserError
from mrirecon.models.norms import NORM_CHOICES

# Class path and the arguments besides the learning rate; the rest are PyTorch's defaults.
# AdamW's weight decay must be given: switching class_path on the command line keeps the
# config's Adam arguments that AdamW shares, and Adam's weight_decay is 0, not AdamW's 0.01.
OPTIMIZERS: dict[str, tuple[str, dict[str, float]]] = {
    "sgd": ("torch.optim.SGD", {"momentum": 0.9}),
    "rmsprop": ("torch.optim.RMSprop", {}),
    "adam": ("torch.optim.Adam", {}),
    "adamw": ("torch.optim.AdamW", {"weight_decay": 0.01}),
}
OPTIMIZER_LABELS = {"sgd": "SGD (momentum 0.9)", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"}

# Steps to a target: the target is the zero-filled SSIM plus this fraction of the largest gain
# over it that any configuration reached, i.e. "most of the way to the best result".
TARGET_FRACTION = 0.8
# Exponential moving average weight for training-loss curves, as TensorBoard's smoothing slider.
SMOOTHING = 0.8


@dataclass(frozen=True)
class Grid:
    """What a study trains.

    Attributes:
        name: Short name, shown in the report.
        config: Base LightningCLI config every run starts from.
        steps: Training steps per run.
        val_every: Validate every this many steps; must divide ``steps``.
        log_every: Log the training loss every this many steps.
        seeds: Seeds (``--seed_everything``) of every configuration.
        lrs: Learning rates per optimiser (keys of :data:`OPTIMIZERS`).
        base_norm: Normalisation of the optimiser runs.
        norms: Normalisations compared with Adam at ``norm_lr``.
        norm_lr: Adam's learning rate in the normalisation runs.
        overrides: Extra ``mrirecon fit`` arguments for every run (data, model size).
        data: Dataset folder and size to simulate first if it is missing.
        threads: CPU threads for PyTorch; None keeps PyTorch's default.
    """

    name: str
    config: str
    steps: int
    val_every: int
    log_every: int
    seeds: tuple[int, ...]
    lrs: dict[str, tuple[float, ...]]
    base_norm: str = "group"
    norms: tuple[str, ...] = NORM_CHOICES
    norm_lr: float = 1e-3
    overrides: tuple[str, ...] = ()
    data: Optional[tuple[str, Preset]] = None
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        # A run is finished when it logged the validation after its last step.
        if self.steps % self.val_every:
            raise ValueError(f"val_every ({self.val_every}) must divide steps ({self.steps})")


QUICK_DATA = "data/study_quick"
QUICK = Grid(
    name="quick",
    config="configs/demo.yaml",
    steps=300,
    val_every=50,
    log_every=5,
    seeds=(0, 1, 2),
    # Centred on the best rate of a one-seed 300-step pilot on this data.
    lrs={"sgd": (1e-2, 3e-2, 1e-1), "rmsprop": (3e-4, 1e-3, 3e-3), "adam": (1e-3, 3e-3, 1e-2), "adamw": (1e-3, 3e-3, 1e-2)},
    overrides=(
        "--data.data_path", QUICK_DATA,
        "--model.net.init_args.chans", "8",
        "--model.net.init_args.num_pool_layers", "3",
        # Loading a 64x64 batch takes a fifth of a step; workers would only compete for the cores.
        "--data.num_workers", "0",
    ),
    data=(QUICK_DATA, Preset(recon_size=64, volumes=(12, 3, 3), slices=10, coils=(8, 8), snr=(20.0, 40.0))),
    # On two shared cores a second intra-op thread made steps 5-15x slower, not faster.
    threads=1,
)
FULL = Grid(
    name="full",
    config="configs/sim_full_unet.yaml",
    # The config's own 30 epochs of the full preset (720 slices, batch 8: 90 steps an epoch),
    # so its cosine schedule (T_max 30 epochs) ends with the run instead of rising again.
    steps=2700,
    val_every=180,
    log_every=20,
    seeds=(0, 1, 2),
    # Centred on the configs' Adam lr 1e-3 rather than the quick grid's optimum: ten times
    # the steps usually favours smaller rates.
    lrs={"sgd": (1e-2, 3e-2, 1e-1), "rmsprop": (1e-4, 3e-4, 1e-3), "adam": (3e-4, 1e-3, 3e-3), "adamw": (3e-4, 1e-3, 3e-3)},
)


def format_lr(lr: float) -> str:
    """A learning rate as in run names: ``3e-4``, ``1e-1``."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


@dataclass(frozen=True)
class Run:
    """One training run: a configuration (its ``name``) and a seed."""

    name: str
    seed: int
    args: tuple[str, ...]

    @property
    def version(self) -> str:
        return f"s{self.seed}"


@dataclass
class Plan:
    """The runs of a grid and which configuration answers which question.

    Attributes:
        grid: The grid.
        optimizers: Run name per optimiser and learning rate.
        norms: Run name per normalisation; the base normalisation's Adam run is shared with
            the optimiser sweep when that sweep already trains it.
        runs: Every distinct run, once.
    """

    grid: Grid
    optimizers: dict[str, dict[float, str]] = field(default_factory=dict)
    norms: dict[str, str] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)


def plan_runs(grid: Grid) -> Plan:
    """Lists the runs of a grid, training each distinct configuration once per seed."""
    plan = Plan(grid)
    by_args: dict[tuple[str, ...], str] = {}

    def add(name: str, args: tuple[str, ...]) -> str:
        if args in by_args:
            return by_args[args]
        by_args[args] = name
        plan.runs.extend(Run(name, seed, args) for seed in grid.seeds)
        return name

    def optimizer_args(key: str, lr: float, norm: str) -> tuple[str, ...]:
        class_path, kwargs = OPTIMIZERS[key]
        extra = [arg for name, value in kwargs.items() for arg in (f"--optimizer.{name}", repr(value))]
        return ("--optimizer", class_path, "--optimizer.lr", repr(lr), *extra, "--model.net.init_args.norm", norm)

    for key, lrs in grid.lrs.items():
        plan.optimizers[key] = {
            lr: add(f"opt-{key}-lr{format_lr(lr)}", optimizer_args(key, lr, grid.base_norm)) for lr in lrs
        }
    for norm in grid.norms:
        plan.norms[norm] = add(f"norm-{norm}", optimizer_args("adam", grid.norm_lr, norm))
    # Every configuration's first seed before any second one: a study cut short still covers the grid.
    plan.runs.sort(key=lambda run: grid.seeds.index(run.seed))
    return plan


def fit_args(run: Run, grid: Grid, root: Path) -> list[str]:
    """The ``mrirecon fit`` arguments of a run."""
    return [
        "fit", "--config", grid.config, *grid.overrides, *run.args,
        "--seed_everything", str(run.seed),
        "--trainer.max_steps", str(grid.steps),
        # The budget is steps; epochs must not end a run first.
        "--trainer.max_epochs", "-1",
        "--trainer.check_val_every_n_epoch", "null",
        "--trainer.val_check_interval", str(grid.val_every),
        "--trainer.log_every_n_steps", str(grid.log_every),
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.callbacks+=mrirecon.study.BatchStatsProbe",
        "--trainer.logger.init_args.save_dir", str(root),
        "--trainer.logger.init_args.name", run.name,
        "--trainer.logger.init_args.version", run.version,
    ]


class BatchStatsProbe(pl.Callback):
    """Logs ``val/loss_batch_stats``: the validation loss with batch norm in train mode.

    Each validation batch is passed a second time with every batch-norm layer normalising by
    the batch's own statistics. Running statistics are restored afterwards and dropout stays
    off, so training is unaffected. Other normalisation layers behave identically in both
    modes, so for them the value equals ``val/loss``.
    """

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._total, self._count = 0.0, 0

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        norms = [m for m in pl_module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
        for m in norms:
            m.train()
        with torch.no_grad():
            # The module's own loss, so that this compares like for like with val/loss.
            loss = pl_module._loss(pl_module(batch.input), batch)
        for m, state in zip(norms, saved):
            m.load_state_dict(state)
            m.eval()
        size = batch.input.shape[0]
        self._total += float(loss) * size
        self._count += size

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._count and not trainer.sanity_checking:
            pl_module.log("val/loss_batch_stats", self._total / self._count)


# --- running --------------------------------------------------------------------------------
def load_scalars(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Scalars of a run's event files as ``tag -> (steps, values)``.

    Steps count training steps done: TensorBoard's step is 0-based, so the validation logged
    at its step 49 is the one after 50 steps.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 1, "tensors": 1, "histograms": 1})
    events.Reload()
    scalars = {}
    for tag in events.Tags()["scalars"]:
        entries = events.Scalars(tag)
        scalars[tag] = (np.array([e.step + 1 for e in entries]), np.array([e.value for e in entries], dtype=float))
    return scalars


def run_state(run: Run, grid: Grid, root: Path) -> str:
    """``done``, ``todo`` or ``incomplete`` (started but not finished, e.g. interrupted)."""
    run_dir = root / run.name / run.version
    if not any(run_dir.glob("events.out.tfevents.*")):
        return "todo"
    ssim = load_scalars(run_dir).get("val/ssim")
    last = int(ssim[0][-1]) if ssim is not None else 0
    if last > grid.steps:
        raise UserError(f"{run_dir}: holds a longer run ({last} steps) than this study's {grid.steps}: use --force or another --root")
    return "done" if last == grid.steps else "incomplete"


def _ensure_data(grid: Grid) -> None:
    if grid.data is None or Path(grid.data[0]).is_dir():
        return
    from mrirecon.data.simulate import simulate_dataset

    path, preset = grid.data
    print(f"simulating the study dataset into {path}", flush=True)
    simulate_dataset(path, preset=preset, challenge="singlecoil", seed=0, progress=False)


def run_study(plan: Plan, root: Path, force: bool = False) -> list[str]:
    """Trains every run of a plan that has not finished yet.

    Args:
        plan: The runs.
        root: TensorBoard root folder.
        force: Retrain finished runs too.

    Returns:
        Names (``name/version``) of runs that failed; their tracebacks are printed.
    """
    from mrirecon.training.cli import run_lightning_cli

    grid = plan.grid
    _ensure_data(grid)
    if grid.threads is not None:
        torch.set_num_threads(grid.threads)
    failed = []
    trained = 0
    start = time.perf_counter()
    for i, run in enumerate(plan.runs, 1):
        run_dir = root / run.name / run.version
        state = "todo" if force else run_state(run, grid, root)
        if state == "done":
            print(f"[{i}/{len(plan.runs)}] {run_dir}: done, skipped", flush=True)
            continue
        # A partial or forced run restarts from scratch: appending to old events would mix runs.
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"[{i}/{len(plan.runs)}] {run_dir}: training", flush=True)
        trained += 1
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                # LightningCLI warns that sys.argv (the study's own) differs from the args given.
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
                run_lightning_cli(fit_args(run, grid, root))
        except UserError:
            raise
        except Exception:  # noqa: BLE001 - one diverging configuration must not end the study
            traceback.print_exc()
            failed.append(f"{run.name}/{run.version}")
        print(f"[{i}/{len(plan.runs)}] {run_dir}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"study: trained {trained} of {len(plan.runs)} runs in {time.perf_counter() - start:.0f} s", flush=True)
    return failed


# --- report ---------------------------------------------------------------------------------
@dataclass
class RunSummary:
    """Numbers of one finished run."""

    ssim: tuple[np.ndarray, np.ndarray]
    train_loss: tuple[np.ndarray, np.ndarray]
    best_ssim: float
    psnr_at_best: float
    zero_filled_ssim: float
    final_train_loss: float
    final_val_loss: float
    final_val_loss_batch_stats: float
    val_loss: tuple[np.ndarray, np.ndarray]
    val_loss_batch_stats: tuple[np.ndarray, np.ndarray]
    largest_drop: float

    def steps_to(self, target: float) -> Optional[int]:
        """Training steps until the first validation at or above ``target``; None if never."""
        reached = np.nonzero(self.ssim[1] >= target)[0]
        return int(self.ssim[0][reached[0]]) if reached.size else None


def summarise_run(scalars: dict[str, tuple[np.ndarray, np.ndarray]]) -> RunSummary:
    """Summarises one run's scalars.

    Args:
        scalars: The run's scalars, as :func:`load_scalars` returns them.

    Returns:
        The best validation SSIM and the PSNR of that validation, the final losses, the
        curves, and the largest fall of validation SSIM from one validation to the next (how
        steadily the run trains).
    """
    steps, ssim = scalars["val/ssim"]
    best = int(np.argmax(ssim))
    psnr_steps, psnr = scalars["val/psnr"]
    train_steps, train = scalars["train/loss"]
    # The last tenth of training, so that one noisy batch does not decide the number.
    tail = train[train_steps > train_steps[-1] * 0.9]
    val_loss = scalars["val/loss"]
    batch_stats = scalars.get("val/loss_batch_stats", val_loss)
    return RunSummary(
        ssim=(steps, ssim),
        train_loss=(train_steps, train),
        best_ssim=float(ssim[best]),
        psnr_at_best=float(psnr[psnr_steps == steps[best]][0]),
        zero_filled_ssim=float(scalars["val_zero_filled/ssim"][1][-1]),
        final_train_loss=float(tail.mean()),
        final_val_loss=float(val_loss[1][-1]),
        final_val_loss_batch_stats=float(batch_stats[1][-1]),
        val_loss=val_loss,
        val_loss_batch_stats=batch_stats,
        largest_drop=float(max(0.0, -np.diff(ssim).min())) if ssim.size > 1 else 0.0,
    )


def _spread(values: list[float], fmt: str) -> str:
    """``mean ± half the min-max range`` over seeds, or the value alone for one seed."""
    mean = float(np.mean(values))
    if len(values) == 1:
        return format(mean, fmt)
    return f"{format(mean, fmt)} ± {format((max(values) - min(values)) / 2, fmt)}"


def _steps_cell(runs: list[RunSummary], target: float) -> str:
    steps = [r.steps_to(target) for r in runs]
    reached = [s for s in steps if s is not None]
    if not reached:
        return "not reached"
    text = f"{np.mean(reached):.0f}" if len(set(reached)) == 1 else f"{np.mean(reached):.0f} ({min(reached)}–{max(reached)})"
    return text if len(reached) == len(steps) else f"{text}, {len(reached)}/{len(steps)} seeds"


def _drop_cell(runs: list[RunSummary]) -> str:
    return f"{max(r.largest_drop for r in runs):.3f}"


def _smooth(values: np.ndarray, weight: float = SMOOTHING) -> np.ndarray:
    """TensorBoard's debiased exponential moving average."""
    out, last = np.empty_like(values), 0.0
    for i, v in enumerate(values):
        last = last * weight + (1 - weight) * v
        out[i] = last / (1 - weight ** (i + 1))
    return out


def _band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps common to all seeds and the mean, min and max over seeds there."""
    steps = curves[0][0]
    for s, _ in curves[1:]:
        steps = np.intersect1d(steps, s)
    stack = np.stack([v[np.isin(s, steps)] for s, v in curves])
    return steps, stack.mean(0), stack.min(0), stack.max(0)


def _plot_curves(
    ax: Any, groups: dict[str, list[tuple[np.ndarray, np.ndarray]]], colors: dict[str, Any], band: bool = True, **style: Any
) -> None:
    for label, curves in groups.items():
        steps, mean, lo, hi = _band(curves)
        ax.plot(steps, mean, color=colors[label], label=label if band else None, **style)
        if band and len(curves) > 1:
            ax.fill_between(steps, lo, hi, color=colors[label], alpha=0.2, linewidth=0)


def _plot_study(
    groups: dict[str, list[RunSummary]],
    zero_filled: float,
    target: float,
    title: str,
    path: Path,
    sweep: Optional[dict[str, dict[float, list[RunSummary]]]] = None,
) -> None:
    """Draws one study figure: validation SSIM, smoothed training loss and a third panel.

    The third panel is the learning-rate sweep when ``sweep`` is given, else the validation
    loss in eval mode against the one with batch statistics.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {label: plt.get_cmap("tab10")(i) for i, label in enumerate(groups)}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    _plot_curves(ax, {k: [r.ssim for r in v] for k, v in groups.items()}, colors, marker="o", markersize=3)
    ax.axhline(zero_filled, color="0.4", linestyle=":", label=f"zero-filled ({zero_filled:.3f})")
    ax.axhline(target, color="0.6", linestyle="--", linewidth=0.8, label=f"target ({target:.3f})")
    ax.set(title="validation SSIM", xlabel="training step", ylabel="SSIM")
    ax.legend(fontsize=8)
    ax = axes[1]
    _plot_curves(ax, {k: [(r.train_loss[0], _smooth(r.train_loss[1])) for r in v] for k, v in groups.items()}, colors)
    ax.set(title=f"training loss (EMA {SMOOTHING})", xlabel="training step", ylabel="L1 loss", yscale="log")
    ax.legend(fontsize=8)
    ax = axes[2]
    if sweep is not None:
        for label, by_lr in sweep.items():
            lrs = sorted(by_lr)
            best = [[r.best_ssim for r in by_lr[lr]] for lr in lrs]
            mean = np.array([np.mean(b) for b in best])
            err = np.array([[mean[i] - min(b), max(b) - mean[i]] for i, b in enumerate(best)]).T
            ax.errorbar(lrs, mean, yerr=err, color=colors[label], marker="o", capsize=3, label=label)
        ax.axhline(zero_filled, color="0.4", linestyle=":")
        ax.set(title="learning-rate sweep (min–max over seeds)", xlabel="learning rate", ylabel="best validation SSIM", xscale="log")
    else:
        _plot_curves(ax, {k: [r.val_loss for r in v] for k, v in groups.items()}, colors, marker="o", markersize=3)
        # Without bands: they would hide the solid curves the dashed ones are compared with.
        _plot_curves(ax, {k: [r.val_loss_batch_stats for r in v] for k, v in groups.items()}, colors, band=False, linestyle="--")
        ax.set(title="validation loss: eval mode (solid) vs batch statistics (dashed)", xlabel="training step", ylabel="L1 loss", yscale="log")
    ax.legend(fontsize=8)
    axes[2].set_title(axes[2].get_title(), fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(plan: Plan, root: Path, out: Path, target_ssim: Optional[float] = None, command: str = "") -> dict[str, Any]:
    """Writes ``optimizers.png``, ``norms.png`` and ``results.md`` from a study's event files.

    Args:
        plan: The study's runs.
        root: TensorBoard root the runs logged to.
        out: Output folder (created).
        target_ssim: SSIM for the steps-to-target column; default the zero-filled SSIM plus
            :data:`TARGET_FRACTION` of the largest mean gain over it of any configuration.
        command: The command line, quoted in ``results.md``.

    Returns:
        The numbers behind the report: ``target``, ``zero_filled``, ``best_lr`` per optimiser.

    Raises:
        UserError: A run of the plan has no event file.
    """
    summaries: dict[str, list[RunSummary]] = {}
    for run in plan.runs:
        run_dir = root / run.name / run.version
        if not any(run_dir.glob("events.out.tfevents.*")):
            raise UserError(f"{run_dir}: no TensorBoard events; run the study first")
        summaries.setdefault(run.name, []).append(summarise_run(load_scalars(run_dir)))

    def mean_best(name: str) -> float:
        return float(np.mean([r.best_ssim for r in summaries[name]]))

    best_lr = {key: max(by_lr, key=lambda lr: mean_best(by_lr[lr])) for key, by_lr in plan.optimizers.items()}
    zero_filled = float(np.mean([r.zero_filled_ssim for runs in summaries.values() for r in runs]))
    best_gain = max(mean_best(name) for name in summaries) - zero_filled
    target = target_ssim if target_ssim is not None else zero_filled + TARGET_FRACTION * best_gain

    opt_groups = {OPTIMIZER_LABELS[k]: summaries[by_lr[best_lr[k]]] for k, by_lr in plan.optimizers.items()}
    sweep = {OPTIMIZER_LABELS[k]: {lr: summaries[name] for lr, name in by_lr.items()} for k, by_lr in plan.optimizers.items()}
    norm_groups = {norm: summaries[name] for norm, name in plan.norms.items()}
    out.mkdir(parents=True, exist_ok=True)
    grid = plan.grid
    seeds = f"{len(grid.seeds)} seed{'s' if len(grid.seeds) > 1 else ''}"
    if plan.optimizers:
        _plot_study(
            opt_groups, zero_filled, target,
            f"Optimisers at their best learning rate ({grid.name} grid, {grid.steps} steps, {grid.base_norm} norm, mean and min–max over {seeds})",
            out / "optimizers.png", sweep,
        )
    if plan.norms:
        _plot_study(
            norm_groups, zero_filled, target,
            f"Normalisation layers (Adam lr {format_lr(grid.norm_lr)}, {grid.name} grid, {grid.steps} steps, mean and min–max over {seeds})",
            out / "norms.png",
        )

    spread = "mean ± half the min–max range" if len(grid.seeds) > 1 else "one seed"
    lines = [
        f"# Optimiser and normalisation study: {grid.name} grid",
        "",
        f"Generated by `{command or 'mrirecon study'}` from the TensorBoard runs under `{root}`.",
        f"Base config `{grid.config}`, {grid.steps} training steps per run, validation every {grid.val_every} steps,",
        f"seeds {', '.join(map(str, grid.seeds))} ({spread} over seeds).",
        f"Zero-filled validation SSIM: {zero_filled:.4f}. Target SSIM for \"steps to target\": {target:.4f}"
        + (" (given)." if target_ssim is not None else f" (zero-filled + {TARGET_FRACTION:g} × the best mean gain over it)."),
        "Best SSIM is the best validation of a run; PSNR is at that validation. Train loss is the mean",
        "of the last tenth of the logged training losses. Largest drop is the largest fall of validation",
        "SSIM from one validation to the next, worst seed: how steadily a configuration trains.",
        "",
    ]
    if plan.optimizers:
        lines += [
            f"## Optimisers ({grid.base_norm} norm), each at its best learning rate",
            "",
            "| optimiser | lr | best val SSIM | val PSNR (dB) | steps to target | largest drop | train loss | val loss |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, by_lr in plan.optimizers.items():
            runs = summaries[by_lr[best_lr[key]]]
            lines.append(
                f"| {OPTIMIZER_LABELS[key]} | {format_lr(best_lr[key])} | {_spread([r.best_ssim for r in runs], '.4f')} "
                f"| {_spread([r.psnr_at_best for r in runs], '.2f')} | {_steps_cell(runs, target)} | {_drop_cell(runs)} "
                f"| {_spread([r.final_train_loss for r in runs], '.4f')} | {_spread([r.final_val_loss for r in runs], '.4f')} |"
            )
        lines += [
            "",
            "### Learning-rate sweep",
            "",
            "| optimiser | lr | best val SSIM | val PSNR (dB) | steps to target | largest drop |",
            "|---|---|---|---|---|---|",
        ]
        for key, by_lr in plan.optimizers.items():
            for lr, name in by_lr.items():
                runs = summaries[name]
                mark = " **(best)**" if lr == best_lr[key] else ""
                lines.append(
                    f"| {OPTIMIZER_LABELS[key]} | {format_lr(lr)}{mark} | {_spread([r.best_ssim for r in runs], '.4f')} "
                    f"| {_spread([r.psnr_at_best for r in runs], '.2f')} | {_steps_cell(runs, target)} | {_drop_cell(runs)} |"
                )
        lines.append("")
    if plan.norms:
        lines += [
            f"## Normalisation layers (Adam, lr {format_lr(grid.norm_lr)})",
            "",
            "Val loss is the final validation's L1 loss in eval mode (batch norm: running statistics);",
            "with batch statistics, batch norm normalises each validation batch by its own statistics",
            "(train mode), as it did during training; the two agree by construction for the other layers.",
            "",
            "| norm | best val SSIM | val PSNR (dB) | steps to target | largest drop | train loss | val loss | val loss, batch statistics |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for norm, name in plan.norms.items():
            runs = summaries[name]
            lines.append(
                f"| {norm} | {_spread([r.best_ssim for r in runs], '.4f')} | {_spread([r.psnr_at_best for r in runs], '.2f')} "
                f"| {_steps_cell(runs, target)} | {_drop_cell(runs)} | {_spread([r.final_train_loss for r in runs], '.4f')} "
                f"| {_spread([r.final_val_loss for r in runs], '.4f')} | {_spread([r.final_val_loss_batch_stats for r in runs], '.4f')} |"
            )
        lines.append("")
    (out / "results.md").write_text("\n".join(lines))
    return {"target": target, "zero_filled": zero_filled, "best_lr": best_lr}


# --- command line ---------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    """``mrirecon study [--quick] [--out DIR] [--root DIR] [--force] [--dry-run]``."""
    parser = argparse.ArgumentParser(
        prog="mrirecon study",
        description="Train one U-Net under a grid of optimisers/learning rates and normalisation layers, "
        "then plot and tabulate the runs. Finished runs are skipped, so an interrupted study resumes.",
    )
    parser.add_argument("--quick", action="store_true", help="the CPU grid: 64x64 demo-style data, small U-Net, 300 steps")
    parser.add_argument("--root", type=Path, default=None, help="TensorBoard root of the runs (default runs/study/quick or runs/study/full)")
    parser.add_argument("--out", type=Path, default=Path("docs/study"), help="folder for optimizers.png, norms.png, results.md")
    parser.add_argument("--force", action="store_true", help="retrain runs that have already finished")
    parser.add_argument("--dry-run", action="store_true", help="list the planned runs and whether each is done, train nothing")
    parser.add_argument("--target-ssim", type=float, default=None, help="SSIM for the steps-to-target column (default: see results.md)")
    args = parser.parse_args(argv)

    grid = QUICK if args.quick else FULL
    root = args.root or Path("runs/study") / grid.name
    plan = plan_runs(grid)
    if args.dry_run:
        print(f"{len(plan.runs)} runs of {grid.steps} steps under {root}; the first is\n  mrirecon {' '.join(fit_args(plan.runs[0], grid, root))}")
        for run in plan.runs:
            print(f"{run_state(run, grid, root):10s} {run.name}/{run.version}  {' '.join(run.args)}")
        return 0
    failed = run_study(plan, root, force=args.force)
    if failed:
        print(f"mrirecon: error: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    command = "mrirecon study" + (" --quick" if args.quick else "")
    numbers = write_report(plan, root, args.out, args.target_ssim, command)
    print(f"wrote {args.out / 'results.md'}, optimizers.png, norms.png (target SSIM {numbers['target']:.4f})")
    return 0
