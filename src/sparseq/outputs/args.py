"""argparse for the small commands (report, export, evaluate): bad arguments become one
line on stderr and exit status 2, like every other sparseq error."""

import argparse


class UsageError(Exception):
    """A bad command line; the message is one line."""


class OneLineParser(argparse.ArgumentParser):
    """Raises `UsageError` (prog: message) instead of printing the usage and exiting."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")
