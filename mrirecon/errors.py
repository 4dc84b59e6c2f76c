"""The one exception type for user mistakes.

A :class:`UserError` is a problem with what the user gave us (a file, a folder, a config
value, a checkpoint, an output location). The command line prints its message as one line and
exits with status 2, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re

# PyTorch re-raises an exception from a DataLoader worker in the main process as
# ``type(msg)`` where ``msg`` holds the worker's whole formatted traceback; its last line is
# ``mrirecon.errors.UserError: <the original message>``.
_WORKER_TRACEBACK = re.compile(r"^Caught UserError in .*?Original Traceback", re.DOTALL)
_LAST_USER_ERROR = re.compile(r"UserError: (.*)\s*$")


class UserError(Exception):
    """A mistake in the user's input, reported as one line naming the file or key and the problem."""

    def __init__(self, message: str = "") -> None:
        message = str(message)
        if _WORKER_TRACEBACK.match(message):
            # The same one line the user sees with num_workers 0.
            found = _LAST_USER_ERROR.search(message.rstrip())
            if found:
                message = found.group(1).strip()
        super().__init__(message)


class TrainingDiverged(UserError):
    """The training loss became NaN or Inf (a learning rate too high, bad data)."""
