"""The Python API: train, evaluate, run baselines and report from a script or notebook.

The commands are built on it: ``mrirecon baseline``, ``report`` and ``study`` call these
functions with objects, and ``fit``/``test``/``predict`` here go through the same config parser
(:class:`mrirecon.lightning.cli.MriReconCLI`, LightningCLI) as ``mrirecon fit|test|predict``, so
a config is validated, resolved and saved exactly as on the command line. Lightning is imported
only when a function runs (``mrirecon --help`` and the light commands stay Lightning-free).

A config is a :class:`RunConfig`: what a YAML config file holds, with dotted overrides::

    from mrirecon import api

    config = api.RunConfig.load("configs/demo.yaml", {"trainer.max_steps": 50})
    run = api.fit(config)                                   # FitResult: run folder, checkpoints
    results = api.test(config, run.last_checkpoint)         # EvaluationResults
    results.mean("unet", 4, "ssim")
    zero_filled = api.baseline(config, "zero-filled", output_dir="runs/zf")
    report = api.report(config, [api.Method("zero-filled", "runs/zf"),
                                 api.Method("unet", run.last_checkpoint)], out="runs/report")
    model = api.TrainedModel.from_checkpoint(run.last_checkpoint)   # reconstruct arrays directly

Accelerations are numbers everywhere (``4.0``); ``"4x"`` is a label in tables and file names.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import yaml

from mrirecon.errors import UserError

if TYPE_CHECKING:  # imported for annotations only: the functions import them when they run
    from mrirecon.evaluation.results import EvaluationResults
    from mrirecon.lightning.cli import EvaluationRequest, MriReconCLI
    from mrirecon.methods.cs_tv import CSTVSettings

__all__ = [
    "BASELINE_METHODS",
    "TrainedModel",
    "FitResult",
    "Method",
    "Report",
    "RunConfig",
    "baseline",
    "fit",
    "import_state_dict",
    "predict",
    "report",
    "test",
]

BASELINE_METHODS = ("zero-filled", "cs-tv")
_BASELINE_NETS = {"zero-filled": "mrirecon.methods.ZeroFilled", "cs-tv": "mrirecon.methods.CSTV"}


def __getattr__(name: str) -> Any:
    # TrainedModel (a checkpoint as a reconstruction method, mrirecon.methods.trained) is part of
    # the API; imported on first use so that importing the API stays light.
    if name == "TrainedModel":
        from mrirecon.methods.trained import TrainedModel

        return TrainedModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- configs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """A run's config as nested plain data, what a YAML config file holds.

    Attributes:
        values: the config (``model``, ``data``, ``trainer``, ``optimizer``, ``cs_tv``, ...).
        source: the file it was read from, recorded in results (None: built in Python).
    """

    values: Mapping[str, Any] = field(default_factory=dict)
    source: Optional[Path] = None

    @classmethod
    def load(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> "RunConfig":
        """Reads a YAML config and applies dotted ``overrides`` (``{"data.batch_size": 4}``).

        Raises:
            UserError: the file cannot be read or is not a YAML mapping.
        """
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text())
        except OSError as err:
            raise UserError(f"{path}: cannot read the config ({err.strerror or err})") from None
        except yaml.YAMLError as err:
            raise UserError(f"{path}: not a YAML config ({str(err).splitlines()[0]})") from None
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise UserError(f"{path}: a config is a YAML mapping of sections, got {type(values).__name__}")
        return cls(values, path).override(overrides or {})

    @classmethod
    def from_arguments(cls, path: str | Path, arguments: Sequence[str] = ()) -> "RunConfig":
        """A config file with command-line overrides (``["--data.data_path", "DIR"]``), parsed
        and resolved by the one config parser exactly as ``mrirecon fit`` parses them.

        Raises:
            UserError: an unknown key or a bad value, as one line.
        """
        from mrirecon.lightning.cli import read_config

        return cls(read_config(["--config", str(path), *arguments]), Path(path))

    def override(self, overrides: Mapping[str, Any]) -> "RunConfig":
        """A copy with dotted keys set (``{"model.net.init_args.chans": 8}``); a whole section
        given as a mapping (``{"optimizer": {"class_path": ..., "init_args": ...}}``) replaces it."""
        values = copy.deepcopy(dict(self.values))
        for key, value in overrides.items():
            *parents, last = str(key).split(".")
            node = values
            for part in parents:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            node[last] = copy.deepcopy(value)
        return replace(self, values=values)

    def get(self, key: str, default: Any = None) -> Any:
        """A dotted key's value (``"data.test_split"``), or ``default``."""
        node: Any = self.values
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node


def _as_config(config: RunConfig | str | Path) -> RunConfig:
    return config if isinstance(config, RunConfig) else RunConfig.load(config)


def _run(subcommand: str, config: RunConfig, request: "EvaluationRequest | None" = None,
         **arguments: Any) -> "MriReconCLI":
    """Runs ``mrirecon <subcommand>`` on a config through the one parser, in this process."""
    from mrirecon.lightning.cli import build_cli

    section = {**copy.deepcopy(dict(config.values)), **{k: v for k, v in arguments.items() if v is not None}}
    return build_cli({"subcommand": subcommand, subcommand: section}, run=True, request=request)


def _parsed(config: RunConfig) -> "MriReconCLI":
    """The config parsed and its objects built, nothing run (the DataModule's splits, settings)."""
    from mrirecon.lightning.cli import build_cli

    return build_cli(copy.deepcopy(dict(config.override({"trainer.logger": False}).values)), run=False)


# --- training and evaluation ------------------------------------------------------------------
@dataclass(frozen=True)
class FitResult:
    """What a fit leaves: its run folder and checkpoints.

    Attributes (absolute paths):
        run_dir: ``<save_dir>/<name>/version_N`` (TensorBoard events, ``config.yaml``).
        last_checkpoint: ``checkpoints/last.ckpt`` (None with checkpointing off).
        best_checkpoint: the best checkpoint by ``checkpoint.monitor`` (None if none was saved).
        global_step: optimiser steps taken.
        metrics: the last logged value of every epoch-level metric (``val/ssim``, ...).
    """

    run_dir: Optional[Path]
    last_checkpoint: Optional[Path]
    best_checkpoint: Optional[Path]
    global_step: int
    metrics: dict[str, float]


def fit(config: RunConfig | str | Path, ckpt_path: str | Path | None = None) -> FitResult:
    """Trains the config's model (``mrirecon fit``); ``ckpt_path`` resumes (or ``"last"``)."""
    config = _as_config(config)
    cli = _run("fit", config, ckpt_path=str(ckpt_path) if ckpt_path else None)
    trainer = cli.trainer
    last = next((Path(c.path).resolve() for c in trainer.callbacks if getattr(c, "path", None)), None)
    best = next((Path(c.best_model_path).resolve() for c in trainer.checkpoint_callbacks
                 if getattr(c, "best_model_path", "")), None)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return FitResult(Path(trainer.log_dir).resolve() if trainer.log_dir else None,
                     last if last and last.is_file() else None, best, int(trainer.global_step), metrics)


def test(config: RunConfig | str | Path, ckpt_path: str | Path, output_dir: str | Path | None = None,
         split: str | None = None, show: bool = True) -> "EvaluationResults":
    """Scores a checkpoint on the test split (``mrirecon test``): per-volume SSIM/PSNR/NMSE of the
    network and of its zero-filled input, written to ``metrics.csv`` and ``summary.json``."""
    from mrirecon.lightning.cli import EvaluationRequest

    config = _with_split(_as_config(config), split)
    cli = _run("test", config, EvaluationRequest(show=show), ckpt_path=str(ckpt_path),
               output_dir=str(output_dir) if output_dir else None)
    return _results_of(cli)


def predict(config: RunConfig | str | Path, ckpt_path: str | Path, output_dir: str | Path | None = None,
            split: str | None = None, show: bool = True) -> Path:
    """Reconstructs the test split with a checkpoint (``mrirecon predict``); returns the folder."""
    from mrirecon.lightning.cli import EvaluationRequest

    config = _with_split(_as_config(config), split)
    cli = _run("predict", config, EvaluationRequest(show=show), ckpt_path=str(ckpt_path),
               output_dir=str(output_dir) if output_dir else None)
    return cli.output_dir


def _with_split(config: RunConfig, split: str | None) -> RunConfig:
    return config.override({"data.test_split": split}) if split else config


def _results_of(cli: "MriReconCLI") -> "EvaluationResults":
    if cli.results is None:
        raise UserError(f"{cli.datamodule.split_folder(cli.datamodule.test_split)}: no volume was scored")
    return cli.results


# --- baselines --------------------------------------------------------------------------------
def baseline(config: RunConfig | str | Path, method: str, splits: Sequence[str] | None = None,
             output_dir: str | Path | None = None, lam_grid: Sequence[float] | None = None,
             tune_split: str = "val", progress: bool = True) -> dict[str, "EvaluationResults | Path"]:
    """Zero-filled or CS-TV reconstructions of each split, scored like :func:`test`.

    CS-TV's settings come from the config's ``cs_tv:`` section; with ``lam_grid`` its relative
    λ is chosen per acceleration on ``tune_split`` first (``tuning.csv``), once for all splits.
    One split is written into ``output_dir``, several each into ``output_dir/<split>``
    (default ``runs/baselines/<config name>/<method>``), reconstructions under
    ``reconstructions/`` in the submission format.

    Returns:
        split -> its results (a split without targets: the folder of its reconstructions).
    """
    from mrirecon.core.atomic import staged_folder

    config = _as_config(config)
    if method not in BASELINE_METHODS:
        raise UserError(f"--method {method!r}: one of {', '.join(BASELINE_METHODS)}")
    if lam_grid and method != "cs-tv":
        raise UserError("--lam_grid: only cs-tv has a lambda")
    name = config.source.stem if config.source else "config"
    out = Path(output_dir) if output_dir else Path("runs") / "baselines" / name / method
    # Built in a staging folder and swapped in whole, like a report: a baseline stopped half-way
    # (a kill, a full disk, Ctrl-C, a split refused after the tuning) leaves the previous one as it was.
    with staged_folder(out) as work:
        return _run_baseline(config, method, splits, work, lam_grid, tune_split, progress)


def _run_baseline(config: RunConfig, method: str, splits: Sequence[str] | None, out: Path,
                  lam_grid: Sequence[float] | None, tune_split: str, progress: bool) -> dict[str, "EvaluationResults | Path"]:
    from mrirecon.core.atomic import check_writable_folder
    from mrirecon.methods.cs_tv import CSTVSettings

    settings = CSTVSettings(**(config.get("cs_tv") or {}))
    tuning: dict[str, Any] = {}
    if lam_grid:
        chosen = tune_lambda(config, out, list(lam_grid), tune_split, progress)
        settings = replace(settings, lam=chosen)
        tuning = {"lam_grid": list(lam_grid), "tuned_on": tune_split, "lam_chosen": chosen}
    names = list(dict.fromkeys(splits or [config.get("data.test_split") or "test"]))
    outputs = {}
    for split in names:
        target = out if len(names) == 1 else check_writable_folder(out / split)
        outputs[split] = _baseline_split(config, method, settings, split, target, progress, tuning)
    return outputs


def tune_lambda(config: RunConfig, output_dir: Path, grid: list[float], split: str = "val",
                progress: bool = True) -> dict[int, float]:
    """CS-TV's relative λ per acceleration: the best mean SSIM of ``grid`` on ``split``.

    Writes ``<output_dir>/tuning.csv`` (mean SSIM, PSNR, NMSE of every λ and acceleration).
    """
    from mrirecon.core import atomic
    from mrirecon.methods.cs_tv import CSTVSettings

    if not grid or any(lam < 0 for lam in grid):
        raise UserError(f"--lam_grid: needs non-negative values, got {grid}")
    base = CSTVSettings(**(config.get("cs_tv") or {}))
    scores: dict[float, dict[float, dict]] = {}
    for lam in grid:
        settings = replace(base, lam={}, lam_default=lam)
        results = _baseline_split(config, "cs-tv", settings, split, output_dir / "tuning" / f"lam_{lam:g}", progress, {})
        if isinstance(results, Path):
            raise UserError(f"--tune_split {split}: its files have no targets to tune lambda on")
        scores[lam] = results.summary()["cs-tv"]
    accelerations = sorted({acc for by_acc in scores.values() for acc in by_acc})
    chosen = {int(acc): max(grid, key=lambda lam: scores[lam][acc]["ssim"]["mean"]) for acc in accelerations}
    rows = ["lam,acceleration,ssim_mean,psnr_mean,nmse_mean,chosen"]
    for lam in grid:
        for acc in accelerations:
            e = scores[lam][acc]
            rows.append(f"{lam:g},{acc:g}x,{e['ssim']['mean']:.6g},{e['psnr']['mean']:.6g},{e['nmse']['mean']:.6g},"
                        f"{int(chosen[int(acc)] == lam)}")
    atomic.write_text(output_dir / "tuning.csv", "\n".join(rows) + "\n")
    print(f"cs-tv lambda chosen on {split}: " + ", ".join(f"{acc}x {lam:g}" for acc, lam in chosen.items()))
    return chosen


def _baseline_split(config: RunConfig, method: str, settings: "CSTVSettings", split: str, out: Path,
                    progress: bool, tuning: dict) -> "EvaluationResults | Path":
    """One split through ``test`` (or ``predict`` when its files have no targets) with a
    parameter-free method, its reconstructions beside the results."""
    from dataclasses import asdict

    from mrirecon.core.atomic import final_path
    from mrirecon.lightning.cli import EvaluationRequest, lightning_quietly

    net: dict[str, Any] = {"class_path": _BASELINE_NETS[method]}
    overrides: dict[str, Any] = {"model.net": net, "model.method_name": method, "data.test_split": split,
                                 "trainer.logger": False, "trainer.enable_progress_bar": progress}
    details: dict[str, Any] = {"command": "baseline", "method": method,
                               "config_file": str(config.source) if config.source else None}
    if method == "cs-tv":
        net["init_args"] = {"settings": asdict(settings)}
        overrides["data.batch_size"] = settings.batch_size  # CS-TV solves this many slices together
        details["cs_tv"] = {"iterations": settings.iterations, "lam": settings.lam,
                            "lam_default": settings.lam_default, "sensitivities": settings.sensitivities,
                            "output": settings.output, **tuning}
    run_config = config.override(overrides)
    # The split's files are scanned first (cached) to choose between scoring and reconstructing.
    with lightning_quietly():
        dm = _parsed(run_config).datamodule
        volumes = dm.evaluation_volumes()
        without = [v.path for v in volumes if v.target_key is None]
        if without and len(without) < len(volumes):
            raise UserError(f"{without[0]}: has no target while other files of {dm.split_folder(split)} have one; "
                            "a split is scored whole or reconstructed only: move the target-less files to a split of their own")
        scored = not without
        if not scored:
            print(f"{dm.split_folder(split)}: no targets (test/challenge files): reconstructions only, no metrics")
        if scored:
            cli = _run("test", run_config, EvaluationRequest(details, out / "reconstructions"), output_dir=str(out))
            result: EvaluationResults | Path = _results_of(cli)
        else:  # test/challenge files without targets: reconstructions only
            cli = _run("predict", run_config, EvaluationRequest(details, show=False),
                       output_dir=str(out / "reconstructions"))
            result = final_path(cli.output_dir)
    if cli.trainer.is_global_zero:
        print(f"reconstructions: {final_path(out / 'reconstructions')}")
    return result


# --- weights trained elsewhere ----------------------------------------------------------------
def import_state_dict(state_dict: str | Path, config: RunConfig | str | Path, out: str | Path) -> Path:
    """A mrirecon checkpoint of weights trained elsewhere (``mrirecon import``).

    ``state_dict`` is a file of ``torch.save(model.state_dict())`` of a network whose state dict
    ours loads (fastMRI's published ``fastmri.models.Unet`` and ``VarNet`` files, with
    ``norm: instance`` for the U-Net), or a Lightning checkpoint holding one. ``config`` says
    with which settings it was trained: ``model.net`` must build the same network, and its
    ``data`` section is what test and predict use with it. The checkpoint (at step 0, with the
    source file's name and sha256 under ``imported_from``) is what ``fit`` writes: test,
    predict, reconstruct, report and export read it alike.

    Raises:
        UserError: the file is not a state dict, its weights do not fit the config's network
            (the missing, unexpected and reshaped entries named), or ``out`` is not a ``.ckpt``
            path or would overwrite an input.
    """
    from mrirecon.core.atomic import check_outputs
    from mrirecon.core.checkpoint_files import read_state_dict
    from mrirecon.evaluation.provenance import file_sha256
    from mrirecon.lightning.checkpoints import save_untrained_checkpoint
    from mrirecon.lightning.cli import lightning_quietly

    config, state_dict, out = _as_config(config), Path(state_dict), Path(out)
    if out.suffix != ".ckpt":
        raise UserError(f"{out}: the checkpoint's name must end in .ckpt (what test, report and reconstruct recognise)")
    check_outputs([(out, state_dict)], [state_dict, *([config.source] if config.source else [])], "choose another --out")
    weights = read_state_dict(state_dict)
    with lightning_quietly():  # its notes on seeds and devices are about training, not this
        cli = _parsed(config)
        net = cli.model.net
        _check_weights_fit(net, weights, state_dict, config)
        net.load_state_dict(weights)
        record = {"file": str(state_dict), "sha256": file_sha256(state_dict),
                  "config_file": str(config.source) if config.source else None}
        save_untrained_checkpoint(cli.trainer, cli.model, cli.datamodule, out, record)
    return out


def _check_weights_fit(net: Any, weights: Mapping[str, Any], source: Path, config: RunConfig) -> None:
    """Refuses weights that do not fit ``net`` in one line that names what differs."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    reshaped = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or reshaped):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} of another shape (first {k}: {list(weights[k].shape)} in the file, "
                     f"{list(expected[k].shape)} in the network)")
    where = f" in {config.source}" if config.source else ""
    hint = ""
    if getattr(net, "norm", "instance") != "instance":
        hint = f" (fastMRI's networks use norm: instance, this one norm: {net.norm})"
    raise UserError(f"{source}: the weights do not fit the config's {type(net).__name__}: " + ", ".join(parts)
                    + f"; set model.net{where} to the settings they were trained with{hint}")


# --- reports ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    """A method of a report: a folder of reconstructions (submission format, from ``predict``
    or ``baseline``) or a checkpoint; ``{split}`` in the path names the split."""

    name: str
    source: str | Path

    def __post_init__(self) -> None:
        # The name labels a table row and names the folder of a checkpoint's predictions.
        if not self.name.strip() or self.name in (".", "..") or any(c in self.name for c in "/\\\0"):
            raise UserError(f"--method {self.name!r}={self.source}: a method needs a name without '/' (cs-tv, unet, ...)")

    @classmethod
    def parse(cls, text: str) -> "Method":
        """``NAME=PATH`` as ``mrirecon report --method`` takes it."""
        if "=" not in text:
            raise UserError(f"--method {text!r}: expected NAME=PATH (a reconstruction folder or a .ckpt)")
        name, path = text.split("=", 1)
        return cls(name, Path(path))


@dataclass(frozen=True)
class Report:
    """A report's tables: split -> method -> acceleration -> ``{"runs", "volumes", metric:
    {"mean", "min", "max"}}`` (the mean over a method's runs of each run's mean over volumes),
    and the files written (empty tables on the other processes of a distributed run: its lead
    scores)."""

    by_split: dict[str, dict[str, dict[float, dict[str, Any]]]]
    results: dict[str, "EvaluationResults"]
    out: Path


def report(config: RunConfig | str | Path, methods: Sequence[Method], splits: Sequence[str] | None = None,
           out: str | Path = "runs/report", acceleration: float | None = None,
           slices: Sequence[tuple[str, int]] | None = None, progress: bool = True,
           protocol: str = "fastmri") -> Report:
    """Scores every method on each split and writes ``report.md``, ``report.csv``,
    ``metrics.csv``, ``summary.json`` and ``comparison.png`` (``<out>/<split>/`` for several).

    A name given several times is several runs of one method (training seeds): its rows show
    the mean over runs and their range. ``protocol``: ``fastmri`` (as ``test`` scores) or
    ``cmrxrecon`` (the CMRxRecon 2023 leaderboard's images and metrics,
    :mod:`mrirecon.evaluation.cmrxrecon`) or ``cc359`` (the Calgary-Campinas challenge's,
    :mod:`mrirecon.evaluation.cc359`).
    """
    from mrirecon.core import atomic
    from mrirecon.evaluation.results import format_runs_table, format_split_tables

    config = _as_config(config)
    names = list(dict.fromkeys(splits or [None]))
    if slices and len(names) > 1:
        raise UserError("--slices: names the files of one split (sim_test_0000.h5:7); give one --split with it")
    if not methods:
        raise UserError("--method: at least one method to report")
    if acceleration is not None and not (math.isfinite(acceleration) and acceleration > 1):
        raise UserError(f"--acceleration {acceleration:g}: an undersampling factor above 1 (4 for 4x)")
    seen: dict[tuple[str, Path], str] = {}
    for method in methods:
        # Runs of one method are seeds: the same folder or checkpoint twice (another spelling, a
        # link) would count one run twice and shrink its range to nothing.
        key = (method.name, Path(str(method.source)).resolve())
        if key in seen:
            raise UserError(f"--method {method.name}={method.source}: the same input as {method.name}={seen[key]}; "
                            "runs of one method must be different runs")
        seen[key] = str(method.source)
    from mrirecon.evaluation.scoring import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol}: one of {', '.join(PROTOCOLS)}")
    out = Path(out)
    _check_report_keeps_its_inputs(out, methods, names, config.get("data.test_split") or "test")
    lead = atomic.is_lead_process()  # of a distributed run: it alone scores, writes and prints
    by_split, results = {}, {}
    # Built in a staging folder and swapped in whole: a failure half-way (a bad --slices found
    # after scoring, a full disk, Ctrl-C) leaves the previous report as it was.
    with atomic.staged_folder(out) as work:
        for split in names:
            target = work if len(names) == 1 else work / split
            name, runs, scored = _report_split(config, split, list(methods), target, acceleration, slices, progress,
                                               protocol)
            by_split[name], results[name] = runs, scored
        if len(names) > 1 and lead:
            sections = "\n\n".join(f"- [{name}]({name}/report.md)" for name in by_split)
            atomic.write_text(work / "report.md", "# Comparison on " + ", ".join(by_split) + "\n\n"
                              + format_split_tables(by_split, markdown=True)
                              + "\n\nSSIM and PSNR (dB), mean over volumes (and over runs, with their range). Every metric, "
                              "the figures and the provenance per split:\n\n" + sections + "\n")
    if not lead:
        return Report(by_split, results, out)
    for name, runs in by_split.items():
        folder = out if len(names) == 1 else out / name
        print(f"\n{name}\n{format_runs_table(runs)}\n{folder / 'report.md'}\n{folder / 'report.csv'}\n"
              f"{folder / 'comparison.png'}")
    if len(names) > 1:
        print(f"\n{format_split_tables(by_split)}\n\n{out / 'report.md'}")
    return Report(by_split, results, out)


# What a report puts into --out (into --out/<split>/ for several splits, beside a report.md).
REPORT_ENTRIES = ("metrics.csv", "summary.json", "report.md", "report.csv", "comparison.png", "predictions")


def _check_report_keeps_its_inputs(out: Path, methods: Sequence[Method], splits: list[str | None],
                                   default_split: str) -> None:
    """Refuses, before any work, an ``out`` whose swap would replace what a method keeps: a
    baseline's own metrics.csv and summary.json when ``out`` is its folder, or a method folder
    or checkpoint that is (or is under) an entry the report writes."""
    entries = REPORT_ENTRIES if len(splits) == 1 else (*[str(s) for s in splits], "report.md")
    resolved = out.resolve()
    for method in methods:
        for split in splits:
            source = Path(str(method.source).replace("{split}", split or default_split))
            kept = source.resolve()
            replaced = next((entry for entry in entries if kept.is_relative_to(resolved / entry)), None)
            if kept == resolved or replaced:
                what = f"{replaced} over" if replaced else "its files into"
                raise UserError(f"--out {out}: would write {what} {source}, read as method {method.name!r}; "
                                "choose another --out")


def run_names(methods: Sequence[Method]) -> tuple[list[str], dict[str, list[str]]]:
    """A unique name per run (``name[i]`` for a repeated name) and the runs of each method."""
    counts: dict[str, int] = {}
    for method in methods:
        counts[method.name] = counts.get(method.name, 0) + 1
    seen: dict[str, int] = {}
    names, groups = [], {}
    for method in methods:
        seen[method.name] = seen.get(method.name, 0) + 1
        run = f"{method.name}[{seen[method.name]}]" if counts[method.name] > 1 else method.name
        names.append(run)
        groups.setdefault(method.name, []).append(run)
    return names, groups


def write_summary_csv(runs: Mapping[str, Mapping[float, Mapping[str, Any]]], path: Path) -> None:
    """One row per method and acceleration: mean over runs (and min, max) of each metric."""
    from mrirecon.core import atomic
    from mrirecon.evaluation.results import METRICS, acceleration_label

    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["method", "acceleration", "runs", "volumes",
                     *(f"{m}_{s}" for m in METRICS for s in ("mean", "min", "max"))])
    for method, by_acc in runs.items():
        for acc, e in by_acc.items():
            writer.writerow([method, acceleration_label(acc), e["runs"], e["volumes"],
                             *(f"{e[m][s]:.6g}" for m in METRICS for s in ("mean", "min", "max"))])
    atomic.write_text(path, rows.getvalue())


def _network_of_checkpoint(path: Path) -> dict[str, Any]:
    """The network and loss a checkpoint records, as config overrides: the report's config says
    which data and masks, the checkpoint which network (whose weights it holds)."""
    from mrirecon.core.checkpoint_files import peek_checkpoint

    saved = peek_checkpoint(path).get("hyper_parameters") or {}
    overrides: dict[str, Any] = {}
    if isinstance(saved.get("net"), dict):
        overrides["model.net"] = saved["net"]
    if saved.get("loss") in ("l1", "ssim"):
        overrides["model.loss"] = saved["loss"]
    return overrides


def _report_split(config: RunConfig, split: str | None, given: list[Method], out: Path,
                  acceleration: float | None, slices: Sequence[tuple[str, int]] | None,
                  progress: bool, protocol: str = "fastmri") -> tuple[str, dict, "EvaluationResults"]:
    """Scores every method on one split; returns the split's name, its runs and results.

    ``out``: where the files are written now (a staging folder); the files and results record
    where they will be (:func:`~mrirecon.core.atomic.final_path`).
    """
    from mrirecon.core import atomic
    from mrirecon.evaluation.figures import comparison_figure
    from mrirecon.evaluation.provenance import dataset_record, provenance
    from mrirecon.evaluation.results import (
        EvaluationResults,
        acceleration_label,
        format_acquisition_table,
        format_runs_table,
        summarize_runs,
        write_results,
    )
    from mrirecon.evaluation.scoring import (
        WHOLE_IMAGE_PROTOCOLS,
        check_complete_coverage,
        load_array,
        reconstruction_files,
        reconstruction_root,
        score_folder,
    )

    out.mkdir(parents=True, exist_ok=True)
    config = _with_split(config, split)
    cli = _parsed(config)
    dm = cli.datamodule
    split = dm.test_split
    volumes = {v.path.name: v for v in dm.evaluation_volumes()}
    if protocol == "cmrxrecon":
        # Checked before any checkpoint reconstructs the split: every volume has its grid.
        from mrirecon.evaluation.cmrxrecon import ranking_grid

        for info in volumes.values():
            ranking_grid(info.path, info.num_slices)
    if protocol in WHOLE_IMAGE_PROTOCOLS and dm.crop_size is not None:
        raise UserError(f"--protocol {protocol}: scores the whole image itself; data.crop_size {list(dm.crop_size)} "
                        "would score a crop of a crop (set --data.crop_size null)")
    # The figure's settings are checked before any checkpoint reconstructs the split.
    if slices:
        for fname, index in slices:
            if fname not in volumes:
                raise UserError(f"--slices {fname}:{index}: {fname} is not a volume of {dm.split_folder(split)}")
            if not 0 <= index < volumes[fname].num_slices:
                raise UserError(f"--slices {fname}:{index}: {fname} has slices 0 to {volumes[fname].num_slices - 1}")
    if acceleration is not None and not dm.writes_flat_folders():
        drawn = [float(acc) for _, acc in dm.masks.pairs]
        if float(acceleration) not in drawn:
            raise UserError(f"--acceleration {acceleration:g}: {dm.split_folder(split)} is masked at "
                            + ", ".join(acceleration_label(a) for a in drawn))

    names, groups = run_names(given)
    roots: dict[str, Path] = {}
    for run, method in zip(names, given):
        path = Path(str(method.source).replace("{split}", split))
        if path.suffix == ".ckpt":
            if not path.is_file():
                raise UserError(f"{path}: no such checkpoint file")
            path = predict(config.override(_network_of_checkpoint(path)), path, out / "predictions" / run, split, show=False)
        elif not path.is_dir():
            raise UserError(f"{path}: no such folder")
        roots[run] = reconstruction_root(path)
    if not atomic.is_lead_process():
        # The other processes of a distributed run help reconstruct; the lead scores and writes.
        return split, {}, EvaluationResults({}, {}, split, atomic.final_path(out))
    # Unlike sets are refused before anything is scored.
    masked_at = None if dm.writes_flat_folders() else [float(acc) for _, acc in dm.masks.pairs]
    check_complete_coverage({run: reconstruction_files(root) for run, root in roots.items()}, volumes, masked_at)
    per_volume, files = {}, {}
    for run, root in roots.items():
        per_volume[run], files[run] = score_folder(root, volumes, dm.crop_size, run, progress=progress,
                                                   protocol=protocol)
    record = provenance(cli.config.as_dict(), None,
                        dataset_record(dm.data_path, dm.split_folder(split), [v.path for v in volumes.values()]))
    acquisitions = {name: v.acquisition for name, v in volumes.items()}
    summary = write_results(per_volume, out, {"command": "report", "split": split, "protocol": protocol,
                                              "config_file": str(config.source) if config.source else None,
                                              "methods_from": {k: str(atomic.final_path(v)) for k, v in roots.items()},
                                              "provenance": record}, acquisitions)
    runs = summarize_runs(summary["methods"], groups)
    table = format_runs_table(runs, markdown=True)
    several = any(len(r) > 1 for r in groups.values())
    note = "\n\nMean over volumes; for several runs of a method, the mean over runs and (min–max) over runs." if several else ""
    if protocol == "cc359":
        note += ("\n\nScored as the Calgary-Campinas challenge: the outer 50 of 256 slices dropped at each end, each "
                 "slice divided by its reference's maximum, SSIM and PSNR with the two slices' joint range; NMSE "
                 "beside them; VIF not computed (sewar is not a dependency); not comparable with fastMRI's scores.")
    if protocol == "cmrxrecon":
        note += ("\n\nScored as the CMRxRecon 2023 leaderboard: the central 2 slices, the first 3 frames, a centre "
                 "crop of (kx/3, ky/2), each image divided by its maximum; not comparable with fastMRI's scores.")
    if len(set(acquisitions.values())) > 1:
        note += "\n\n## By acquisition\n\n" + format_acquisition_table(summary["by_acquisition"], markdown=True)
    software = record["software"]
    note += (f"\n\nmrirecon {software['mrirecon']} ({software['git_commit'] or 'no git commit'}), torch "
             f"{software['torch']}, fastmri {software['fastmri']}; data {dm.split_folder(split)} "
             f"(files sha256 {record['dataset']['files_sha256'][:12]}); everything in summary.json.")
    atomic.write_text(out / "report.md", f"# Comparison on {dm.split_folder(split)}\n\n{table}{note}\n\n![slices](comparison.png)\n")
    write_summary_csv(runs, out / "report.csv")
    # The figure shows each method's first run.
    first_files = {name: files[run_list[0]] for name, run_list in groups.items()}

    common = set.intersection(*(set(f) for f in first_files.values()))
    if not common:
        raise UserError("the methods share no (volume, acceleration): were they run on the same split?")
    acc = float(acceleration) if acceleration is not None else min(a for _, a in common)
    vols = sorted({f for f, a in common if a == acc})
    if not vols:
        raise UserError(f"no method has reconstructions at {acceleration_label(acc)}")
    if slices:
        picks = list(slices)
        for fname, _ in picks:
            if fname not in vols:
                raise UserError(f"--slices {fname}: not a volume every method reconstructed at {acceleration_label(acc)}")
    else:
        first = next(iter(first_files.values()))
        picks = [(f, load_array(first[(f, acc)], "reconstruction").shape[0] // 2) for f in vols[:2]]
    comparison_figure(first_files, volumes, dm.crop_size, acc, picks, out / "comparison.png")
    return split, runs, EvaluationResults(per_volume, acquisitions, split, atomic.final_path(out))
