"""What a study trains: the grids of optimisers, learning rates and normalisation layers, and
the config of each run (the study's base config with the run's overrides, as objects)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from mrirecon.data.simulate import Preset
from mrirecon.models.norms import NORM_CHOICES

# Class path and the arguments besides the learning rate; the rest are PyTorch's defaults.
# Each run replaces the config's whole optimizer entry; AdamW's weight decay is given all the
# same, since switching class_path on the command line would keep Adam's weight_decay of 0.
OPTIMIZERS: dict[str, tuple[str, dict[str, float]]] = {
    "sgd": ("torch.optim.SGD", {"momentum": 0.9}),
    "rmsprop": ("torch.optim.RMSprop", {}),
    "adam": ("torch.optim.Adam", {}),
    "adamw": ("torch.optim.AdamW", {"weight_decay": 0.01}),
}
OPTIMIZER_LABELS = {"sgd": "SGD (momentum 0.9)", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"}


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
        overrides: Dotted config overrides for every run (data, model size).
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
    overrides: Mapping[str, Any] = field(default_factory=dict)
    data: Optional[tuple[str, Preset]] = None
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        # A run is finished when it logged the validation after its last step.
        if self.steps % self.val_every:
            raise ValueError(f"val_every ({self.val_every}) must divide steps ({self.steps})")


QUICK_DATA = "data/study_quick"
QUICK = Grid(
    name="quick",
    config="configs/demo_unet.yaml",
    steps=300,
    val_every=50,
    log_every=5,
    seeds=(0, 1, 2),
    # Centred on the best rate of a one-seed 300-step pilot on this data.
    lrs={"sgd": (1e-2, 3e-2, 1e-1), "rmsprop": (3e-4, 1e-3, 3e-3), "adam": (1e-3, 3e-3, 1e-2), "adamw": (1e-3, 3e-3, 1e-2)},
    overrides={
        "data.data_path": QUICK_DATA,
        "model.net.init_args.chans": 8,
        "model.net.init_args.num_pool_layers": 3,
        # Loading a 64x64 batch takes a fifth of a step; workers would only compete for the cores.
        "data.num_workers": 0,
    },
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
    """One training run: a configuration (its ``name`` and config overrides) and a seed."""

    name: str
    seed: int
    overrides: Mapping[str, Any]

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
    by_overrides: dict[str, str] = {}

    def add(name: str, overrides: dict[str, Any]) -> str:
        key = json.dumps(overrides, sort_keys=True)
        if key in by_overrides:
            return by_overrides[key]
        by_overrides[key] = name
        plan.runs.extend(Run(name, seed, overrides) for seed in grid.seeds)
        return name

    def optimizer_args(key: str, lr: float, norm: str) -> dict[str, Any]:
        class_path, kwargs = OPTIMIZERS[key]
        return {"optimizer": {"class_path": class_path, "init_args": {"lr": lr, **kwargs}},
                "model.net.init_args.norm": norm}

    for key, lrs in grid.lrs.items():
        plan.optimizers[key] = {
            lr: add(f"opt-{key}-lr{format_lr(lr)}", optimizer_args(key, lr, grid.base_norm)) for lr in lrs
        }
    for norm in grid.norms:
        plan.norms[norm] = add(f"norm-{norm}", optimizer_args("adam", grid.norm_lr, norm))
    # Every configuration's first seed before any second one: a study cut short still covers the grid.
    plan.runs.sort(key=lambda run: grid.seeds.index(run.seed))
    return plan


def fit_overrides(run: Run, grid: Grid, root: Path) -> dict[str, Any]:
    """The config overrides of a run's ``fit``: the grid's, the run's, its budget and its folder."""
    return {
        **grid.overrides, **run.overrides,
        "seed_everything": run.seed,
        "trainer.max_steps": grid.steps,
        # The budget is steps; epochs must not end a run first.
        "trainer.max_epochs": -1,
        "trainer.check_val_every_n_epoch": None,
        "trainer.val_check_interval": grid.val_every,
        "trainer.log_every_n_steps": grid.log_every,
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        "trainer.callbacks": [{"class_path": "mrirecon.commands.study.probe.BatchStatsProbe"}],
        "trainer.logger": {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                           "init_args": {"save_dir": str(root), "name": run.name, "version": run.version,
                                         "default_hp_metric": False}},
    }


def as_command_line(overrides: Mapping[str, Any]) -> str:
    """Overrides as ``mrirecon fit`` flags, for people to read (``--trainer.max_steps 300``)."""
    return " ".join(f"--{key} {json.dumps(value) if not isinstance(value, str) else value}"
                    for key, value in overrides.items())
