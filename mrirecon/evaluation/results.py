"""Per-volume results: the table users read, ``metrics.csv`` and ``summary.json``.

One format for every method (the network, zero-filled, CS-TV), so that checkpoint evaluation,
baselines and ``mrirecon report`` read and write the same files.

``metrics.csv`` has one row per (method, acceleration, volume); ``summary.json`` holds, per
method and acceleration, the mean and the population standard deviation (ddof=0) over volumes
of SSIM, PSNR and NMSE, as ``fastmri.evaluate`` averages per volume, and the same per
acquisition (CORPD_FBK, AXT2, ...) when the files name theirs, as ``fastmri.evaluate
--acquisition`` reports it, plus whatever the caller records (provenance).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mrirecon.core import atomic
from mrirecon.core.metrics import summarize_by
from mrirecon.core.text import text_table
from mrirecon.errors import UserError

METRICS = ("ssim", "psnr", "nmse")

# method -> (volume file name, acceleration) -> {"ssim": .., "psnr": .., "nmse": ..}
PerVolume = Mapping[str, Mapping[tuple[str, float], Mapping[str, float]]]
# method -> acceleration -> {"volumes": n, metric: {"mean": .., "std": ..}}: what summarize returns
Summary = Mapping[str, Mapping[float, Mapping[str, Any]]]


def acceleration_label(acceleration: float) -> str:
    """'4x' for 4.0, '2.5x' for 2.5: a display label only (tables, CSV, JSON keys, folder names);
    in Python accelerations stay numbers."""
    return f"{acceleration:g}x"


@dataclass(frozen=True)
class EvaluationResults:
    """Per-volume metrics of one or more methods on one split: what ``test``, ``baseline`` and
    ``report`` compute, as a typed table.

    Attributes:
        per_volume: method -> (volume file name, acceleration) -> {"ssim", "psnr", "nmse"}.
        acquisitions: volume file name -> acquisition (``CORPD_FBK``, ``AXT2``, ...).
        split: the split scored.
        output_dir: where ``metrics.csv`` and ``summary.json`` were written (None: not written).
    """

    per_volume: PerVolume
    acquisitions: Mapping[str, str] = field(default_factory=dict)
    split: str | None = None
    output_dir: Path | None = None

    @property
    def methods(self) -> list[str]:
        return list(self.per_volume)

    @property
    def accelerations(self) -> list[float]:
        return sorted({acc for volumes in self.per_volume.values() for _, acc in volumes})

    def summary(self) -> dict[str, dict[float, dict[str, Any]]]:
        """Mean and std over volumes per method and acceleration (see :func:`summarize`)."""
        return summarize(self.per_volume)

    def mean(self, method: str, acceleration: float, metric: str = "ssim") -> float:
        """The mean over volumes of one metric of one method at one acceleration."""
        return self.summary()[method][float(acceleration)][metric]["mean"]

    def rows(self) -> list[tuple[str, float, str, str, dict[str, float]]]:
        """(method, acceleration, volume, acquisition, metrics) per volume, as in ``metrics.csv``."""
        return [(method, acc, fname, self.acquisitions.get(fname, ""), dict(values))
                for method, volumes in self.per_volume.items()
                for (fname, acc), values in sorted(volumes.items(), key=lambda kv: (kv[0][1], kv[0][0]))]


def _entry(g: Mapping[str, float]) -> dict[str, Any]:
    return {"volumes": int(g["num_volumes"]), **{m: {"mean": g[f"{m}_mean"], "std": g[f"{m}_std"]} for m in METRICS}}


def summarize(per_volume: PerVolume) -> dict[str, dict[float, dict[str, Any]]]:
    """Mean and std over volumes, per method and acceleration (a number)."""
    summary: dict[str, dict[float, dict[str, Any]]] = {}
    for method, volumes in per_volume.items():
        groups = summarize_by(volumes, lambda key: float(key[1]), METRICS)
        summary[method] = {acc: _entry(g) for acc, g in sorted(groups.items())}
    return summary


def labelled(summary: Mapping[Any, Any]) -> dict[str, Any]:
    """A summary with its acceleration keys as labels ('4x'), for JSON, at any nesting depth."""
    return {acceleration_label(k) if isinstance(k, float) else k: labelled(v) if isinstance(v, Mapping) else v
            for k, v in summary.items()}


def summarize_by_acquisition(per_volume: PerVolume, acquisitions: Mapping[str, str]) -> dict:
    """Mean and std over volumes per method, acceleration and acquisition (file name -> acquisition)."""
    summary: dict = {}
    for method, volumes in per_volume.items():
        groups = summarize_by(volumes, lambda key: (key[1], acquisitions.get(key[0], "") or "?"), METRICS)
        by_acc: dict = {}
        for (acc, acquisition), g in sorted(groups.items()):
            by_acc.setdefault(float(acc), {})[acquisition] = _entry(g)
        summary[method] = by_acc
    return summary


def format_acquisition_table(by_acquisition: Mapping[str, Mapping[float, Mapping[str, Any]]], markdown: bool = False) -> str:
    """The table of :func:`format_table` with one row per acquisition too."""
    flat = {}
    for method, by_acc in by_acquisition.items():
        for acc, by_acq in by_acc.items():
            for acquisition, entry in by_acq.items():
                flat.setdefault(f"{method} {acquisition}", {})[acc] = entry
    return format_table(flat, markdown)


def format_table(summary: Summary, markdown: bool = False) -> str:
    """A table with one row per (acceleration, method): SSIM, PSNR (dB), NMSE as mean ± std."""
    header = ["acceleration", "method", "volumes", "SSIM", "PSNR (dB)", "NMSE"]
    rows = []
    for acc in sorted({a for m in summary.values() for a in m}):
        for method, by_acc in summary.items():
            if acc not in by_acc:
                continue
            e = by_acc[acc]
            rows.append(
                [
                    acceleration_label(acc),
                    method,
                    str(e["volumes"]),
                    f"{e['ssim']['mean']:.4f} ± {e['ssim']['std']:.4f}",
                    f"{e['psnr']['mean']:.2f} ± {e['psnr']['std']:.2f}",
                    f"{e['nmse']['mean']:.4f} ± {e['nmse']['std']:.4f}",
                ]
            )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    return text_table(header, rows)


def summarize_runs(summary: Summary, groups: Mapping[str, list[str]]) -> dict:
    """Runs of one method (seeds) summarised together, per acceleration.

    Args:
        summary: per run name and acceleration, what :func:`summarize` returns.
        groups: method name -> the names of its runs in ``summary``.

    Returns:
        method -> acceleration -> ``{"runs": n, "volumes": v, metric: {"mean", "min", "max"}}``:
        the mean over runs of each run's mean over volumes, and its range over runs.
    """
    out: dict = {}
    for method, runs in groups.items():
        out[method] = {}
        for acc in sorted({a for r in runs for a in summary[r]}):
            present = [summary[r][acc] for r in runs if acc in summary[r]]
            entry: dict[str, Any] = {"runs": len(present), "volumes": present[0]["volumes"]}
            for m in METRICS:
                means = [e[m]["mean"] for e in present]
                entry[m] = {"mean": math.fsum(means) / len(means), "min": min(means), "max": max(means)}
            out[method][acc] = entry
    return out


def format_runs_table(runs: Summary, markdown: bool = False) -> str:
    """One row per (acceleration, method): the mean over runs and, for several runs, their range."""
    header = ["acceleration", "method", "runs", "volumes", "SSIM", "PSNR (dB)", "NMSE"]

    def cell(e: Mapping[str, float], fmt: str, several: bool) -> str:
        text = format(e["mean"], fmt)
        return f"{text} ({format(e['min'], fmt)}–{format(e['max'], fmt)})" if several else text

    rows = []
    for acc in sorted({a for m in runs.values() for a in m}):
        for method, by_acc in runs.items():
            if acc in by_acc:
                e = by_acc[acc]
                several = e["runs"] > 1
                rows.append([acceleration_label(acc), method, str(e["runs"]), str(e["volumes"]), cell(e["ssim"], ".4f", several),
                             cell(e["psnr"], ".2f", several), cell(e["nmse"], ".4f", several)])
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows])
    return text_table(header, rows)


def format_split_tables(by_split: Mapping[str, Summary],
                        markdown: bool = False) -> str:
    """Several splits side by side: one row per (acceleration, method), SSIM and PSNR per split.

    Args:
        by_split: split -> what :func:`summarize_runs` returns for it.
    """
    splits = list(by_split)
    header = ["acceleration", "method", "runs"] + [f"{split} {m}" for split in splits for m in ("SSIM", "PSNR (dB)")]

    def cell(e: Mapping[str, Any] | None, metric: str, fmt: str) -> str:
        if e is None:
            return "–"
        v = e[metric]
        text = format(v["mean"], fmt)
        return f"{text} ({format(v['min'], fmt)}–{format(v['max'], fmt)})" if e["runs"] > 1 else text

    methods = list(dict.fromkeys(m for runs in by_split.values() for m in runs))
    rows = []
    for acc in sorted({a for runs in by_split.values() for m in runs.values() for a in m}):
        for method in methods:
            entries = [by_split[s].get(method, {}).get(acc) for s in splits]
            if all(e is None for e in entries):
                continue
            runs = max(e["runs"] for e in entries if e is not None)
            rows.append([acceleration_label(acc), method, str(runs)] + [c for e in entries for c in (cell(e, "ssim", ".4f"), cell(e, "psnr", ".2f"))])
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows])
    return text_table(header, rows)


def check_finite(per_volume: PerVolume) -> None:
    """Refuses results that would print or store a NaN: a wrong number must never look like one.

    PSNR may be +inf (a perfect reconstruction); anything else non-finite means a diverged or
    damaged model, or a target the scan should have rejected.

    Raises:
        UserError: naming the method, volume and metric.
    """
    for method, volumes in per_volume.items():
        for (fname, acc), values in volumes.items():
            for metric in METRICS:
                value = values[metric]
                if math.isnan(value) or (math.isinf(value) and not (metric == "psnr" and value > 0)):
                    raise UserError(
                        f"{fname}: {method} at {acceleration_label(acc)} has {metric} = {value}: "
                        "the reconstruction is not finite (a diverged or damaged model)"
                    )


def _json_safe(value: Any) -> Any:
    """JSON has no infinity nor NaN: a perfect reconstruction's PSNR is stored as the string
    "inf" (and the spread of PSNRs that include one as "nan"): valid JSON that no reader takes
    for a finite number."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_results(
    per_volume: PerVolume,
    out_dir: Path,
    meta: Mapping[str, Any] | None = None,
    acquisitions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write ``metrics.csv`` and ``summary.json`` into ``out_dir`` (atomically); return the summary.

    Args:
        per_volume: method -> (file, acceleration) -> metrics.
        out_dir: the folder to write into.
        meta: more entries for ``summary.json`` (split, checkpoint, provenance).
        acquisitions: file name -> acquisition, for the per-acquisition breakdown.

    Raises:
        UserError: for a non-finite metric (see :func:`check_finite`) or a folder that cannot
            be written.
    """
    check_finite(per_volume)
    out_dir = Path(out_dir)
    acquisitions = acquisitions or {}
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["method", "acceleration", "volume", "acquisition", *METRICS])
    for method, volumes in per_volume.items():
        for (fname, acc), values in sorted(volumes.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            writer.writerow([method, acceleration_label(acc), fname, acquisitions.get(fname, ""),
                             *(f"{values[m]:.8g}" for m in METRICS)])
    summary = {**(meta or {}), "methods": summarize(per_volume)}
    if acquisitions:
        summary["by_acquisition"] = summarize_by_acquisition(per_volume, acquisitions)
    atomic.write_text(out_dir / "metrics.csv", rows.getvalue())
    text = json.dumps(_json_safe(labelled(summary)), indent=2, allow_nan=False, default=str)
    atomic.write_text(out_dir / "summary.json", text + "\n")
    return summary


def publish_results(results: EvaluationResults, out_dir: Path, meta: Mapping[str, Any] | None = None,
                    show: bool = True) -> EvaluationResults:
    """The one place evaluation results leave the program: ``metrics.csv`` and ``summary.json``
    in ``out_dir`` and, with ``show``, the tables on stdout. Returns the results with their folder.
    """
    summary = write_results(results.per_volume, out_dir, meta, results.acquisitions)
    if show:
        print("\n" + format_table(summary["methods"]))
        if len(set(results.acquisitions.values())) > 1:
            print("\nby acquisition:\n" + format_acquisition_table(summary["by_acquisition"]))
        shown = atomic.final_path(out_dir)  # where a staged output will be
        print(f"\nper-volume metrics: {shown / 'metrics.csv'}\nsummary: {shown / 'summary.json'}")
    return dataclasses.replace(results, output_dir=atomic.final_path(out_dir))
