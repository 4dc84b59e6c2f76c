"""``mrirecon report``: several methods side by side on one split, as a table and a figure.

Each method is a folder of reconstructions in the submission format (what ``mrirecon predict``
and ``mrirecon baseline`` write) or a checkpoint, which is first run through ``mrirecon
predict`` with the same config and overrides. The config is read by the same parser as every
other command, so ``--data.data_path OTHER`` works here too. All methods are scored here,
against the split's targets, exactly as ``mrirecon test`` scores (see
:mod:`mrirecon.evaluation.scoring`), so the table compares like with like. The work is
:func:`mrirecon.api.report`; this module is its command line.

A name given several times (``--method unet=seed0.ckpt --method unet=seed1.ckpt``) names runs
of one method, such as training seeds: the table shows the mean over its runs and their range,
and ``metrics.csv`` keeps every run (``unet[1]``, ``unet[2]``, ...).

Several splits (``--split test ood``: in- and out-of-distribution) give one report per split in
``<out>/<split>/`` and, in ``<out>/report.md``, the tables side by side; a folder given for a
method names its split with ``{split}`` (``--method cs-tv=runs/cs-tv/{split}``, as
``mrirecon baseline --split test ood`` writes them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mrirecon.commands.arguments import ArgumentParser


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="mrirecon report",
        description="Compare methods on one split: table and figure. Any config override "
        "(--data.data_path DIR, ...) may follow.",
    )
    parser.add_argument("--config", required=True, type=Path, help="the training config (data folder, challenge)")
    parser.add_argument("--method", action="append", required=True, metavar="NAME=PATH",
                        help="a reconstruction folder (from predict/baseline) or a checkpoint; repeat per method")
    parser.add_argument("--split", nargs="+", default=None,
                        help="split(s) to compare on (default: the config's data.test_split, test); with several, "
                        "a method's folder may hold {split}")
    parser.add_argument("--out", "--output_dir", dest="out", type=Path, default=Path("runs/report"))
    parser.add_argument("--acceleration", type=float, default=None, help="acceleration shown in the figure (default: the lowest)")
    parser.add_argument("--slices", nargs="*", default=None, metavar="FILE:SLICE",
                        help="slices for the figure (default: the middle slice of the first two volumes)")
    parser.add_argument("--protocol", default="fastmri", metavar="{fastmri,cmrxrecon,cc359}",
                        help="how to score: fastmri (as test scores, default), cmrxrecon (the CMRxRecon 2023 "
                        "leaderboard: central 2 slices, first 3 frames, a centre crop, each image by its maximum) "
                        "or cc359 (the Calgary-Campinas challenge: outer slices dropped, each slice by its "
                        "reference's maximum, SSIM and PSNR)")
    parser.add_argument("--no_progress", "--no-progress", dest="no_progress", action="store_true")
    return parser


def _parse_slice(text: str) -> tuple[str, int]:
    from mrirecon.errors import UserError

    fname, _, index = text.rpartition(":")
    # Split volumes are .h5 files: "f.h5:1:2" is two slices written as one, not a file "f.h5:1".
    if not fname.endswith(".h5") or not index.lstrip("-").isdigit():
        raise UserError(f"--slices {text!r}: expected FILE:SLICE, one slice each (sim_test_0000.h5:7 sim_test_0000.h5:9)")
    return fname, int(index)


def main(argv: list[str]) -> int:
    args, overrides = _parser().parse_known_args(argv)
    from mrirecon import api

    methods = [api.Method.parse(text) for text in args.method]
    slices = [_parse_slice(text) for text in args.slices] if args.slices else None
    config = api.RunConfig.from_arguments(args.config, overrides)
    api.report(config, methods, args.split, args.out, args.acceleration, slices, progress=not args.no_progress,
               protocol=args.protocol)
    return 0
