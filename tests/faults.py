"""``python tests/faults.py SPEC -- <mrirecon arguments>``: mrirecon with a fault injected (tests only).

SPEC is ``step:N:SIG`` (send SIG to itself when the batch after optimiser step N starts, i.e.
with N steps done and logged) or ``save:N:SIG`` (during the first checkpoint save at global step N or later, after
half the temporary file was written) or ``test:N:SIG`` (when test batch N starts, in ``test`` and
``baseline``). SIG is ``KILL`` or ``INT`` (Ctrl-C).
"""

from __future__ import annotations

import io
import os
import signal
import sys


def _inject(spec: str) -> None:
    kind, value, name = spec.split(":")
    target, sig = int(value), getattr(signal, f"SIG{name}")
    if kind == "step":
        from mrirecon.lightning.module import ReconModule

        original = ReconModule.on_train_batch_start

        def on_train_batch_start(self, batch, batch_idx):
            if self.global_step == target:
                os.kill(os.getpid(), sig)
            return original(self, batch, batch_idx)

        ReconModule.on_train_batch_start = on_train_batch_start
    elif kind == "test":
        from mrirecon.lightning.module import ReconModule

        original_test_step = ReconModule.test_step

        def test_step(self, batch, batch_idx):
            if batch_idx == target:
                os.kill(os.getpid(), sig)
            return original_test_step(self, batch, batch_idx)

        ReconModule.test_step = test_step
    elif kind == "save":
        import torch

        from mrirecon.core import atomic
        from mrirecon.lightning import checkpoints

        original = checkpoints.SafeCheckpointIO.save_checkpoint

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            if checkpoint.get("global_step", -1) >= target:
                buffer = io.BytesIO()
                torch.save(checkpoint, buffer)
                data = buffer.getvalue()
                with atomic.atomic_path(path) as tmp:
                    with open(tmp, "wb") as f:
                        f.write(data[: len(data) // 2])
                        f.flush()
                        os.kill(os.getpid(), sig)
            return original(self, checkpoint, path, storage_options)

        checkpoints.SafeCheckpointIO.save_checkpoint = save_checkpoint
    else:
        raise SystemExit(f"unknown fault {spec!r}")


if __name__ == "__main__":
    spec, separator, *argv = sys.argv[1:]
    assert separator == "--", "usage: faults.py SPEC -- ARGS"
    _inject(spec)
    from mrirecon.commands.main import main

    main(argv)
