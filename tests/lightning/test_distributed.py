"""Lightning's DDP on CPU processes (gloo): the numbers of any number of processes are one process's.

Every split has an odd number of volumes (but train) with different slice counts, so the shards
of two or three processes are uneven, and a volume's slices must all be scored on one process.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from cli_helpers import REPO, assert_ok, events, run_cli
from fastmri_like import write_volume
from mrirecon.lightning.cli import build_cli

SLICES = {"train": [3, 4, 5, 2], "val": [2, 3, 5], "test": [1, 2, 3, 4, 5]}


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    root = tmp_path_factory.mktemp("uneven") / "data"
    seed = 0
    for split, counts in SLICES.items():
        folder = root / f"singlecoil_{split}"
        folder.mkdir(parents=True)
        for i, slices in enumerate(counts):
            seed += 1
            write_volume(folder / f"{split}_{i}.h5", slices=slices, coils=1, shape=(64, 40), target=(32, 32),
                         challenge="singlecoil", seed=seed)
    return root


def _config(path: Path, data: Path, runs: Path) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "log_every_n_steps": 1,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(runs), "name": "ddp", "default_hp_metric": False}}},
        "model": {"net": {"class_path": "mrirecon.models.Unet", "init_args": {"chans": 4, "num_pool_layers": 2}}},
        "data": {"data_path": str(data), "challenge": "singlecoil", "center_fractions": [0.08, 0.04],
                 "accelerations": [4, 8], "batch_size": 2, "num_workers": 0},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_ddp(*args, processes: int, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """``mrirecon`` with Lightning's DDP strategy on CPU processes, as a user runs it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
           **(env_extra or {})}
    command = [sys.executable, "-m", "mrirecon", *map(str, args), "--trainer.accelerator", "cpu",
               "--trainer.strategy", "ddp", "--trainer.devices", str(processes)]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _per_volume(folder: Path) -> dict:
    with open(folder / "metrics.csv", newline="") as f:
        return {(r["method"], r["acceleration"], r["volume"]): [float(r[m]) for m in ("ssim", "psnr", "nmse")]
                for r in csv.DictReader(f)}


def _table(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(("4x", "8x", "acceleration"))]


@pytest.fixture(scope="module")
def trained(uneven, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_run")
    config = _config(root / "c.yaml", uneven, root / "runs")
    assert_ok(run_cli("fit", "--config", config))
    return config, root / "runs" / "ddp" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.mark.slow  # long: the default suite must stay under 5 minutes on 2 cores
def test_test_and_predict_on_two_and_three_processes_equal_one(trained, tmp_path):
    config, ckpt = trained
    single = run_cli("test", "--config", config, "--ckpt_path", ckpt, "--output_dir", tmp_path / "t1")
    assert_ok(single)
    reference = _per_volume(tmp_path / "t1")
    assert len(reference) == 2 * 2 * len(SLICES["test"])  # two methods, two accelerations
    for processes in (2, 3):
        out = tmp_path / f"t{processes}"
        result = run_ddp("test", "--config", config, "--ckpt_path", ckpt, "--output_dir", out, processes=processes, cwd=tmp_path)
        ours = _per_volume(out)
        assert ours.keys() == reference.keys()
        for key, values in reference.items():
            np.testing.assert_allclose(ours[key], values, rtol=1e-6, err_msg=str(key))
        assert _table(result.stdout) == _table(single.out), result.stdout  # printed once, by rank 0
        assert json.loads((out / "summary.json").read_text())["methods"].keys() == {"unet", "zero-filled"}

    assert_ok(run_cli("predict", "--config", config, "--ckpt_path", ckpt, "--output_dir", tmp_path / "p1"))
    run_ddp("predict", "--config", config, "--ckpt_path", ckpt, "--output_dir", tmp_path / "p2", processes=2, cwd=tmp_path)
    one = sorted(p.relative_to(tmp_path / "p1") for p in (tmp_path / "p1").rglob("*") if p.is_file())
    two = sorted(p.relative_to(tmp_path / "p2") for p in (tmp_path / "p2").rglob("*") if p.is_file())
    assert one == two and len(one) == 2 * len(SLICES["test"])  # every volume once, no temporary files
    for name in one:
        with h5py.File(tmp_path / "p1" / name) as a, h5py.File(tmp_path / "p2" / name) as b:
            expected = a["reconstruction"][()]
            # Relative to the image's scale: processes batch slices differently, and float32
            # convolutions of other batches differ in the last bit (7e-12 at a 1e-4 scale).
            np.testing.assert_allclose(b["reconstruction"][()], expected, rtol=0, atol=1e-6 * np.abs(expected).max())


@pytest.mark.slow  # long (17 s): the default suite must stay under 5 minutes on 2 cores
def test_two_process_fit_validates_like_one_process_and_draws_distinct_masks(uneven, tmp_path):
    config = _config(tmp_path / "c.yaml", uneven, tmp_path / "runs")
    masks = tmp_path / "masks"
    masks.mkdir()
    run_ddp("fit", "--config", config, "--trainer.max_epochs", 2, "--trainer.callbacks+=nets.MaskRecorder",
            processes=2, cwd=tmp_path, env_extra={"MRIRECON_TEST_MASKS": str(masks)})
    run_dir = tmp_path / "runs" / "ddp" / "version_0"
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0"]

    # Each process trained on different slices with different masks; together, each epoch once.
    seen = {r: [json.loads(line) for line in (masks / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)}
    per_epoch = sum(SLICES["train"])
    assert len(seen[0]) == len(seen[1])  # the same number of steps
    for epoch in range(2):
        chunk = [(f, s) for r in (0, 1) for f, s, _ in seen[r][epoch * len(seen[r]) // 2:(epoch + 1) * len(seen[r]) // 2]]
        assert sorted(chunk) == sorted((f"train_{i}.h5", s) for i, n in enumerate(SLICES["train"]) for s in range(n))
        assert len(chunk) == per_epoch
    masks0 = {json.dumps(m) for _, _, m in seen[0]}
    masks1 = {json.dumps(m) for _, _, m in seen[1]}
    assert masks0 != masks1

    # The validation the 2-process fit logged equals a 1-process validation of its checkpoint.
    logged = events(run_dir)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cli = build_cli(["validate", "--config", str(config), "--ckpt_path", str(ckpt)], run=True)
    one = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val")}
    assert one and all(k in logged.Tags()["scalars"] for k in one)
    for tag, value in one.items():
        assert logged.Scalars(tag)[-1].value == pytest.approx(value, rel=1e-6, abs=1e-9), tag
    # 14 slices in 7 batches of 2, one split in two so both processes take 4 steps an epoch.
    assert torch.load(ckpt, weights_only=True)["global_step"] == 2 * 4


@pytest.mark.slow
def test_a_two_process_fit_resumes_at_its_saved_step(uneven, tmp_path):
    config = _config(tmp_path / "c.yaml", uneven, tmp_path / "runs")
    run_ddp("fit", "--config", config, "--trainer.max_epochs", 1, processes=2, cwd=tmp_path)
    run_dir = tmp_path / "runs" / "ddp" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4
    run_ddp("fit", "--config", config, "--trainer.max_epochs", 2, "--ckpt_path", "last", processes=2, cwd=tmp_path)
    assert torch.load(last, weights_only=True)["global_step"] == 8
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0"]
    assert [s for s, _ in ((e.step, e.value) for e in events(run_dir).Scalars("train/loss"))] == list(range(8))


@pytest.mark.slow  # long: the default suite must stay under 5 minutes on 2 cores
def test_a_two_process_baseline_and_report_are_whole_and_equal_one_process(trained, tmp_path):
    """Every process writes its volumes into one staging folder, which the lead swaps in whole."""
    config, ckpt = trained
    assert_ok(run_cli("baseline", "--method", "zero-filled", "--config", config, "--output_dir", tmp_path / "b1"))
    result = run_ddp("baseline", "--method", "zero-filled", "--config", config, "--output_dir", tmp_path / "b2",
                     processes=2, cwd=tmp_path)
    assert _per_volume(tmp_path / "b2") == _per_volume(tmp_path / "b1")
    files = sorted(p.relative_to(tmp_path / "b2") for p in (tmp_path / "b2").rglob("*"))
    assert files == sorted(p.relative_to(tmp_path / "b1") for p in (tmp_path / "b1").rglob("*"))
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]
    assert f"reconstructions: {tmp_path / 'b2' / 'reconstructions'}" in result.stdout

    run_ddp("report", "--config", config, "--method", f"zf={tmp_path / 'b2'}", "--method", f"unet={ckpt}",
            "--out", tmp_path / "r", processes=2, cwd=tmp_path)
    report = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert report["methods"].keys() == {"zf", "unet"}
    assert len(list((tmp_path / "r" / "predictions" / "unet").rglob("*.h5"))) == 2 * len(SLICES["test"])
    assert (tmp_path / "r" / "comparison.png").is_file()
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]
