"""The ``mrirecon`` command.

``mrirecon fit|validate|test|predict --config configs/<name>.yaml`` run through LightningCLI
(dotted overrides, ``--print_config``, the resolved config saved next to the logs);
``mrirecon data simulate|check`` and the other tool subcommands are plain argparse.

A user mistake (a bad file, folder, config key or checkpoint) ends with one line on stderr
and exit status 2; anything else keeps its traceback because it is a bug.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional

from mrirecon.errors import UserError

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _data_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mrirecon data", description="Simulate or check fastMRI-format data.")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="write a fastMRI-format dataset simulated from real anatomy")
    sim.add_argument("--out", required=True, type=Path, help="dataset folder to create")
    sim.add_argument("--preset", default="demo", help="demo (CPU, small) or full (320 recon, GPU)")
    sim.add_argument("--challenge", default="singlecoil", choices=["singlecoil", "multicoil"])
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--source", nargs="+", type=Path, default=None, help="NIfTI volumes to use instead of the bundled templates")
    sim.add_argument("--recon-size", type=int, default=None, help="override the preset's reconstruction size")
    sim.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    sim.add_argument("--no-progress", action="store_true")

    chk = sub.add_parser("check", help="validate a dataset folder and print a summary")
    chk.add_argument("path", type=Path)
    chk.add_argument("--skip-finite", action="store_true", help="do not scan k-space for NaN/Inf (faster)")

    args = parser.parse_args(argv)
    if args.command == "simulate":
        from mrirecon.data.simulate import simulate_dataset

        summary = simulate_dataset(
            args.out,
            preset=args.preset,
            challenge=args.challenge,
            seed=args.seed,
            sources=args.source,
            overwrite=args.overwrite,
            recon_size=args.recon_size,
            progress=not args.no_progress,
        )
        print(f"wrote {args.out}: " + ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict)))
        return 0

    from mrirecon.data.check import check_dataset, format_report

    reports = check_dataset(args.path, check_finite=not args.skip_finite)
    print(format_report(reports))
    bad = sum(len(r.bad) for r in reports)
    if bad:
        print(f"mrirecon: error: {args.path}: {bad} bad file(s)", file=sys.stderr)
        return 1
    return 0


TOOLS: dict[str, Callable[[list[str]], int]] = {"data": _data_main}


def _register_tools() -> None:
    # Imported lazily so that `mrirecon data check` does not pay for Lightning's import.
    try:
        from mrirecon.baselines.run import main as baseline_main

        TOOLS["baseline"] = baseline_main
    except ImportError:
        pass
    try:
        from mrirecon.evaluation.report import main as report_main

        TOOLS["report"] = report_main
    except ImportError:
        pass
    try:
        from mrirecon.study import main as study_main

        TOOLS["study"] = study_main
    except ImportError:
        pass


def _lightning_main(argv: list[str]) -> None:
    import os

    # Lightning's tips about litlogger and the like are noise for our users.
    os.environ.setdefault("POSSIBLE_USER_WARNING", "off")
    from mrirecon.training.cli import run_lightning_cli

    run_lightning_cli(argv)


def main(argv: Optional[list[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in TOOLS:
            sys.exit(TOOLS[argv[0]](argv[1:]))
        _register_tools()
        if argv and argv[0] in TOOLS:
            sys.exit(TOOLS[argv[0]](argv[1:]))
        if not argv or argv[0] in ("-h", "--help"):
            print(
                "usage: mrirecon {fit,validate,test,predict} --config CONFIG [...]\n"
                f"       mrirecon {{{','.join(sorted(TOOLS))}}} ...\n\n"
                "  fit/validate/test/predict  LightningCLI: train or evaluate (see --help of each)\n"
                "  data simulate|check        make or validate fastMRI-format data\n"
                + ("  baseline                   zero-filled / CS-TV baselines on a split\n" if "baseline" in TOOLS else "")
                + ("  report                     side-by-side comparison of methods\n" if "report" in TOOLS else "")
                + ("  study                      optimiser / normalisation study\n" if "study" in TOOLS else "")
            )
            sys.exit(0 if argv else 2)
        _lightning_main(argv)
    except UserError as err:
        print(f"mrirecon: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("mrirecon: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
