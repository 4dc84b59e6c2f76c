"""The study's figures and ``results.md``, from the runs' event files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from mrirecon.commands.study.events import RunSummary, load_scalars, summarise_run
from mrirecon.commands.study.grid import OPTIMIZER_LABELS, Plan, format_lr
from mrirecon.errors import UserError

# Steps to a target: the target is the zero-filled SSIM plus this fraction of the largest gain
# over it that any configuration reached, i.e. "most of the way to the best result".
TARGET_FRACTION = 0.8
# Exponential moving average weight for training-loss curves, as TensorBoard's smoothing slider.
SMOOTHING = 0.8


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
