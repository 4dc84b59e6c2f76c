"""mrirecon against fastMRI's reference pipeline, side by side on the same files.

    python scripts/bench_train.py --quick          # 2 CPU cores: about 3 minutes
    python scripts/bench_train.py                  # longer runs; adds GPU rows when torch sees CUDA

Measured, interleaved (ours, reference, ours, ...) with the same threads, so that a busy shared
machine slows both alike; the median of the repeats counts:

* start-up: ``mrirecon --help`` (goal: under 2 s on an idle machine; it imports no Lightning);
* the data chain: slices/s of the training loader (read, mask, inverse FFT, crop, RSS,
  normalise) against ``fastmri.data.SliceDataset`` + ``UnetDataTransform``;
* training: slices/s of a whole ``mrirecon fit`` epoch without validation (Lightning, our
  loader) against a plain PyTorch loop over fastMRI's dataset, transform and
  ``fastmri.models.Unet``: the same network (instance norm), RMSprop, L1 loss, batch size,
  threads and loader processes; 320x320 single-coil and 15-coil data;
* metrics: SSIM + PSNR + NMSE of a 320x320x30 volume against ``fastmri.evaluate`` with one
  torch thread (scikit-image runs on one).

Ratios are ours / reference: above 1, ours is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import cpu_name

REPO = Path(__file__).resolve().parents[1]


# --- workers (each measurement runs in a fresh interpreter) ---------------------------------------


def worker_ours(spec: dict) -> float:
    """Slices/s of `mrirecon fit` training steps after the warm-up ones."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.cli import LightningCLI

    torch.set_num_threads(spec["threads"])
    result: dict = {}

    class Throughput(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == spec["warmup"]:
                if trainer.strategy.root_device.type == "cuda":
                    torch.cuda.synchronize()
                result["start"], result["slices"] = time.perf_counter(), 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if "start" in result:
                result["slices"] += batch.size

        def on_train_end(self, trainer, pl_module):
            if trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize()
            result["seconds"] = time.perf_counter() - result["start"]

    original = LightningCLI.instantiate_trainer

    def instantiate_trainer(self, **kwargs):
        trainer = original(self, **kwargs)
        trainer.callbacks.append(Throughput())
        return trainer

    LightningCLI.instantiate_trainer = instantiate_trainer
    from mrirecon.commands.main import main

    with tempfile.TemporaryDirectory() as tmp:
        main([
            "fit", "--config", str(REPO / "configs" / "demo_unet.yaml"), "--data.data_path", spec["data"],
            "--data.challenge", spec["challenge"], "--data.batch_size", str(spec["batch"]),
            "--data.num_workers", str(spec["workers"]), "--data.accelerations", "[4]", "--data.center_fractions", "[0.08]",
            "--data.transform_on_device", str(spec["device"] == "cuda").lower(),
            "--model.net.init_args.chans", str(spec["chans"]), "--model.net.init_args.norm", "instance",
            "--optimizer", "torch.optim.RMSprop", "--optimizer.lr", "0.001",
            "--trainer.max_steps", str(spec["steps"]), "--trainer.max_epochs", "-1",
            "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
            "--trainer.accelerator", spec["device"], "--trainer.precision", spec["precision"],
            "--trainer.default_root_dir", tmp,
        ])
    return result["slices"] / result["seconds"]


def worker_reference(spec: dict) -> float:
    """Slices/s of a plain PyTorch loop over fastMRI's dataset, transform and U-Net."""
    import torch
    from fastmri.data import SliceDataset
    from fastmri.data.subsample import create_mask_for_mask_type
    from fastmri.data.transforms import UnetDataTransform
    from fastmri.models import Unet

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    mask = create_mask_for_mask_type("random", [0.08], [4])
    dataset = SliceDataset(Path(spec["data"]) / f"{spec['challenge']}_train", spec["challenge"],
                           transform=UnetDataTransform(spec["challenge"], mask_func=mask, use_seed=False))
    loader = torch.utils.data.DataLoader(dataset, batch_size=spec["batch"], shuffle=True, num_workers=spec["workers"])
    net = Unet(1, 1, chans=spec["chans"], num_pool_layers=4).to(device)
    optimizer = torch.optim.RMSprop(net.parameters(), lr=1e-3)
    dtype = torch.bfloat16 if spec["precision"] == "bf16-mixed" else None
    step, slices, start = 0, 0, None
    while step < spec["steps"]:
        for batch in loader:
            if step == spec["warmup"]:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            image, target = batch.image.unsqueeze(1).to(device), batch.target.unsqueeze(1).to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = torch.nn.functional.l1_loss(net(image), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if start is not None:
                slices += image.shape[0]
            if step == spec["steps"]:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return slices / (time.perf_counter() - start)


def chain_rates(spec: dict) -> tuple[float, float]:
    """Slices/s of ours and fastMRI's training data chain (main process, no workers)."""
    import torch
    from fastmri.data import SliceDataset
    from fastmri.data.subsample import create_mask_for_mask_type
    from fastmri.data.transforms import UnetDataTransform

    from mrirecon.lightning.datamodule import ReconDataModule

    torch.set_num_threads(spec["threads"])
    dm = ReconDataModule(spec["data"], challenge=spec["challenge"], batch_size=spec["batch"], num_workers=0,
                         accelerations=[4], center_fractions=[0.08], use_cache=False, seed=0)
    dm.setup("fit")
    dm.keep_kspace = False  # as for an image network (fit sets it from the model): what fastMRI's transform yields
    reference = SliceDataset(Path(spec["data"]) / f"{spec['challenge']}_train", spec["challenge"],
                             transform=UnetDataTransform(spec["challenge"], create_mask_for_mask_type("random", [0.08], [4])))
    ref_loader = torch.utils.data.DataLoader(reference, batch_size=spec["batch"], num_workers=0)
    ours_loader = dm.train_dataloader()

    def rate(loader, seconds: float = 1.5) -> float:
        """Whole passes over the split, at least one, until ``seconds`` have gone by."""
        start, n = time.perf_counter(), 0
        while True:
            for batch in loader:
                n += batch.size if hasattr(batch, "size") and isinstance(batch.size, int) else batch.image.shape[0]
            if time.perf_counter() - start >= seconds:
                return n / (time.perf_counter() - start)

    rate(ours_loader, 0), rate(ref_loader, 0)  # warm-up: file cache, first-call costs
    rates = {"ours": [], "reference": []}
    for _ in range(spec["repeats"]):
        rates["ours"].append(rate(ours_loader))
        rates["reference"].append(rate(ref_loader))
    return statistics.median(rates["ours"]), statistics.median(rates["reference"])


def metric_rates(repeats: int) -> tuple[float, float]:
    """Volumes/s of our metrics and fastmri.evaluate's on a 320x320x30 volume, one thread."""
    import numpy as np
    import torch
    from fastmri import evaluate

    from mrirecon.core.metrics import volume_metrics

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    gt = np.abs(rng.standard_normal((30, 320, 320))).astype(np.float32) * 1e-4
    pred = (gt + rng.standard_normal(gt.shape).astype(np.float32) * 1e-5).astype(np.float32)
    ours = lambda: volume_metrics(torch.from_numpy(gt), torch.from_numpy(pred))  # noqa: E731
    reference = lambda: (evaluate.ssim(gt, pred), evaluate.psnr(gt, pred), evaluate.nmse(gt, pred))  # noqa: E731
    ours(), reference()
    times = {"ours": [], "reference": []}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("reference", reference)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return 1 / statistics.median(times["ours"]), 1 / statistics.median(times["reference"])


def run_worker(kind: str, spec: dict) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(Path(__file__).resolve()), "worker", kind, json.dumps(spec)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def help_seconds(repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mrirecon", "--help"], capture_output=True, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def simulate(root: Path, challenge: str, volumes: int, slices: int) -> Path:
    from mrirecon.data.simulate import Preset, simulate_dataset

    target = root / f"{challenge}_{volumes}x{slices}"
    if not (target / f"{challenge}_train").is_dir():
        preset = Preset(recon_size=320, volumes=(volumes, 1, 1), slices=slices, coils=(15, 15), snr=(30.0, 30.0))
        simulate_dataset(target, preset=preset, challenge=challenge, seed=0, progress=False)
    return target


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "worker":
        spec = json.loads(sys.argv[3])
        print(worker_ours(spec) if sys.argv[2] == "ours" else worker_reference(spec))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small network and few steps: about 3 minutes on 2 cores")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "mrirecon-bench-train")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes of both pipelines")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    quick = args.quick
    repeats = args.repeats or 3
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"date {time.strftime('%Y-%m-%d')}; {cpu_name()}, {os.cpu_count()} logical cores"
          + (f"; {torch.cuda.get_device_name(0)}" if "cuda" in devices else "")
          + f"; torch {torch.__version__}; {args.threads} threads, {args.workers} loader processes; {repeats} interleaved repeats")
    rows = [("`mrirecon --help`", f"{help_seconds(3):.2f} s", "", "")]
    for challenge in ("singlecoil", "multicoil"):
        data = simulate(args.data, challenge, volumes=2 if quick else 4, slices=8)
        base = {"data": str(data), "challenge": challenge, "threads": args.threads, "workers": args.workers,
                "repeats": repeats}
        ours, reference = chain_rates({**base, "batch": 2})
        rows.append((f"data chain, {challenge}", f"{ours:.1f}", f"{reference:.1f}", f"{ours / reference:.2f}"))
        for device in devices:
            for precision in (["32-true"] if device == "cpu" else ["32-true", "bf16-mixed"]):
                spec = {**base, "device": device, "precision": precision, "batch": 1 if device == "cpu" else 8,
                        "chans": 8 if quick and device == "cpu" else 32,
                        "steps": (24 if quick else 60) if device == "cpu" else 300, "warmup": 4 if device == "cpu" else 30}
                rates = {"ours": [], "reference": []}
                for _ in range(repeats):
                    for kind in ("ours", "reference"):
                        rates[kind].append(run_worker(kind, spec))
                ours, reference = statistics.median(rates["ours"]), statistics.median(rates["reference"])
                label = f"training, {challenge}, {device}, {precision}, U-Net chans {spec['chans']}, batch {spec['batch']}"
                rows.append((label, f"{ours:.2f}", f"{reference:.2f}", f"{ours / reference:.2f}"))
                print(rows[-1], flush=True)
    ours, reference = metric_rates(5 if quick else 10)
    rows.append(("metrics, 320x320x30 volume, 1 thread (volumes/s)", f"{ours:.1f}", f"{reference:.1f}", f"{ours / reference:.2f}"))
    print("\n| measurement | ours (slices/s) | fastMRI (slices/s) | ours / fastMRI |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
