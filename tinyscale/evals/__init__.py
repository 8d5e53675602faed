"""Evaluation: held-out loss, story completions and their coherence metrics."""


class MissingOptional(Exception):
    """An optional evaluation part is not installed; the message says how to install it."""
