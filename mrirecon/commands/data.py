"""``mrirecon data simulate|convert|check``: make, convert or validate datasets (no Lightning)."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from mrirecon.commands.arguments import ArgumentParser
from mrirecon.data.anatomy import NAMED_SOURCES


def _simulate_cine(args: argparse.Namespace) -> int:
    from mrirecon.data.simulation.cine import simulate_cine_download
    from mrirecon.errors import UserError

    for flag, value in (("--preset", args.preset), ("--undersampled", args.undersampled)):
        if value is not None:
            raise UserError(f"{flag}: not for --format cmrxrecon, whose download has its own sets and masks")
    if args.overwrite:
        raise UserError("--overwrite: not for --format cmrxrecon; it writes a new folder")
    summary = simulate_cine_download(args.out, args.challenge or "multicoil", recon_size=args.recon_size or 32,
                                     seed=args.seed, sources=args.source, progress=not args.no_progress)
    print(f"wrote {summary['out']}: a CMRxRecon cine download ({summary['challenge']}, k-space "
          f"{summary['kspace_size'][0]}x{summary['kspace_size'][1]}, {summary['frames']} frames, "
          f"{summary['training_patients']} training and {summary['validation_patients']} validation patients); "
          f"convert it: mrirecon data convert {summary['out']} --format cmrxrecon --out DATASET")
    return 0


def _simulate_cc359(args: argparse.Namespace) -> int:
    from mrirecon.data.simulation.cc359 import simulate_cc359_download
    from mrirecon.errors import UserError

    for flag, value in (("--preset", args.preset), ("--undersampled", args.undersampled)):
        if value is not None:
            raise UserError(f"{flag}: not for --format cc359, whose download has its own sets and masks")
    if args.overwrite:
        raise UserError("--overwrite: not for --format cc359; it writes a new folder")
    if args.challenge not in (None, "multicoil"):
        raise UserError("--challenge singlecoil: --format cc359 simulates the 12-channel (multicoil) data only")
    summary = simulate_cc359_download(args.out, width=args.recon_size or 42, seed=args.seed, sources=args.source,
                                      progress=not args.no_progress)
    plane = "x".join(map(str, summary["plane"]))
    print(f"wrote {summary['out']}: a Calgary-Campinas multi-channel download (planes {plane}, {summary['coils']} "
          f"coils, {summary['slices']} slices; " + ", ".join(f"{k} {v}" for k, v in summary["sets"].items())
          + f" files; calibration radius {summary['calibration_radius']:.3g}); convert it: mrirecon data convert "
          f"{summary['out']} --format cc359 --out DATASET")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="mrirecon data", description="Simulate, convert or check datasets.")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="write a fastMRI-format dataset simulated from real anatomy")
    sim.add_argument("--out", required=True, type=Path, help="dataset folder to create")
    sim.add_argument("--preset", default=None,
                     help="demo (CPU, small; the default), demo-random (the demo with domain-randomised train and val "
                          "splits), demo-mixed (half of those volumes randomised: the README demo's data), ood (an "
                          "out-of-distribution split from the head named by --source, added beside the others), "
                          "full (320 recon, GPU), m4raw (M4Raw's files: 256x256, 4 coils, T1/T2/FLAIR repetitions; "
                          "the default of --format m4raw)")
    sim.add_argument("--format", default=None, choices=["fastmri", "m4raw", "cmrxrecon", "cc359"],
                     help="file layout: fastmri (one file per volume), m4raw (one per subject, contrast and "
                          "repetition, named <subject>_<contrast><NN>.h5), cmrxrecon (a CMRxRecon 2023 cine "
                          "download: its tree of MATLAB files, for data convert) or cc359 (a Calgary-Campinas "
                          "multi-channel download: train/, val/, Test-R=5|10/ and poisson_sampling/, for data "
                          "convert; --recon_size sets kz, 170 for the real 218 x 170 planes, default 42); "
                          "default: the preset's")
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

    conv = sub.add_parser("convert", help="convert another dataset's download into a mrirecon dataset folder")
    conv.add_argument("source", type=Path, help="the download's top folder (CMRxRecon: the one holding MultiCoil/; "
                      "Calgary-Campinas: one holding train/, val/ and Test-R=5/, at any depth)")
    conv.add_argument("--format", required=True, choices=["cmrxrecon", "cc359"],
                      help="the download's format: cmrxrecon (2023 cine) or cc359 (Calgary-Campinas 12-channel)")
    conv.add_argument("--out", required=True, type=Path, help="dataset folder to write (swapped in whole)")
    conv.add_argument("--challenge", default="multicoil", choices=["singlecoil", "multicoil"])
    conv.add_argument("--val_fraction", "--val-fraction", dest="val_fraction", type=float, default=0.1,
                      help="fraction of TrainingSet patients (cc359: of train/ volumes) for val (default 0.1)")
    conv.add_argument("--test_fraction", "--test-fraction", dest="test_fraction", type=float, default=None,
                      help="fraction of TrainingSet patients for test (default 0.1; cmrxrecon only: cc359's test "
                           "is its val/)")
    conv.add_argument("--masks", type=Path, default=None,
                      help="cc359: the folder of the challenge's masks R5_218x170.npy, ... (default: a "
                           "poisson_sampling/ folder in the download); they give test_acc05 and test_acc10")
    conv.add_argument("--seed", type=int, default=0, help="seed of the patients' split")
    conv.add_argument("--no_progress", "--no-progress", dest="no_progress", action="store_true")

    chk = sub.add_parser("check", help="validate a dataset folder (or a CMRxRecon download) and print a summary")
    chk.add_argument("path", type=Path)
    chk.add_argument("--skip_finite", "--skip-finite", dest="skip_finite", action="store_true",
                     help="do not scan k-space and targets for NaN/Inf (faster)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        if args.format == "cmrxrecon":
            return _simulate_cine(args)
        if args.format == "cc359":
            return _simulate_cc359(args)
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

    if args.command == "convert":
        from tqdm import tqdm

        from mrirecon.errors import UserError

        bars: list[tqdm] = []

        def progress(steps: list) -> tqdm:
            bars.append(tqdm(steps, unit="volume", desc=f"converting {args.format}", disable=args.no_progress,
                             leave=False))
            return bars[-1]

        if args.out.resolve() == args.source.resolve() or args.source.resolve() in args.out.resolve().parents:
            raise UserError(f"--out {args.out}: inside the download {args.source}; choose a folder outside it")
        if args.out.is_dir() and any(args.out.iterdir()):
            # The converted splits would replace a dataset's of the same names (or land in the
            # download, for a folder above it).
            raise UserError(f"--out {args.out}: exists and is not empty; convert into a new folder")
        if args.out.exists() and not args.out.is_dir():
            raise UserError(f"--out {args.out}: exists and is not a folder")
        try:  # the bar is closed on a refusal too: one error line, not half a bar and the line
            if args.format == "cc359":
                from mrirecon.data.cc359 import convert_scans

                if args.challenge != "multicoil":
                    raise UserError("--challenge singlecoil: Calgary-Campinas' raw data is the 12-channel (multicoil) set")
                if args.test_fraction is not None:
                    raise UserError("--test_fraction: not for --format cc359, whose val/ volumes are the test split")
                counts = convert_scans(args.source, args.out, args.val_fraction, args.seed, args.masks, progress)
            else:
                from mrirecon.data.cmrxrecon import convert_cine

                if args.masks is not None:
                    raise UserError("--masks: for --format cc359; CMRxRecon's masks lie beside its files")
                test_fraction = 0.1 if args.test_fraction is None else args.test_fraction
                counts = convert_cine(args.source, args.out, args.challenge, args.val_fraction, test_fraction, args.seed,
                                      progress)
        finally:
            for bar in bars:
                bar.close()
        print(f"wrote {args.out}: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) + " volumes")
        return 0

    from mrirecon.data.check import (
        check_dataset,
        cmrxrecon_challenges,
        format_cc359_report,
        format_cmrxrecon_report,
        format_report,
        is_cc359_download,
    )

    download = None
    if args.path.is_dir() and cmrxrecon_challenges(args.path):
        download = functools.partial(format_cmrxrecon_report, check_finite=not args.skip_finite)
    elif is_cc359_download(args.path):
        download = functools.partial(format_cc359_report, check_finite=not args.skip_finite)
    if download is not None:
        text, bad = download(args.path)
        print(text)
        if bad:
            print(f"mrirecon: error: {args.path}: {bad} bad file(s)", file=sys.stderr)
            return 1
        return 0
    reports = check_dataset(args.path, check_finite=not args.skip_finite)
    print(format_report(reports))
    bad = sum(len(r.bad) for r in reports)
    if bad:
        print(f"mrirecon: error: {args.path}: {bad} bad file(s)", file=sys.stderr)
        return 1
    return 0
