"""``mrirecon baseline``: zero-filled and CS-TV reconstructions of a split, scored like a checkpoint.

A baseline is ``mrirecon test`` with a parameter-free method in place of the network: the same
config parser (so ``--data.data_path OTHER`` and any other override work), the same DataModule
and fixed per-volume masks, the same per-volume metrics and results files, and the
reconstructions in the submission format, written in the same pass. CS-TV's settings come from
the config's ``cs_tv:`` section (:class:`~mrirecon.methods.CSTVSettings`).
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--split", default=None, help="split to reconstruct (default: data.test_split, i.e. test)")
    parser.add_argument("--output_dir", "--output-dir", dest="output_dir", type=Path, default=None,
                        help="default: runs/baselines/<config name>/<method>")
    parser.add_argument("--no_progress", "--no-progress", dest="no_progress", action="store_true")
    return parser


def run_baseline(method: str, config: Path, output_dir: Path | None = None, overrides: list[str] | None = None,
                 split: str | None = None, progress: bool = True) -> Path:
    """Reconstructs and scores a split with one baseline; returns the output folder."""
    # Imported here: `mrirecon baseline --help` must not pay for Lightning.
    from mrirecon.core.atomic import check_writable_folder
    from mrirecon.lightning.callbacks import ReconstructionWriter
    from mrirecon.lightning.cli import build_cli
    from mrirecon.lightning.module import ReconModule
    from mrirecon.methods import CSTV, ZeroFilled

    argv = ["--config", str(config), *(overrides or []), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", str(progress).lower()]
    if split:
        argv += ["--data.test_split", split]
    cli = build_cli(argv, run=False)
    out = check_writable_folder(output_dir or Path("runs") / "baselines" / config.stem / method)
    settings = cli.config_init["cs_tv"]
    net = CSTV(settings) if method == "cs-tv" else ZeroFilled()
    module = ReconModule(net=net, method_name=method)
    module.output_dir = out
    module.run_metadata = {"command": "baseline", "method": method, "config": str(config)}
    dm = cli.datamodule
    if method == "cs-tv":
        dm.batch_size = settings.batch_size  # CS-TV solves this many slices together
    cli.trainer.callbacks.append(ReconstructionWriter(out / "reconstructions"))
    # The split's files are scanned here too (not only in the Trainer's setup) to choose
    # between scoring and reconstructing only; the scan is cached.
    if all(v.target_key is not None for v in dm.evaluation_volumes()):
        cli.trainer.test(module, datamodule=dm, verbose=False)
    else:  # test/challenge files without targets: reconstructions only
        cli.trainer.predict(module, datamodule=dm, return_predictions=False)
    if cli.trainer.is_global_zero:
        print(f"reconstructions: {out / 'reconstructions'}")
    return out


def main(argv: list[str]) -> int:
    args, overrides = _parser().parse_known_args(argv)
    run_baseline(args.method, args.config, args.output_dir, overrides, args.split, progress=not args.no_progress)
    return 0
