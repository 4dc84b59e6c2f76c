"""The one exception type for user mistakes.

A :class:`UserError` is a problem with what the user gave us (a file, a folder, a config
value, a checkpoint, an output location). The command line prints its message as one line and
exits with status 2, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from mrirecon.internals import user_error_from_worker


class UserError(Exception):
    """A mistake in the user's input, reported as one line naming the file or key and the problem."""

    def __init__(self, message: str = "") -> None:
        message = str(message)
        # Re-raised from a DataLoader worker: the same one line the user sees with num_workers 0.
        message = user_error_from_worker(message) or message
        super().__init__(message)


class TrainingDiverged(UserError):
    """The training loss became NaN or Inf (a learning rate too high, bad data)."""
