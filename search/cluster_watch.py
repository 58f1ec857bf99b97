"""A Ray cluster that vanishes mid-run ends the run with a message, not a bare exit 1.

When the GCS (Ray's head process) is gone, Ray's core worker in the driver waits
`gcs_rpc_server_reconnect_timeout_s` (60 s) and then ends the whole process itself, with exit 1
and a line of C++ log. `ClusterWatch`, a thread of the driver, connects to the GCS's port every
`_PROBE_S` seconds; when it has not answered for `gone_after()` seconds (less than Ray's 60), it
calls `on_gone` first, which writes down what the run has (the trials it was running become
`interrupted`, the results tables are written), releases the run's lock, prints what happened
and how to resume, and leaves with exit 1.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

__all__ = ["ClusterWatch", "gone_after"]

_PROBE_S = 2.0


def gone_after() -> float:
    """Seconds without an answer from the GCS after which the cluster counts as gone
    (EXITSEARCH_CLUSTER_GONE_S; default 30, well inside Ray's own 60)."""
    return float(os.environ.get("EXITSEARCH_CLUSTER_GONE_S", "30"))


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=_PROBE_S):
            return True
    except OSError:
        return False


class ClusterWatch(threading.Thread):
    """Watch the GCS at `gcs_address` (HOST:PORT); `on_gone(seconds_silent)` when it is gone."""

    def __init__(self, gcs_address: str, on_gone: Callable[[float], None]) -> None:
        super().__init__(name="cluster-watch", daemon=True)
        host, _, port = gcs_address.rpartition(":")
        self.host, self.port, self.on_gone = host, int(port), on_gone
        self._stop = threading.Event()

    def run(self) -> None:
        silent_since: float | None = None
        while not self._stop.wait(_PROBE_S):
            if _answers(self.host, self.port):
                silent_since = None
                continue
            now = time.monotonic()
            silent_since = silent_since if silent_since is not None else now
            if now - silent_since >= gone_after() and not self._stop.is_set():
                self.on_gone(now - silent_since)
                return

    def stop(self) -> None:
        self._stop.set()
