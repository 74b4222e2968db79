"""The error every bad sweep input becomes: one line, printed as `sparseq: error: ...`."""


class SweepError(Exception):
    """Bad sweep input (file, flags, folder or Ray address); str(error) is one line
    that names the sweep file (or flag), the key and the value where they apply."""
