"""``mrirecon study``: which optimiser and which normalisation layer for a reconstruction U-Net.

Trains the same U-Net on the same data for the same number of steps under a grid of

* optimisers (SGD with momentum 0.9, RMSprop, Adam, AdamW), each over a few learning rates,
  with the configuration's normalisation;
* normalisation layers (group, batch, instance, layer, none) with Adam at one learning rate,

over several seeds. Every run goes through the real ``mrirecon fit`` path
(:func:`mrirecon.api.fit`, in-process, the same config parser) with overrides of a base config,
so the study measures exactly what users run, and logs to TensorBoard under one
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

import sys
from pathlib import Path

from mrirecon.commands.arguments import ArgumentParser
from mrirecon.commands.study.events import RunSummary, load_scalars, summarise_run
from mrirecon.commands.study.grid import FULL, OPTIMIZERS, QUICK, QUICK_DATA, Grid, Plan, Run, as_command_line, fit_overrides, format_lr, plan_runs
from mrirecon.commands.study.report import TARGET_FRACTION, write_report
from mrirecon.commands.study.runner import fit_config, run_state, run_study

__all__ = [
    "FULL", "OPTIMIZERS", "QUICK", "QUICK_DATA", "TARGET_FRACTION", "Grid", "Plan", "Run", "RunSummary",
    "as_command_line", "fit_config", "fit_overrides", "format_lr", "load_scalars", "main", "plan_runs", "run_state", "run_study", "summarise_run",
    "write_report",
]


def main(argv: list[str]) -> int:
    """``mrirecon study [--quick] [--out DIR] [--root DIR] [--force] [--dry_run]``."""
    parser = ArgumentParser(
        prog="mrirecon study",
        description="Train one U-Net under a grid of optimisers/learning rates and normalisation layers, "
        "then plot and tabulate the runs. Finished runs are skipped, so an interrupted study resumes.",
    )
    parser.add_argument("--quick", action="store_true", help="the CPU grid: 64x64 demo-style data, small U-Net, 300 steps")
    parser.add_argument("--root", type=Path, default=None, help="TensorBoard root of the runs (default runs/study/quick or runs/study/full)")
    parser.add_argument("--out", type=Path, default=Path("docs/study"), help="folder for optimizers.png, norms.png, results.md")
    parser.add_argument("--force", action="store_true", help="retrain runs that have already finished")
    parser.add_argument("--dry_run", "--dry-run", dest="dry_run", action="store_true",
                        help="list the planned runs and whether each is done, train nothing")
    parser.add_argument("--target_ssim", "--target-ssim", dest="target_ssim", type=float, default=None,
                        help="SSIM for the steps-to-target column (default: see results.md)")
    args = parser.parse_args(argv)

    grid = QUICK if args.quick else FULL
    root = args.root or Path("runs/study") / grid.name
    plan = plan_runs(grid)
    if args.dry_run:
        print(f"{len(plan.runs)} runs of {grid.steps} steps under {root}; the first is\n  mrirecon fit --config {grid.config} "
              f"{as_command_line(fit_overrides(plan.runs[0], grid, root))}")
        for run in plan.runs:
            print(f"{run_state(run, grid, root):10s} {run.name}/{run.version}  {as_command_line(run.overrides)}")
        return 0
    failed = run_study(plan, root, force=args.force)
    if failed:
        print(f"mrirecon: error: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    command = "mrirecon study" + (" --quick" if args.quick else "")
    numbers = write_report(plan, root, args.out, args.target_ssim, command)
    print(f"wrote {args.out / 'results.md'}, optimizers.png, norms.png (target SSIM {numbers['target']:.4f})")
    return 0
