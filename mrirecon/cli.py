"""Alias (before 0.2): :mod:`mrirecon.commands.main` (the console script of older installs)."""

from mrirecon.commands.main import main

ALIAS_OF = "mrirecon.commands.main"
__all__ = ["main"]

if __name__ == "__main__":
    main()
