"""The ``mrirecon`` command.

``mrirecon fit|validate|test|predict --config configs/<name>.yaml`` run through LightningCLI
(dotted overrides, ``--print_config``, the resolved config saved next to the logs);
``mrirecon data``, ``baseline``, ``report`` and ``study`` are our own subcommands. Each
subcommand's module is imported only when it runs, so ``mrirecon --help`` and ``mrirecon data``
start without importing torch's training stack or Lightning.

A user mistake (a bad file, folder, config key, checkpoint or output location) ends with one
line on stderr and exit status 2; anything else keeps its traceback because it is a bug.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from typing import Optional

from mrirecon import __version__
from mrirecon.core.atomic import DISK_FULL, describe_os_error
from mrirecon.errors import UserError
from mrirecon.internals import is_peer_failure

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
# Subcommand -> (module with a main(argv) -> int, one-line description).
TOOLS = {
    "data": ("mrirecon.commands.data", "simulate or check fastMRI-format data"),
    "baseline": ("mrirecon.commands.baseline", "zero-filled / CS-TV reconstructions of a split, scored like test"),
    "report": ("mrirecon.commands.report", "methods side by side on one split: table and figure"),
    "reconstruct": ("mrirecon.commands.reconstruct", "a trained model on single files: k-space in, images out"),
    "export": ("mrirecon.commands.export", "a trained network as TorchScript or ONNX"),
    "import": ("mrirecon.commands.import_weights", "weights trained elsewhere (fastMRI's published files) as a checkpoint"),
    "study": ("mrirecon.commands.study", "optimiser / normalisation study"),
}

USAGE = (
    "usage: mrirecon {fit,validate,test,predict} --config CONFIG [...]\n"
    f"       mrirecon {{{','.join(TOOLS)}}} ...\n"
    "       mrirecon --version\n\n"
    "  fit/validate/test/predict  LightningCLI: train or evaluate (see --help of each)\n"
    + "".join(f"  {name:<27}{text}\n" for name, (_, text) in TOOLS.items())
)


def _lightning_main(argv: list[str]) -> None:
    from mrirecon.lightning.cli import run_lightning_cli

    run_lightning_cli(argv)


def _quiet_disk_full_in_threads() -> None:
    """A full disk in a background writer (TensorBoard's) is reported once, by the main thread,
    which gets the same error at its next write, instead of as a thread's traceback."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, OSError) and args.exc_value.errno in DISK_FULL:
            return
        previous(args)

    threading.excepthook = hook


class _CtrlC:
    """Remembers a Ctrl-C. Lightning's test, validate and predict loops catch the interrupt
    themselves, shut down and call ``exit(1)``, so without this a Ctrl-C during ``baseline``
    or ``test`` would end as a silent failure instead of as an interrupt."""

    received = False

    @classmethod
    def install(cls) -> None:
        cls.received = False  # a new command (tests call main more than once in one process)
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) not in (signal.default_int_handler, cls._handler):
            return  # someone chose another handling (a debugger, an embedding program)
        signal.signal(signal.SIGINT, cls._handler)

    @classmethod
    def _handler(cls, signum, frame) -> None:
        cls.received = True
        signal.default_int_handler(signum, frame)


def main(argv: Optional[list[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Read when Lightning and jsonargparse are first imported: their "possible user" hints and
    # deprecation notices about their own internals are noise on our users' terminals.
    os.environ.setdefault("POSSIBLE_USER_WARNINGS", "off")
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    _quiet_disk_full_in_threads()
    _CtrlC.install()
    try:
        if argv and argv[0] in ("--version", "-V", "version"):
            print(f"mrirecon {__version__}")
            sys.exit(0)
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(USAGE)
            sys.exit(0 if argv else 2)
        if argv[0] in TOOLS:
            module = importlib.import_module(TOOLS[argv[0]][0])
            sys.exit(module.main(argv[1:]))
        if argv[0] in LIGHTNING_SUBCOMMANDS or argv[0].startswith("-"):
            _lightning_main(argv)
            return
        raise UserError(f"unknown command {argv[0]!r}; choose from {', '.join((*LIGHTNING_SUBCOMMANDS, *TOOLS))}")
    except UserError as err:
        print(f"mrirecon: error: {err}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:
        _quiet_closed_stdout()
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        # A full disk under a writer that is not ours (TensorBoard's event files).
        print(f"mrirecon: error: {err.filename or 'output'}: cannot write ({describe_os_error(err)})", file=sys.stderr)
        sys.exit(2)
    except RuntimeError as err:
        if not _peer_failed(err):
            raise
        # Another process of a distributed run stopped (its own error line says why).
        print(f"mrirecon: error: process {os.environ.get('LOCAL_RANK', '?')} stopped: another process of the run failed",
              file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("mrirecon: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit as stop:
        if stop.code == 1 and _CtrlC.received:  # Lightning's exit after its graceful shutdown
            print("mrirecon: interrupted", file=sys.stderr)
            sys.exit(130)
        _flush_stdout()
        raise
    _flush_stdout()


def _flush_stdout() -> None:
    """Writes out what is buffered while a closed pipe can still be handled here, not in the
    interpreter's exit (which prints 'Exception ignored ... BrokenPipeError' and exits 120)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_closed_stdout()


def _quiet_closed_stdout() -> None:
    """The reader of our output went away (`mrirecon data check D | head`): stop quietly with
    exit 1, as the Python documentation advises; stdout goes to /dev/null so that no later
    flush fails."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(1)


def _peer_failed(err: RuntimeError) -> bool:
    """Whether a distributed collective failed because a peer process died."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return False
    return is_peer_failure(err)


if __name__ == "__main__":
    main()
