"""Argument checks for network constructors, with messages that name the argument.

The configuration layer prefixes the section (``model.net.init_args.``), so a bad value in a
YAML file or on the command line becomes one line naming its key.
"""

from __future__ import annotations


def check_positive(**values: int) -> None:
    """Raises ``ValueError("<name>: ...")`` for a value that is not a positive integer."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be a positive integer, got {value!r}")


def check_probability(**values: float) -> None:
    """Raises ``ValueError("<name>: ...")`` for a value outside [0, 1)."""
    for name, value in values.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}: must lie in [0, 1), got {value!r}")
