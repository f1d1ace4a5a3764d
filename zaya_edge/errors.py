"""One exception type for everything a user can get wrong.

The CLI prints these as a single line (no traceback unless --debug); anything else is a bug.
"""


class ZayaEdgeError(Exception):
    """A problem with the user's input, files or options, explained in one line."""
