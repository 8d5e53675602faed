"""The one exception type for mistakes a user can make, and the process exit codes.

The CLI prints a TinyscaleError's message as a single line and exits with EXIT_USAGE;
everything else is a bug and keeps its traceback.
"""

EXIT_USAGE = 2          # a user mistake: one line names the knob and the fix
EXIT_PREEMPTED = 75     # EX_TEMPFAIL: SIGTERM (preemption) saved a checkpoint; run again
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT) saved a checkpoint; run again
RESUMABLE = (EXIT_PREEMPTED, EXIT_INTERRUPTED)


class TinyscaleError(Exception):
    """A user error: the message is one sentence naming the knob and the fix."""


class MissingOptional(Exception):
    """An optional evaluation part is not installed; the message says how to install it."""
