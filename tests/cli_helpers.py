"""Running ``mrirecon`` in tests: in-process or in a fresh interpreter, and reading what it wrote."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import torch
import yaml
from pytorch_lightning import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mrirecon.commands.main import main

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*args) -> Result:
    """``mrirecon <args>`` in this process; only SystemExit is caught, so a traceback fails the test."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    # main() and Lightning set environment variables (seed, warning switches): keep them local.
    with mock.patch.dict(os.environ), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return Result(code, out.getvalue(), err.getvalue())


def run_subprocess(*args, cwd: Path) -> Result:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    proc = subprocess.run(
        [sys.executable, "-m", "mrirecon", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_ok(result: Result) -> None:
    assert result.code == 0, f"exit {result.code}\n{result.err[-3000:]}"


def assert_user_error(result: Result, *fragments: str) -> str:
    """Exit 2 with exactly one ``mrirecon: error:`` line holding every fragment, no traceback."""
    assert result.code == 2, f"exit {result.code}\n{result.err[-3000:]}"
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if line.startswith("mrirecon: error: ")]
    assert len(lines) == 1, result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def write_config(path: Path, data: Path, save_dir: Path, **extra_model) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 1,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(save_dir), "name": "tiny", "default_hp_metric": False},
            },
        },
        "model": {
            "net": {"class_path": "mrirecon.models.Unet", "init_args": {"chans": 4, "num_pool_layers": 2}},
            "num_log_images": 2,
            **extra_model,
        },
        "data": {
            "data_path": str(data),
            "challenge": "singlecoil",
            "accelerations": [4, 8],
            "center_fractions": [0.08, 0.04],
            "batch_size": 4,
            "num_workers": 0,
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def scalar_steps(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def checkpoint_state(ckpt: dict) -> dict:
    """The ModelCheckpoint state; its key spells out monitor and mode."""
    ((key, state),) = [(k, v) for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert "'monitor': 'val/ssim', 'mode': 'max'" in key, key
    return state


def run_baselines(method, config, output_dir, overrides=(), splits=None, progress=False, lam_grid=None):
    """:func:`mrirecon.api.baseline` on a config file with command-line overrides; split -> folder."""
    from mrirecon import api

    results = api.baseline(api.RunConfig.from_arguments(config, list(overrides)), method, splits, output_dir,
                           lam_grid=lam_grid, progress=progress)
    return {split: Path(output_dir) / split if len(results) > 1 else Path(output_dir) for split in results}


def run_baseline(method, config, output_dir, overrides=(), progress=False):
    """One split's baseline; its output folder."""
    (out,) = run_baselines(method, config, output_dir, overrides, progress=progress).values()
    return out


class RunFolderLockProbe(Callback):
    """A Lightning callback (``--trainer.callbacks+ cli_helpers.RunFolderLockProbe``) that fails the
    fit unless its run folder is locked while it trains, as the fit's own lock should hold it."""

    def on_train_start(self, trainer, pl_module):
        from mrirecon.core.atomic import FolderLock
        from mrirecon.errors import UserError

        try:
            FolderLock(trainer.log_dir, "probe").release()
        except UserError:
            return  # locked by the fit, as it should be
        raise AssertionError(f"{trainer.log_dir}: not locked while the fit trains")


def metrics_csv(path: Path) -> dict[tuple[str, str, str], dict[str, float]]:
    """``(method, acceleration, volume) -> {ssim, psnr, nmse}`` of a ``metrics.csv``."""
    with open(path, newline="") as f:
        return {(r["method"], r["acceleration"], r["volume"]): {m: float(r[m]) for m in ("ssim", "psnr", "nmse")}
                for r in csv.DictReader(f)}


def fastmri_scores(target: np.ndarray, recon_file: Path) -> dict[str, float]:
    """fastMRI's metric functions as its evaluation command applies them to one volume.

    The target is first cropped to the reconstruction's size as fastMRI's U-Net transform crops
    it (a no-op but for FLAIR_203-like files, whose 320x320 targets it crops to 264x264).
    """
    from fastmri import evaluate as fastmri_evaluate
    from fastmri.data.transforms import center_crop

    with h5py.File(recon_file) as hf:
        recon = hf["reconstruction"][()]
    target = center_crop(target, recon.shape[-2:])
    side = (target.shape[-1], target.shape[-1])
    target, recon = center_crop(target, side), center_crop(recon, side)
    return {"ssim": fastmri_evaluate.ssim(target, recon).item(), "psnr": float(fastmri_evaluate.psnr(target, recon)),
            "nmse": float(fastmri_evaluate.nmse(target, recon))}
