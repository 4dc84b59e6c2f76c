"""``mrirecon report``: several methods side by side on one split, as a table and a figure.

Each method is a folder of reconstructions in the submission format (what ``mrirecon predict``
and ``mrirecon baseline`` write) or a checkpoint, which is first run through ``mrirecon
predict`` with the same config and overrides. The config is read by the same parser as every
other command, so ``--data.data_path OTHER`` works here too. All methods are scored here,
against the split's targets, exactly as ``mrirecon test`` scores (see
:mod:`mrirecon.evaluation.scoring`), so the table compares like with like.

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
import csv
import io
import json
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    parser.add_argument("--no_progress", "--no-progress", dest="no_progress", action="store_true")
    return parser


def _parse_method(text: str):
    from mrirecon.errors import UserError

    if "=" not in text:
        raise UserError(f"--method {text!r}: expected NAME=PATH (a reconstruction folder or a .ckpt)")
    name, path = text.split("=", 1)
    return name, Path(path)


def write_summary_csv(runs: dict, path: Path) -> None:
    """One row per method and acceleration: mean over runs (and min, max) of each metric."""
    from mrirecon.core import atomic
    from mrirecon.evaluation.results import METRICS

    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["method", "acceleration", "runs", "volumes",
                     *(f"{m}_{s}" for m in METRICS for s in ("mean", "min", "max"))])
    for method, by_acc in runs.items():
        for acc, e in by_acc.items():
            writer.writerow([method, acc, e["runs"], e["volumes"],
                             *(f"{e[m][s]:.6g}" for m in METRICS for s in ("mean", "min", "max"))])
    atomic.write_text(path, rows.getvalue())


def run_names(methods: list[tuple[str, Path]]) -> tuple[list[str], dict[str, list[str]]]:
    """A unique name per run (``name[i]`` for a repeated name) and the runs of each method."""
    counts: dict[str, int] = {}
    for name, _ in methods:
        counts[name] = counts.get(name, 0) + 1
    seen: dict[str, int] = {}
    names, groups = [], {}
    for name, _ in methods:
        seen[name] = seen.get(name, 0) + 1
        run = f"{name}[{seen[name]}]" if counts[name] > 1 else name
        names.append(run)
        groups.setdefault(name, []).append(run)
    return names, groups


def main(argv: list[str]) -> int:
    args, overrides = _parser().parse_known_args(argv)
    from mrirecon.core import atomic
    from mrirecon.errors import UserError
    from mrirecon.evaluation.results import format_runs_table, format_split_tables

    splits = list(dict.fromkeys(args.split or [None]))
    if args.slices and len(splits) > 1:
        raise UserError("--slices: names the files of one split (sim_test_0000.h5:7); give one --split with it")
    out = atomic.check_writable_folder(args.out)
    given = list(map(_parse_method, args.method))
    by_split = {}
    for split in splits:
        target = out if len(splits) == 1 else atomic.check_writable_folder(out / split)
        name, runs = _report_split(args, overrides, split, given, target)
        by_split[name] = runs
        print(f"\n{name}\n{format_runs_table(runs)}")
    if len(splits) > 1:
        sections = "\n\n".join(f"- [{name}]({name}/report.md)" for name in by_split)
        atomic.write_text(out / "report.md", "# Comparison on " + ", ".join(by_split) + "\n\n"
                          + format_split_tables(by_split, markdown=True)
                          + "\n\nSSIM and PSNR (dB), mean over volumes (and over runs, with their range). Every metric, the "
                          "figures and the provenance per split:\n\n" + sections + "\n")
        print(f"\n{format_split_tables(by_split)}\n\n{out / 'report.md'}")
    return 0


def _report_split(args: argparse.Namespace, overrides: list[str], split: str | None,
                  given: list[tuple[str, Path]], out: Path) -> tuple[str, dict]:
    """Scores every method on one split into ``out``; returns the split's name and its runs."""
    # Imported here: `mrirecon report --help` must not pay for Lightning.
    from mrirecon.core import atomic
    from mrirecon.core.checkpoint_files import peek_checkpoint
    from mrirecon.errors import UserError
    from mrirecon.evaluation.figures import comparison_figure
    from mrirecon.evaluation.provenance import dataset_record, provenance
    from mrirecon.evaluation.results import (
        acceleration_label,
        format_acquisition_table,
        format_runs_table,
        summarize_runs,
        write_results,
    )
    from mrirecon.evaluation.scoring import load_array, reconstruction_root, score_folder
    from mrirecon.lightning.cli import build_cli, run_lightning_cli

    if split:
        overrides = [*overrides, "--data.test_split", split]
    cli = build_cli(["--config", str(args.config), *overrides, "--trainer.logger", "false"], run=False)
    dm = cli.datamodule
    split = dm.test_split
    volumes = {v.path.name: v for v in dm.evaluation_volumes()}

    names, groups = run_names(given)
    methods: dict[str, Path] = {}
    for run, (name, path) in zip(names, given):
        path = Path(str(path).replace("{split}", split))
        if path.suffix == ".ckpt":
            if not path.is_file():
                raise UserError(f"{path}: no such checkpoint file")
            target = out / "predictions" / run
            # The report's config says which data and masks; the checkpoint says which network
            # and loss (whose weights it holds): a VarNet and a U-Net compare under one config.
            saved = peek_checkpoint(path).get("hyper_parameters") or {}
            network = ["--model.net", json.dumps(saved["net"])] if isinstance(saved.get("net"), dict) else []
            if saved.get("loss") in ("l1", "ssim"):
                network += ["--model.loss", saved["loss"]]
            run_lightning_cli(["predict", "--config", str(args.config), *overrides, *network, "--ckpt_path", str(path),
                               "--output_dir", str(target), "--data.test_split", split])
            path = target
        elif not path.is_dir():
            raise UserError(f"{path}: no such folder")
        methods[run] = reconstruction_root(path)
    per_volume, files = {}, {}
    for run, root in methods.items():
        per_volume[run], files[run] = score_folder(root, volumes, dm.crop_size, run, progress=not args.no_progress)
    record = provenance(cli.config.as_dict(), None,
                        dataset_record(dm.data_path, dm.split_folder(split), [v.path for v in volumes.values()]))
    acquisitions = {name: v.acquisition for name, v in volumes.items()}
    summary = write_results(per_volume, out, {"command": "report", "split": split, "config_file": str(args.config),
                                              "methods_from": {k: str(v) for k, v in methods.items()},
                                              "provenance": record}, acquisitions)
    runs = summarize_runs(summary["methods"], groups)
    table = format_runs_table(runs, markdown=True)
    several = any(len(r) > 1 for r in groups.values())
    note = "\n\nMean over volumes; for several runs of a method, the mean over runs and (min–max) over runs." if several else ""
    if len(set(acquisitions.values())) > 1:
        note += "\n\n## By acquisition\n\n" + format_acquisition_table(summary["by_acquisition"], markdown=True)
    software = record["software"]
    note += (f"\n\nmrirecon {software['mrirecon']} ({software['git_commit'] or 'no git commit'}), torch "
             f"{software['torch']}, fastmri {software['fastmri']}; data {dm.split_folder(split)} "
             f"(files sha256 {record['dataset']['files_sha256'][:12]}); everything in summary.json.")
    atomic.write_text(out / "report.md", f"# Comparison on {dm.split_folder(split)}\n\n{table}{note}\n\n![slices](comparison.png)\n")
    write_summary_csv(runs, out / "report.csv")
    # The figure shows each method's first run.
    files = {name: files[run_list[0]] for name, run_list in groups.items()}

    common = set.intersection(*(set(f) for f in files.values()))
    if not common:
        raise UserError("the methods share no (volume, acceleration): were they run on the same split?")
    acc = args.acceleration if args.acceleration is not None else min(a for _, a in common)
    vols = sorted({f for f, a in common if a == acc})
    if not vols:
        raise UserError(f"no method has reconstructions at {acceleration_label(acc)}")
    if args.slices:
        picks = [(s.rsplit(":", 1)[0], int(s.rsplit(":", 1)[1])) for s in args.slices]
        for fname, _ in picks:
            if fname not in vols:
                raise UserError(f"--slices {fname}: not a volume every method reconstructed at {acceleration_label(acc)}")
    else:
        first = next(iter(files.values()))
        picks = [(f, load_array(first[(f, acc)], "reconstruction").shape[0] // 2) for f in vols[:2]]
    comparison_figure(files, volumes, dm.crop_size, acc, picks, out / "comparison.png")
    print(f"{out / 'report.md'}\n{out / 'report.csv'}\n{out / 'comparison.png'}")
    return split, runs
