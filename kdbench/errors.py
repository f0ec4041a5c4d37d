"""The one exception type for mistakes a user can make.

Anything a user can get wrong (a malformed suite, an unknown method or backbone, a missing data
folder, a corrupt checkpoint) raises :class:`KdbenchError` with a one-line message that names the
key or file and what was expected. The CLI prints it as one line and exits 2. Every other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class KdbenchError(Exception):
    """A user-facing error: bad input, not a bug. The message is one line."""
