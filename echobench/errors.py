"""The one exception type for mistakes a user can fix.

The CLI prints an `EchobenchError` as a plain message (no traceback) and exits non-zero; anything else
is a bug and keeps its traceback.
"""


class EchobenchError(Exception):
    """Bad input or a missing resource: the message says what was wrong and what to do."""
