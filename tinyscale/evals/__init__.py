"""Evaluation: held-out loss, story completions and their coherence metrics."""

from tinyscale.errors import MissingOptional  # noqa: F401 (where evaluation code looks)
