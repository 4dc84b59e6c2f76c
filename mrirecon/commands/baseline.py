"""``mrirecon baseline``: zero-filled and CS-TV reconstructions of a split, scored like a checkpoint.

A baseline is ``mrirecon test`` with a parameter-free method in place of the network: the same
config parser (so ``--data.data_path OTHER`` and any other override work), the same DataModule
and fixed per-volume masks, the same per-volume metrics and results files, and the
reconstructions in the submission format, written in the same pass. CS-TV's settings come from
the config's ``cs_tv:`` section (:class:`~mrirecon.methods.CSTVSettings`). The work is
:func:`mrirecon.api.baseline`; this module is its command line.

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
from pathlib import Path

from mrirecon.commands.arguments import ArgumentParser

METHODS = ("zero-filled", "cs-tv")  # mrirecon.api.BASELINE_METHODS, without importing it for --help


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
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


def main(argv: list[str]) -> int:
    args, overrides = _parser().parse_known_args(argv)
    from mrirecon import api

    config = api.RunConfig.from_arguments(args.config, overrides)
    api.baseline(config, args.method, args.split, args.output_dir, lam_grid=args.lam_grid,
                 tune_split=args.tune_split, progress=not args.no_progress)
    return 0
