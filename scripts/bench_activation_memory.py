"""Activation memory of the unrolled networks with and without activation checkpointing.

Activation checkpointing (``--model.net.init_args.activation_checkpointing true``) keeps only
each cascade's input for the backward pass and recomputes the cascade's inside, trading compute
for memory; running out of GPU memory is fastMRI's most reported VarNet problem. This script
measures, for one training step (forward + backward) of each network with checkpointing off and
on, on the CPU:

- the bytes autograd keeps for the backward pass at the end of the forward (every tensor saved
  for backward, each storage counted once, through ``torch.autograd.graph.saved_tensors_hooks``;
  the tensors that non-reentrant checkpointing saves inside a cascade are its own and are
  recomputed, so they are not counted), which is what a GPU would hold as activations;
- the step's wall time (the median of the repeats, the two settings interleaved);
- that the gradients agree (largest absolute difference).

    python scripts/bench_activation_memory.py [--write docs/benchmarks.md] [--date YYYY-MM-DD]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_name, write_section  # noqa: E402

from mrirecon.core.operator import SamplingMask, fft2c  # noqa: E402
from mrirecon.models import DataConsistentUnet, VarNet  # noqa: E402

HEADING = "## Activation checkpointing of the unrolled networks"


def column_mask(width: int, acceleration: int, generator: torch.Generator) -> torch.Tensor:
    columns = torch.rand(width, generator=generator) < 1.0 / acceleration
    centre = max(2, int(round(0.08 * width)))
    columns[(width - centre) // 2:(width + centre) // 2] = True
    return columns


def varnet_problem(args, generator):
    """Multi-coil k-space as fastMRI's VarNet takes it: a real view, a broadcastable mask."""
    shape = (args.batch, args.coils, args.height, args.width)
    kspace = fft2c(torch.randn(*shape, dtype=torch.complex64, generator=generator))
    columns = column_mask(args.width, 4, generator)
    kspace = kspace * columns
    mask = columns.view(1, 1, 1, -1, 1)
    net_kwargs = dict(num_cascades=args.cascades, chans=args.chans, sens_chans=8)

    def make(checkpointing: bool) -> torch.nn.Module:
        return VarNet(**net_kwargs, activation_checkpointing=checkpointing)

    return make, (torch.view_as_real(kspace), mask), f"VarNet, {args.cascades} cascades, chans {args.chans}, " \
        f"{args.coils} coils of {args.height}x{args.width}, batch {args.batch}"


def cascade_problem(args, generator):
    """Single-coil k-space and its SamplingMask, as DataConsistentUnet takes them."""
    kspace = fft2c(torch.randn(args.batch, 1, args.height, args.width, dtype=torch.complex64, generator=generator))
    columns = torch.stack([column_mask(args.width, 4, generator) for _ in range(args.batch)])
    mask = SamplingMask.from_columns(columns)
    net_kwargs = dict(num_cascades=args.cascades, chans=args.chans)

    def make(checkpointing: bool) -> torch.nn.Module:
        return DataConsistentUnet(**net_kwargs, activation_checkpointing=checkpointing)

    return make, (mask.apply(kspace), mask), f"DataConsistentUnet, {args.cascades} cascades, chans {args.chans}, " \
        f"1 coil of {args.height}x{args.width}, batch {args.batch}"


def saved_bytes_and_step(net: torch.nn.Module, inputs) -> tuple[int, float, list[torch.Tensor]]:
    """Bytes saved for backward by one forward, the step's seconds, and the gradients."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    net.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = net(*inputs)
    output.abs().mean().backward()
    seconds = time.perf_counter() - start
    parameter_bytes = {p.untyped_storage().data_ptr() for p in net.parameters()}
    kept = sum(n for ptr, n in storages.items() if ptr not in parameter_bytes)
    return kept, seconds, [p.grad.clone() for p in net.parameters() if p.grad is not None]


def measure(problem, args) -> str:
    generator = torch.Generator().manual_seed(0)
    make, inputs, label = problem(args, generator)
    torch.manual_seed(0)
    plain = make(False)
    checkpointed = make(True)
    checkpointed.load_state_dict(plain.state_dict())
    for net in (plain, checkpointed):  # warm-up: first calls allocate and pick kernels
        saved_bytes_and_step(net, inputs)
    results = {False: [], True: []}
    for _ in range(args.repeats):
        for flag, net in ((False, plain), (True, checkpointed)):
            results[flag].append(saved_bytes_and_step(net, inputs))
    grad_diff = max((a - b).abs().max().item() for a, b in zip(results[False][-1][2], results[True][-1][2]))
    mib = {flag: results[flag][-1][0] / 2**20 for flag in results}
    seconds = {flag: statistics.median(r[1] for r in results[flag]) for flag in results}
    row = (f"| {label} | {mib[False]:.1f} | {mib[True]:.1f} | {mib[False] / mib[True]:.1f}x | "
           f"{seconds[False]:.2f} | {seconds[True]:.2f} | {grad_diff:.1e} |")
    return row


def run(args) -> str:
    torch.set_num_threads(args.threads)
    lines = ["| network | activations (MiB) | with checkpointing (MiB) | saving | step (s) | "
             "with checkpointing (s) | largest gradient difference |",
             "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for problem in (cascade_problem, varnet_problem):
        row = measure(problem, args)
        lines.append(row)
        print(row, flush=True)
    return "\n".join(lines)


def section(table: str, command: str, date: str, threads: int) -> str:
    return "\n".join([
        HEADING, "",
        f"Date: {date}. Hardware: {cpu_name()}, torch {torch.__version__} ({threads} thread(s)).", "",
        "Command:", "", "```", command, "```", "",
        "One training step (forward, mean magnitude as the loss, backward) of each network with "
        "random weights on random 4x column-masked k-space, activation checkpointing off and on "
        "(the same weights). Activations are the bytes autograd keeps for the backward pass at the "
        "end of the forward (each storage once, parameters excluded), which a GPU would hold; "
        "with checkpointing each cascade keeps only its input and recomputes the rest in the "
        "backward pass. Step times are medians of interleaved repeats.", "",
        table, "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cascades", type=int, default=8)
    parser.add_argument("--chans", type=int, default=12)
    parser.add_argument("--coils", type=int, default=8, help="VarNet's coils")
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", type=Path, help="markdown file whose section to replace/append")
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    args = parser.parse_args()
    table = run(args)
    if args.write:
        command = " ".join(["python", "scripts/bench_activation_memory.py", *sys.argv[1:]])
        write_section(args.write, HEADING, section(table, command, args.date, args.threads))


if __name__ == "__main__":
    main()
