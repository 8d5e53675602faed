"""The one exception type for mistakes a user can make (bad config, missing data, ...).

The CLI prints its message as a single line and exits with code 2; everything else is
a bug and keeps its traceback.
"""


class TinyscaleError(Exception):
    """A user error: the message is one sentence naming the knob and the fix."""
