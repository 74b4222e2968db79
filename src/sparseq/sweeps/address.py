"""Probing a Ray address before `ray.init` is given it.

ray.init(address="HOST:PORT") of an address where nothing listens does not fail: the
GCS client retries for minutes (Ray 2.60 here, docs/stack-notes.md). A plain TCP
connect with a timeout answers in milliseconds (refused) or seconds (unroutable), so
an unreachable cluster is a one-line error well within 30 s.
"""

import socket
from urllib.parse import urlsplit

from sparseq.sweeps.errors import SweepError

PROBE_SECONDS = 5.0
GCS_PORT = 6379  # `ray start --head`'s default
CLIENT_PORT = 10001  # Ray Client's (ray://) default


def host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of HOST[:PORT] or ray://HOST[:PORT]; None for "auto" / "local",
    which Ray resolves itself (and fails on at once when there is no cluster)."""
    if address in ("auto", "local"):
        return None
    client = address.startswith("ray://")
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        port = parts.port
    except ValueError:
        raise SweepError(f"--address {address!r}: not HOST:PORT (a port is a number)") from None
    if not parts.hostname:
        raise SweepError(f"--address {address!r}: not HOST:PORT or ray://HOST:PORT")
    return parts.hostname, port or (CLIENT_PORT if client else GCS_PORT)


def probe(address: str, seconds: float = PROBE_SECONDS) -> None:
    """SweepError (one line) unless something accepts TCP connections at `address`."""
    target = host_port(address)
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=seconds):
            return
    except TimeoutError:
        why = f"no answer within {seconds:.0f} s"
    except OSError as error:
        why = error.strerror or type(error).__name__
    raise SweepError(
        f"--address {address}: cannot reach a Ray cluster at {host}:{port} ({why}); "
        "start one with `ray start --head`, or leave out --address for a local Ray"
    )
