"""``mrirecon report``: several methods side by side on one split, as a table and a figure.

Each method is a folder of reconstructions in the submission format (``<acc>x/<file>.h5``, key
``reconstruction``; what ``mrirecon predict`` and ``mrirecon baseline`` write) or a checkpoint,
which is first run through ``mrirecon predict`` with the same config. All methods are scored
here, against the split's targets, with the same per-volume metrics, so the table compares like
with like.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from mrirecon.baselines.run import load_config
from mrirecon.data.transforms import crop_target
from mrirecon.data.volumes import TARGET_KEYS
from mrirecon.errors import UserError
from mrirecon.evaluation.metrics import ssim_per_slice, volume_metrics
from mrirecon.evaluation.results import METRICS, acceleration_label, format_table, write_results

ERROR_GAIN = 4.0


def _reconstruction_root(path: Path) -> Path:
    """Accept a baseline/test output folder (with ``reconstructions/``) or the folder itself."""
    return path / "reconstructions" if (path / "reconstructions").is_dir() else path


def _predict_checkpoint(name: str, ckpt: Path, config: Path, split: str, out: Path) -> Path:
    from mrirecon.training.cli import run_lightning_cli

    target = out / "predictions" / name
    run_lightning_cli(
        ["predict", "--config", str(config), "--ckpt_path", str(ckpt), "--output_dir", str(target),
         "--data.test_split", split, "--trainer.logger", "false", "--trainer.default_root_dir", str(target)]
    )
    return target


def _read_volumes(root: Path) -> dict[tuple[str, float], Path]:
    files = {}
    for acc_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name.endswith("x")):
        try:
            acc = float(acc_dir.name[:-1])
        except ValueError:
            continue
        for f in sorted(acc_dir.glob("*.h5")):
            files[(f.name, acc)] = f
    if not files:
        raise UserError(f"{root}: no reconstructions (<acc>x/<file>.h5) in this folder")
    return files


def _load(path: Path, key: str) -> np.ndarray:
    try:
        with h5py.File(path, "r") as hf:
            return np.asarray(hf[key], dtype=np.float32)
    except (OSError, KeyError) as err:
        raise UserError(f"{path}: cannot read '{key}' ({err})") from None


def _crop(volume: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre crop (slices, H, W) to the reconstructions' size, as the DataModule crops targets."""
    return crop_target(torch.from_numpy(volume), tuple(shape)).numpy()


def score_methods(methods: dict[str, Path], split_dir: Path, challenge: str, progress: bool = True):
    """Per-volume metrics of every method, and the file map used for the figure."""
    target_key = TARGET_KEYS[challenge]
    per_volume, files = {}, {}
    for name, root in methods.items():
        files[name] = _read_volumes(root)
        per_volume[name] = {}
        for (fname, acc), path in tqdm(files[name].items(), desc=f"scoring {name}", disable=not progress):
            recon = _load(path, "reconstruction")
            target = _crop(_load(split_dir / fname, target_key), recon.shape[-2:])
            if target.shape != recon.shape:
                raise UserError(f"{path}: shape {recon.shape} differs from the target's {target.shape}")
            per_volume[name][(fname, acc)] = volume_metrics(torch.from_numpy(target), torch.from_numpy(recon))
    return per_volume, files


def write_summary_csv(summary: dict, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "acceleration", "volumes", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std"))])
        for method, by_acc in summary.items():
            for acc, e in by_acc.items():
                writer.writerow([method, acc, e["volumes"], *(f"{e[m][s]:.6g}" for m in METRICS for s in ("mean", "std"))])


def comparison_figure(files, split_dir: Path, challenge: str, acceleration: float, picks: list[tuple[str, int]], path: Path) -> None:
    """Target and each method (with |error| x4 below), for the chosen slices, SSIM/PSNR in labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(files)
    cols = 1 + len(names)
    fig, axes = plt.subplots(2 * len(picks), cols, figsize=(2.6 * cols, 5.4 * len(picks)), squeeze=False)
    for p, (fname, slice_num) in enumerate(picks):
        target_volume = _load(split_dir / fname, TARGET_KEYS[challenge])
        vmax = float(target_volume.max())
        recons = {name: _load(files[name][(fname, acceleration)], "reconstruction")[slice_num] for name in names}
        target = _crop(target_volume, recons[names[0]].shape)[slice_num]
        axes[0 + 2 * p, 0].imshow(target, cmap="gray", vmin=0, vmax=vmax)
        axes[2 * p, 0].set_title(f"target\n{fname} [{slice_num}]", fontsize=9)
        axes[2 * p + 1, 0].text(0.5, 0.5, f"|error| x{ERROR_GAIN:g}\n(one scale\nfor all panels)", ha="center", va="center", fontsize=9)
        for c, name in enumerate(names, start=1):
            image = recons[name]
            t, r = torch.from_numpy(target)[None], torch.from_numpy(image)[None]
            ssim = float(ssim_per_slice(t, r, vmax)[0])
            psnr = 10 * np.log10(vmax**2 / float(((t.double() - r.double()) ** 2).mean()))
            axes[2 * p, c].imshow(image, cmap="gray", vmin=0, vmax=vmax)
            axes[2 * p, c].set_title(f"{name} ({acceleration_label(acceleration)})\nSSIM {ssim:.3f}  PSNR {psnr:.2f} dB", fontsize=9)
            axes[2 * p + 1, c].imshow(np.abs(image - target) * ERROR_GAIN, cmap="gray", vmin=0, vmax=vmax)
            axes[2 * p + 1, c].set_title(f"|{name} - target| x{ERROR_GAIN:g}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _parse_method(text: str) -> tuple[str, Path]:
    if "=" not in text:
        raise UserError(f"--method {text!r}: expected NAME=PATH (a reconstruction folder or a .ckpt)")
    name, path = text.split("=", 1)
    return name, Path(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mrirecon report", description="Compare methods on one split: table + figure.")
    parser.add_argument("--config", required=True, type=Path, help="the training config (data folder, challenge)")
    parser.add_argument("--method", action="append", required=True, metavar="NAME=PATH",
                        help="a reconstruction folder (from predict/baseline) or a checkpoint; repeat per method")
    parser.add_argument("--split", default=None, help="default: the config's data.test_split (test)")
    parser.add_argument("--out", type=Path, default=Path("runs/report"))
    parser.add_argument("--acceleration", type=float, default=None, help="acceleration shown in the figure (default: the lowest)")
    parser.add_argument("--slices", nargs="*", default=None, metavar="FILE:SLICE",
                        help="slices for the figure (default: the middle slice of the first two volumes)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    data = config["data"]
    challenge = data.get("challenge", "singlecoil")
    split = args.split or data.get("test_split", "test")
    split_dir = Path(data["data_path"]) / f"{challenge}_{split}"
    if not split_dir.is_dir():
        raise UserError(f"{split_dir}: no such split folder")
    args.out.mkdir(parents=True, exist_ok=True)

    methods: dict[str, Path] = {}
    for name, path in map(_parse_method, args.method):
        if path.suffix == ".ckpt":
            if not path.is_file():
                raise UserError(f"{path}: no such checkpoint file")
            path = _predict_checkpoint(name, path, args.config, split, args.out)
        elif not path.is_dir():
            raise UserError(f"{path}: no such folder")
        methods[name] = _reconstruction_root(path)

    per_volume, files = score_methods(methods, split_dir, challenge, progress=not args.no_progress)
    summary = write_results(per_volume, args.out, {"split": split, "config": str(args.config),
                                                    "methods_from": {k: str(v) for k, v in methods.items()}})
    table = format_table(summary["methods"], markdown=True)
    (args.out / "report.md").write_text(f"# Comparison on {split_dir}\n\n{table}\n\n![slices](comparison.png)\n")
    write_summary_csv(summary["methods"], args.out / "report.csv")

    common = set.intersection(*(set(f) for f in files.values()))
    if not common:
        raise UserError("the methods share no (volume, acceleration): were they run on the same split?")
    acc = args.acceleration if args.acceleration is not None else min(a for _, a in common)
    vols = sorted({f for f, a in common if a == acc})
    if not vols:
        raise UserError(f"no method has reconstructions at {acceleration_label(acc)}")
    if args.slices:
        picks = [(s.rsplit(":", 1)[0], int(s.rsplit(":", 1)[1])) for s in args.slices]
    else:
        picks = []
        for fname in vols[:2]:
            n = _load(files[next(iter(files))][(fname, acc)], "reconstruction").shape[0]
            picks.append((fname, n // 2))
    comparison_figure(files, split_dir, challenge, acc, picks, args.out / "comparison.png")
    print(format_table(summary["methods"]))
    print(f"\n{args.out / 'report.md'}\n{args.out / 'report.csv'}\n{args.out / 'comparison.png'}")
    return 0
