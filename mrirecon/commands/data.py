"""``mrirecon data simulate|check``: make or validate fastMRI-format data (no Lightning)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mrirecon.commands.arguments import ArgumentParser
from mrirecon.data.anatomy import NAMED_SOURCES


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="mrirecon data", description="Simulate or check fastMRI-format data.")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="write a fastMRI-format dataset simulated from real anatomy")
    sim.add_argument("--out", required=True, type=Path, help="dataset folder to create")
    sim.add_argument("--preset", default=None,
                     help="demo (CPU, small; the default), demo-random (the demo with domain-randomised train and val "
                          "splits), demo-mixed (half of those volumes randomised: the README demo's data), ood (an "
                          "out-of-distribution split from the head named by --source, added beside the others), "
                          "full (320 recon, GPU), m4raw (M4Raw's files: 256x256, 4 coils, T1/T2/FLAIR repetitions; "
                          "the default of --format m4raw)")
    sim.add_argument("--format", default=None, choices=["fastmri", "m4raw"],
                     help="file layout: fastmri (one file per volume) or m4raw (one per subject, contrast and "
                          "repetition, named <subject>_<contrast><NN>.h5); default: the preset's")
    sim.add_argument("--challenge", default=None, choices=["singlecoil", "multicoil"],
                     help="default: singlecoil (multicoil for the m4raw format, its only one)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument(
        "--source", nargs="+", default=None, metavar="SOURCE",
        help="anatomical volumes (NIfTI/MGH paths, or " + "; ".join(f"{k}: {v}" for k, v in NAMED_SOURCES.items())
        + "); default: mni152 alone",
    )
    sim.add_argument("--recon_size", "--recon-size", dest="recon_size", type=int, default=None,
                     help="override the preset's reconstruction size")
    sim.add_argument("--undersampled", type=int, default=None, metavar="ACCELERATION",
                     help="write train and val as scans without references: undersampled once per volume at this "
                          "acceleration (the mask stored in the file), no target (for self-supervised training)")
    sim.add_argument("--overwrite", action="store_true", help="replace split folders of a previous simulation in --out")
    sim.add_argument("--no_progress", "--no-progress", dest="no_progress", action="store_true")

    chk = sub.add_parser("check", help="validate a dataset folder and print a summary")
    chk.add_argument("path", type=Path)
    chk.add_argument("--skip_finite", "--skip-finite", dest="skip_finite", action="store_true",
                     help="do not scan k-space and targets for NaN/Inf (faster)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        from mrirecon.data.simulate import simulate_dataset

        summary = simulate_dataset(
            args.out,
            preset=args.preset,
            challenge=args.challenge,
            format=args.format,
            seed=args.seed,
            sources=args.source,
            overwrite=args.overwrite,
            recon_size=args.recon_size,
            undersampled=args.undersampled,
            progress=not args.no_progress,
        )
        sources = ", ".join(f"{s['name']} (sha256 {s['sha256'][:12]})" for s in summary["sources"])
        volumes = ", ".join(f"{split} {info['volumes']}" for split, info in summary["splits"].items())
        print(f"wrote {summary['out_dir']}: {summary['challenge']}, seed {summary['seed']}, {volumes} volumes; "
              f"sources: {sources}")
        return 0

    from mrirecon.data.check import check_dataset, format_report

    reports = check_dataset(args.path, check_finite=not args.skip_finite)
    print(format_report(reports))
    bad = sum(len(r.bad) for r in reports)
    if bad:
        print(f"mrirecon: error: {args.path}: {bad} bad file(s)", file=sys.stderr)
        return 1
    return 0
