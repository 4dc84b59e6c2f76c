"""Training a study's runs, each an ordinary fit (:func:`mrirecon.api.fit`), skipping finished ones."""

from __future__ import annotations

import contextlib
import shutil
import time
import traceback
from pathlib import Path

import torch
from tqdm import tqdm

from mrirecon.commands.study.events import load_scalars
from mrirecon.commands.study.grid import Grid, Plan, Run, fit_overrides
from mrirecon.errors import TrainingDiverged, UserError


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


def fit_config(run: Run, grid: Grid, root: Path):
    """A run's :class:`~mrirecon.api.RunConfig`: the grid's config file with the run's overrides
    (its callbacks added to the config's own)."""
    from mrirecon import api

    base = api.RunConfig.load(grid.config)
    overrides = fit_overrides(run, grid, root)
    overrides["trainer.callbacks"] = [*(base.get("trainer.callbacks") or []), *overrides["trainer.callbacks"]]
    return base.override(overrides)


def run_study(plan: Plan, root: Path, force: bool = False) -> list[str]:
    """Trains every run of a plan that has not finished yet.

    Args:
        plan: The runs.
        root: TensorBoard root folder.
        force: Retrain finished runs too.

    Returns:
        Names (``name/version``) of runs that failed; their tracebacks are printed.
    """
    from mrirecon import api

    grid = plan.grid
    _ensure_data(grid)
    if grid.threads is not None:
        torch.set_num_threads(grid.threads)
    failed = []
    trained = 0
    start = time.perf_counter()
    # One overall bar with an ETA; each run's own lines go to <run>.log beside its folder.
    bar = tqdm(plan.runs, desc="study", unit="run")
    for run in bar:
        run_dir = root / run.name / run.version
        state = "todo" if force else run_state(run, grid, root)
        if state == "done":
            continue
        # A partial or forced run restarts from scratch: appending to old events would mix runs.
        shutil.rmtree(run_dir, ignore_errors=True)
        bar.set_postfix_str(f"{run.name}/{run.version}")
        trained += 1
        log = run_dir.with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(log, "w") as out, contextlib.redirect_stdout(out):
                api.fit(fit_config(run, grid, root))
        except TrainingDiverged as err:  # a diverging configuration is a result, not the end
            tqdm.write(f"{run.name}/{run.version}: {err}")
            failed.append(f"{run.name}/{run.version}")
        except UserError:
            raise
        except Exception:  # noqa: BLE001 - one failing configuration must not end the study
            with open(log, "a") as out:
                traceback.print_exc(file=out)
            tqdm.write(f"{run.name}/{run.version}: failed, see {log}")
            failed.append(f"{run.name}/{run.version}")
    bar.close()
    print(f"study: trained {trained} of {len(plan.runs)} runs in {time.perf_counter() - start:.0f} s "
          f"({len(plan.runs) - trained} were done already)", flush=True)
    return failed
