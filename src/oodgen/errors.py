"""One-line error messages: what every layer uses to quote an exception it turns into its own."""
from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message, or the name of its type when it has none."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__
