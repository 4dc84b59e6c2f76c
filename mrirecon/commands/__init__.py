"""The ``mrirecon`` command and its subcommands (the only layer besides Lightning's that
imports Lightning, and only where a subcommand needs it)."""
