"""``mrirecon baseline``: zero-filled and CS-TV reconstructions of a split, scored like a checkpoint.

A baseline is ``mrirecon test`` with a parameter-free method in place of the network: the same
config parser (so ``--data.data_path OTHER`` and any other override work), the same DataModule
and fixed per-volume masks, the same per-volume metrics and results files, and the
reconstructions in the submission format, written in the same pass. CS-TV's settings come from
the config's ``cs_tv:`` section (:class:`~mrirecon.methods.CSTVSettings`).

``--lam_grid`` chooses CS-TV's λ on another split (the validation split by default) before the
evaluated one is touched: each λ of the grid reconstructs that split, the best mean SSIM per
acceleration wins, and the evaluated split is then reconstructed once with the winners
(``tuning.csv`` and ``summary.json`` record the grid and the choice).

``--split test ood`` reconstructs several splits with one choice of λ, each into
``<output_dir>/<split>`` (what ``mrirecon report --split test ood`` reads as
``--method cs-tv=<output_dir>/{split}``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METHODS = ("zero-filled", "cs-tv")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrirecon baseline",
        description="Zero-filled or CS-TV reconstructions of a split, scored like `mrirecon test`. "
        "Any config override (--data.data_path DIR, --cs_tv.iterations N, --trainer.accelerator cpu) "
        "may follow.",
    )
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--config", required=True, type=Path, help="a training config (its data: and cs_tv: sections)")
    parser.add_argument("--split", nargs="+", default=None,
                        help="split(s) to reconstruct (default: data.test_split, i.e. test); several go to "
                        "<output_dir>/<split>")
    parser.add_argument("--output_dir", "--output-dir", dest="output_dir", type=Path, default=None,
                        help="default: runs/baselines/<config name>/<method>")
    parser.add_argument("--lam_grid", "--lam-grid", dest="lam_grid", type=float, nargs="+", default=None,
                        metavar="LAM", help="cs-tv: choose the relative lambda per acceleration from these on --tune_split")
    parser.add_argument("--tune_split", "--tune-split", dest="tune_split", default="val",
                        help="split that --lam_grid is tuned on (default val)")
    parser.add_argument("--no_progress", "--no-progress", dest="no_progress", action="store_true")
    return parser


def tune_lambda(config: Path, output_dir: Path, grid: list[float], overrides: list[str] | None = None,
                split: str = "val", progress: bool = True) -> dict[int, float]:
    """CS-TV's relative λ per acceleration: the best mean SSIM of ``grid`` on ``split``.

    Writes ``<output_dir>/tuning.csv`` (mean SSIM, PSNR, NMSE of every λ and acceleration).
    """
    from mrirecon.core import atomic
    from mrirecon.errors import UserError

    if not grid or any(lam < 0 for lam in grid):
        raise UserError(f"--lam_grid: needs non-negative values, got {grid}")
    scores: dict[float, dict] = {}
    for lam in grid:
        run = output_dir / "tuning" / f"lam_{lam:g}"
        lam_overrides = [*(overrides or []), "--cs_tv.lam", "{}", "--cs_tv.lam_default", str(lam)]
        run_baseline("cs-tv", config, run, lam_overrides, split=split, progress=progress)
        summary = json.loads((run / "summary.json").read_text())
        scores[lam] = summary["methods"]["cs-tv"]
    accelerations = sorted({acc for by_acc in scores.values() for acc in by_acc}, key=lambda a: float(a.rstrip("x")))
    chosen = {int(float(acc.rstrip("x"))): max(grid, key=lambda lam: scores[lam][acc]["ssim"]["mean"]) for acc in accelerations}
    rows = ["lam,acceleration,ssim_mean,psnr_mean,nmse_mean,chosen"]
    for lam in grid:
        for acc in accelerations:
            e = scores[lam][acc]
            rows.append(f"{lam:g},{acc},{e['ssim']['mean']:.6g},{e['psnr']['mean']:.6g},{e['nmse']['mean']:.6g},"
                        f"{int(chosen[int(float(acc.rstrip('x')))] == lam)}")
    atomic.write_text(output_dir / "tuning.csv", "\n".join(rows) + "\n")
    print(f"cs-tv lambda chosen on {split}: " + ", ".join(f"{acc}x {lam:g}" for acc, lam in chosen.items()))
    return chosen


def run_baseline(method: str, config: Path, output_dir: Path | None = None, overrides: list[str] | None = None,
                 split: str | None = None, progress: bool = True, lam_grid: list[float] | None = None,
                 tune_split: str = "val") -> Path:
    """Reconstructs and scores a split with one baseline; returns the output folder."""
    return run_baselines(method, config, output_dir, overrides, [split] if split else None, progress, lam_grid,
                         tune_split)[split]


def run_baselines(method: str, config: Path, output_dir: Path | None = None, overrides: list[str] | None = None,
                  splits: list[str] | None = None, progress: bool = True, lam_grid: list[float] | None = None,
                  tune_split: str = "val") -> dict[str | None, Path]:
    """Reconstructs and scores each split (``None``: the config's test split) with one baseline.

    With ``lam_grid``, CS-TV's λ is chosen once, on ``tune_split``, for every split. One split
    is written into ``output_dir``, several each into ``output_dir/<split>``.

    Returns:
        split -> its output folder.
    """
    from mrirecon.core.atomic import check_writable_folder
    from mrirecon.errors import UserError

    splits = list(dict.fromkeys(splits or [None]))
    if lam_grid and method != "cs-tv":
        raise UserError("--lam_grid: only cs-tv has a lambda")
    out = check_writable_folder(output_dir or Path("runs") / "baselines" / config.stem / method)
    tuning = {}
    if lam_grid:
        chosen = tune_lambda(config, out, lam_grid, overrides, tune_split, progress)
        overrides = [*(overrides or []), "--cs_tv.lam", json.dumps(chosen)]
        tuning = {"lam_grid": lam_grid, "tuned_on": tune_split, "lam_chosen": chosen}
    outputs = {}
    for split in splits:
        target = out if len(splits) == 1 else check_writable_folder(out / split)
        outputs[split] = _run_one(method, config, target, overrides, split, progress, tuning)
    return outputs


def _run_one(method: str, config: Path, out: Path, overrides: list[str] | None, split: str | None,
             progress: bool, tuning: dict) -> Path:
    # Imported here: `mrirecon baseline --help` must not pay for Lightning.
    from mrirecon.lightning.callbacks import ReconstructionWriter
    from mrirecon.lightning.cli import build_cli, lightning_quietly
    from mrirecon.lightning.module import ReconModule
    from mrirecon.methods import CSTV, ZeroFilled

    argv = ["--config", str(config), *(overrides or []), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", str(progress).lower()]
    if split:
        argv += ["--data.test_split", split]
    cli = build_cli(argv, run=False)
    settings = cli.config_init["cs_tv"]
    net = CSTV(settings) if method == "cs-tv" else ZeroFilled()
    module = ReconModule(net=net, method_name=method)
    module.output_dir = out
    module.run_metadata = {"command": "baseline", "method": method, "config_file": str(config),
                           "config": cli.config.as_dict()}
    if method == "cs-tv":
        module.run_metadata["cs_tv"] = {"iterations": settings.iterations, "lam": settings.lam,
                                        "lam_default": settings.lam_default, **tuning}
    dm = cli.datamodule
    if method == "cs-tv":
        dm.batch_size = settings.batch_size  # CS-TV solves this many slices together
    cli.trainer.callbacks.append(ReconstructionWriter(out / "reconstructions"))
    # The split's files are scanned here too (not only in the Trainer's setup) to choose
    # between scoring and reconstructing only; the scan is cached.
    with lightning_quietly():
        if all(v.target_key is not None for v in dm.evaluation_volumes()):
            cli.trainer.test(module, datamodule=dm, verbose=False)
        else:  # test/challenge files without targets: reconstructions only
            cli.trainer.predict(module, datamodule=dm, return_predictions=False)
    if cli.trainer.is_global_zero:
        print(f"reconstructions: {out / 'reconstructions'}")
    return out


def main(argv: list[str]) -> int:
    args, overrides = _parser().parse_known_args(argv)
    run_baselines(args.method, args.config, args.output_dir, overrides, args.split, progress=not args.no_progress,
                  lam_grid=args.lam_grid, tune_split=args.tune_split)
    return 0
