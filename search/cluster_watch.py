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
from pathlib import Path
from typing import Any

__all__ = ["ClusterWatch", "gone_after", "watch_cluster"]

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


def watch_cluster(spec: Any, console: Any, run_dir: Path, mirror: Any, write_results: Callable[[], Any]) -> ClusterWatch:
    """Watch the cluster of the run `spec` describes (its driver is connected to it); when it goes,
    settle the run's trials, write its tables (`write_results`), release its lock and say how to
    resume, then leave with exit 1."""
    import ray

    from search.collect import settle_unfinished, settle_with_journal

    address = ray.get_runtime_context().gcs_address

    def gone(silent: float) -> None:
        from search.disk import current as disk_guard
        from search.run_lock import release_all
        from search.say import error

        try:  # what the run has, written down: the trials it was running restart on --resume
            mirror.push_trial_status(settle_unfinished(run_dir, lambda tid: "interrupted")
                                     | settle_with_journal(run_dir, True))
            write_results()
            kept = "finished trials and results are kept, the trials it was running are interrupted and restart from "
            kept += "their checkpoints"
        except Exception as exc:  # noqa: BLE001 - the message must still come out
            kept = f"the results tables could not be written ({type(exc).__name__}: {exc}); the trials' files are kept"
        guard = disk_guard()
        if guard is not None:
            guard.done()
        release_all()
        where = f"--address {spec.address}" if spec.address else "this search's own Ray"
        from rich.console import Console

        error(console or Console(stderr=True),
              f"the Ray cluster at {address} ({where}) went away: its GCS has not answered for {silent:.0f} s (stopped "
              f"with `ray stop`, its head node lost, or the network cut). The run stopped: {kept}. Once the cluster is "
              f"back, resume with\n  {spec.resume_command()}")
        os._exit(1)

    watch = ClusterWatch(address, gone)
    watch.start()
    return watch
