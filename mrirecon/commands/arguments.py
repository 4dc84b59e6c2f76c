"""Command-line parsing for our own subcommands: argparse, with mistakes as one error line.

argparse prints a usage block and exits on a bad argument; our rule is one ``mrirecon: error:``
line naming the argument, exit 2 (the usage stays one ``--help`` away).
"""

from __future__ import annotations

import argparse

from mrirecon.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """:class:`argparse.ArgumentParser` whose errors are a :class:`UserError` (one line)."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def positive_int(text: str) -> int:
    """An integer of at least 1 (batch sizes, image sides)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
