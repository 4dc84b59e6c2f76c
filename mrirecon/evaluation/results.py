"""Per-volume results: the table users read, ``metrics.csv`` and ``summary.json``.

One format for every method (the network, zero-filled, CS-TV), so that checkpoint evaluation,
baselines and ``mrirecon report`` read and write the same files.

``metrics.csv`` has one row per (method, acceleration, volume); ``summary.json`` holds, per
method and acceleration, the mean and the population standard deviation (ddof=0) over volumes
of SSIM, PSNR and NMSE, as ``fastmri.evaluate`` averages per volume.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping

from mrirecon.evaluation.metrics import summarize_by
from mrirecon.text import text_table

METRICS = ("ssim", "psnr", "nmse")

# method -> (volume file name, acceleration) -> {"ssim": .., "psnr": .., "nmse": ..}
PerVolume = Mapping[str, Mapping[tuple[str, float], Mapping[str, float]]]


def acceleration_label(acceleration: float) -> str:
    """'4x' for 4.0, '2.5x' for 2.5."""
    return f"{acceleration:g}x"


def summarize(per_volume: PerVolume) -> dict[str, dict[str, dict[str, Any]]]:
    """Mean and std over volumes, per method and acceleration (label like '4x')."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for method, volumes in per_volume.items():
        groups = summarize_by(volumes, lambda key: key[1], METRICS)
        summary[method] = {
            acceleration_label(acc): {
                "volumes": int(g["num_volumes"]),
                **{m: {"mean": g[f"{m}_mean"], "std": g[f"{m}_std"]} for m in METRICS},
            }
            for acc, g in sorted(groups.items())
        }
    return summary


def format_table(summary: Mapping[str, Mapping[str, Mapping[str, Any]]], markdown: bool = False) -> str:
    """A table with one row per (acceleration, method): SSIM, PSNR (dB), NMSE as mean ± std."""
    header = ["acceleration", "method", "volumes", "SSIM", "PSNR (dB)", "NMSE"]
    rows = []
    accs = sorted({a for m in summary.values() for a in m}, key=lambda a: float(a.rstrip("x")))
    for acc in accs:
        for method, by_acc in summary.items():
            if acc not in by_acc:
                continue
            e = by_acc[acc]
            rows.append(
                [
                    acc,
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


def write_results(per_volume: PerVolume, out_dir: Path, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``metrics.csv`` and ``summary.json`` into ``out_dir``; return the summary dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "acceleration", "volume", *METRICS])
        for method, volumes in per_volume.items():
            for (fname, acc), values in sorted(volumes.items(), key=lambda kv: (kv[0][1], kv[0][0])):
                writer.writerow([method, acceleration_label(acc), fname, *(f"{values[m]:.8g}" for m in METRICS)])
    summary = {**(meta or {}), "methods": summarize(per_volume)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
