"""``mrirecon baseline``: zero-filled and CS-TV reconstructions of a split, scored like a checkpoint.

The baselines read the same config as training (its ``data:`` section, so the same folder, crop
and accelerations) and get the same fixed per-volume masks from :class:`ReconDataModule`'s test
loader. They write reconstructions in the submission format and the same ``metrics.csv`` /
``summary.json`` as ``mrirecon test``.

CS-TV settings live in the config's ``cs_tv:`` section (see :class:`CSTVSettings`; LightningCLI
accepts and ignores it during training, so one config file serves both).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

import torch
import yaml
from tqdm import tqdm

from mrirecon.baselines.cs_tv import (
    DEFAULT_ITERATIONS,
    DEFAULT_LAMBDA_REL,
    cs_tv_reconstruct,
    estimate_sensitivities,
    relative_lambda_to_absolute,
)
from mrirecon.data.datamodule import ReconDataModule
from mrirecon.data.dataset import KSpaceBatch, kspace_to_recon_batch
from mrirecon.data.transforms import crop_target
from mrirecon.errors import UserError
from mrirecon.evaluation.metrics import VolumeMetricAccumulator
from mrirecon.evaluation.results import format_table, write_results
from mrirecon.evaluation.writer import ReconstructionWriter

METHODS = ("zero-filled", "cs-tv")


@dataclass
class CSTVSettings:
    """Compressed sensing with TV: ``argmin_x ½‖M F S x − y‖² + λ TV(x)`` per slice.

    Args:
        iterations: primal-dual iterations per slice.
        lam: relative λ per acceleration (λ = lam × max |zero-filled image| of the slice).
        lam_default: relative λ for accelerations not listed in ``lam``.
        batch_size: slices solved together.
    """

    iterations: int = DEFAULT_ITERATIONS
    lam: dict[int, float] = field(default_factory=dict)
    lam_default: float = DEFAULT_LAMBDA_REL
    batch_size: int = 16

    def __post_init__(self) -> None:
        # YAML written by --print_config quotes the keys ('4'); accept both spellings.
        self.lam = {int(float(k)): float(v) for k, v in self.lam.items()}

    def lam_for(self, acceleration: float) -> float:
        return float(self.lam.get(int(round(acceleration)), self.lam_default))


def load_config(path: Path) -> dict:
    """The YAML config as a dict, with one-line errors."""
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict) or "data" not in config:
        raise UserError(f"{path}: no 'data:' section")
    return config


def _settings(config: dict, path: Path) -> CSTVSettings:
    raw = config.get("cs_tv") or {}
    known = {f.name for f in fields(CSTVSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"{path}: unknown key cs_tv.{unknown[0]} (known: {', '.join(sorted(known))})")
    return CSTVSettings(**raw)


def _num_low_frequencies(mask: torch.Tensor) -> torch.Tensor:
    """Width of the contiguous sampled band around the centre column, per row of (B, W) masks."""
    width = mask.shape[-1]
    centre = width // 2
    counts = []
    for row in mask.bool().cpu():
        left = centre
        while left > 0 and row[left - 1]:
            left -= 1
        right = centre
        while right < width and row[right]:
            right += 1
        counts.append(max(right - left, 1))
    return torch.tensor(counts)


def reconstruct_cs_tv(batch: KSpaceBatch, settings: CSTVSettings) -> torch.Tensor:
    """CS-TV magnitude images (B, h, w), cropped like the targets."""
    mask = batch.mask.to(batch.masked_kspace.real.dtype)
    sens = None
    if batch.multicoil:
        sens = estimate_sensitivities(batch.masked_kspace, _num_low_frequencies(batch.mask).to(mask.device))
    lam_rel = torch.tensor([settings.lam_for(a) for a in batch.acceleration.tolist()], device=mask.device)
    lam = relative_lambda_to_absolute(lam_rel, batch.masked_kspace, mask, sens)
    image = cs_tv_reconstruct(batch.masked_kspace, mask, lam, iterations=settings.iterations, sens=sens)
    return crop_target(image.abs(), batch.crop_size)


def run_baseline(
    method: str,
    config_path: Path,
    output_dir: Path,
    split: Optional[str] = None,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Reconstruct and score a split with one baseline; returns the summary."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}: choose from {', '.join(METHODS)}")
    config = load_config(config_path)
    settings = _settings(config, config_path)
    data_args = dict(config["data"])
    if split:
        data_args["test_split"] = split
    data_args.update(transform_on_device=True, batch_size=settings.batch_size if method == "cs-tv" else data_args.get("batch_size", 1))
    try:
        dm = ReconDataModule(**data_args)
    except TypeError as err:
        raise UserError(f"{config_path}: bad data section ({err})") from None
    dm.setup("test")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    volumes = dm.volumes(dm.test_split)
    writer = ReconstructionWriter(Path(output_dir) / "reconstructions", per_acceleration=not dm.use_file_masks,
                                  num_slices={v.path.name: v.num_slices for v in volumes})
    metrics = VolumeMetricAccumulator()
    loader = dm.test_dataloader()
    for batch in tqdm(loader, desc=f"{method} on {dm.test_split}", disable=not progress):
        batch = KSpaceBatch(*(x.to(dev) if isinstance(x, torch.Tensor) else x for x in batch))
        recon_batch = kspace_to_recon_batch(batch)
        image = recon_batch.zero_filled if method == "zero-filled" else reconstruct_cs_tv(batch, settings)
        writer.add(image, batch.fname, batch.slice_num, batch.acceleration)
        if bool(batch.has_target.all()):
            keys = [(f, float(a)) for f, a in zip(batch.fname, batch.acceleration.tolist())]
            metrics.update(batch.target, image, batch.max_value, keys, batch.slice_num)
    writer.finish()
    per_volume = metrics.compute()
    meta = {"split": dm.test_split, "method": method, "config": str(config_path)}
    if method == "cs-tv":
        meta["cs_tv"] = {"iterations": settings.iterations, "lam": settings.lam, "lam_default": settings.lam_default}
    if not per_volume:
        print(f"{method}: reconstructions in {writer.output_dir} (no targets to score)")
        return meta
    summary = write_results({method: per_volume}, output_dir, meta)
    print(format_table(summary["methods"]))
    print(f"\nreconstructions: {writer.output_dir}\nper-volume metrics: {Path(output_dir) / 'metrics.csv'}")
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mrirecon baseline",
        description="Zero-filled or CS-TV reconstructions of a split, scored like `mrirecon test`.",
    )
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--config", required=True, type=Path, help="a training config (its data: and cs_tv: sections)")
    parser.add_argument("--split", default=None, help="split to reconstruct (default: data.test_split, i.e. test)")
    parser.add_argument("--output_dir", type=Path, default=None, help="default: runs/baselines/<config name>/<method>")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    out = args.output_dir or Path("runs") / "baselines" / args.config.stem / args.method
    run_baseline(args.method, args.config, out, args.split, args.device, progress=not args.no_progress)
    return 0
