"""The one exception type for user mistakes.

A :class:`UserError` is a problem with what the user gave us (a file, a folder, a config
value, a checkpoint). The command line prints its message as one line and exits with
status 2, without a traceback; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input, reported as one line naming the file and the problem."""
