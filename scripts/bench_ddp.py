"""Training throughput of `mrirecon fit` on 1 and N processes of Lightning's DDP (CPU gloo or GPUs).

    python scripts/bench_ddp.py                      # CPU: 1 process x 2 threads vs 2 x 1 thread
    python scripts/bench_ddp.py --accelerator gpu --processes 1   # one GPU: slices/s only

Each configuration is an ordinary `mrirecon fit` (demo data, the demo config's U-Net, no
validation) run in a fresh interpreter; configurations alternate, repeated, so that a busy
shared machine slows them alike, and the same total number of threads is used by each. The
slices/s are counted from the end of the warm-up steps to the last step, over all processes.
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


def _timing_callback(out: Path, warmup: int):
    import pytorch_lightning as pl
    import torch

    class Throughput(pl.Callback):
        def __init__(self) -> None:
            self.slices = 0
            self.start = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == warmup:
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self.start is not None:
                self.slices += batch.size

        def on_train_end(self, trainer, pl_module):
            seconds = time.perf_counter() - self.start
            total = trainer.strategy.reduce(torch.tensor(float(self.slices)), reduce_op="sum")
            if trainer.is_global_zero:
                out.write_text(json.dumps({"slices": float(total), "seconds": seconds}))

    return Throughput()


def run_worker(out: Path, warmup: int, argv: list[str]) -> None:
    """Runs `mrirecon fit` in this process with the timing callback (every DDP process runs this)."""
    from pytorch_lightning.cli import LightningCLI

    original = LightningCLI.instantiate_trainer

    def instantiate_trainer(self, **kwargs):
        trainer = original(self, **kwargs)
        trainer.callbacks.append(_timing_callback(out, warmup))
        return trainer

    LightningCLI.instantiate_trainer = instantiate_trainer
    from mrirecon.commands.main import main

    main(argv)


def measure(data: Path, processes: int, threads: int, steps: int, warmup: int, accelerator: str, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "throughput.json"
        argv = [
            "fit", "--config", str(REPO / "configs" / "demo_unet.yaml"), "--data.data_path", str(data),
            "--data.batch_size", str(batch_size), "--data.num_workers", "0",
            "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1", "--trainer.max_time", "null",
            "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
            "--trainer.accelerator", accelerator, "--trainer.devices", str(processes),
            "--trainer.default_root_dir", tmp,
        ]
        if processes > 1:
            argv += ["--trainer.strategy", "ddp"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "scripts")])}
        command = [sys.executable, str(Path(__file__).resolve()), "worker", str(out), str(warmup), "--", *argv]
        result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp)
        if result.returncode != 0:
            raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
        numbers = json.loads(out.read_text())
        return numbers["slices"] / numbers["seconds"]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        out, warmup, separator, *argv = sys.argv[2:]
        assert separator == "--"
        run_worker(Path(out), int(warmup), argv)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "demo", help="demo data (simulated if missing)")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=2, help="total CPU threads, shared by the processes")
    parser.add_argument("--steps", type=int, default=60, help="training steps of each process")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (args.data / "singlecoil_train").is_dir():
        from mrirecon.data.simulate import simulate_dataset

        simulate_dataset(args.data, preset="demo", progress=False)
    results: dict[int, list[float]] = {p: [] for p in args.processes}
    for _ in range(args.repeats):
        for processes in args.processes:  # interleaved
            threads = max(1, args.threads // processes)
            results[processes].append(measure(args.data, processes, threads, args.steps, args.warmup,
                                              args.accelerator, args.batch_size))
    print(f"date {time.strftime('%Y-%m-%d')}, {cpu_name()}, "
          f"{os.cpu_count()} logical cores, accelerator {args.accelerator}, batch {args.batch_size} per process, "
          f"{args.steps} steps per process ({args.warmup} warm-up), {args.repeats} interleaved repeats")
    base = statistics.median(results[args.processes[0]])
    print("| processes | threads each | slices/s (median) | all repeats | vs first row |")
    print("|---|---|---|---|---|")
    for processes, rates in results.items():
        median = statistics.median(rates)
        print(f"| {processes} | {max(1, args.threads // processes)} | {median:.1f} | "
              f"{', '.join(f'{r:.1f}' for r in rates)} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
