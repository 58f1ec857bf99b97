"""What a `--resume` may change: the run's stored spec.json against the flags the command gives.

A flag left out of a resume command takes the run's own value. A flag given must agree with the
run where a change would mix two searches in one (`FIXED`: the space, its data, size, seed,
budget and options, and what Tune restores from its own state, which a new value could not
reach), and may differ where the new value truly takes effect (`MAY_CHANGE`: more trials, where
the data lies, where the driver runs, how long it waits, whether it builds a report). Every
change taken is recorded in spec.json (`history`).

Pure: spec dictionaries in, messages and dictionaries out.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from typing import Any

__all__ = ["CARRIED", "FIXED", "MAY_CHANGE", "changes", "differences", "effective_data_size", "history", "resumed_document",
           "resumed_fields"]

#: spec field -> (flag, why it cannot change on a resume)
FIXED: dict[str, tuple[str, str]] = {
    "space": ("--space", "the space defines every trial's network and search space"),
    "data": ("--data", "trials on two datasets are not one search"),
    "budget": ("--budget", "the budget fixes epochs, data size and calibration of every trial"),
    "data_size": ("--data-size", "trials on two data sizes are not comparable"),
    "seed": ("--seed", "the seed fixes the data split and every trial's seed"),
    "scheduler": ("--scheduler", "Tune restores the run's own scheduler"),
    "workers_per_trial": ("--workers-per-trial", "interrupted trials restart from checkpoints of their own kind"),
    "device": ("--device", "trials measured on two kinds of device are not comparable"),
    "cpus_per_trial": ("--cpus-per-trial", "Tune restores its trials' resources and the run's concurrency"),
    "gpus_per_trial": ("--gpus-per-trial", "Tune restores its trials' resources and the run's concurrency"),
    "retries": ("--retries", "Tune restores the run's own failure policy"),
    "reuse_actors": ("--no-reuse-actors", "Tune restores the run's own actor policy"),
}
#: spec fields a resume may change, with the flag that changes them; each takes effect
MAY_CHANGE: dict[str, str] = {
    "trials": "--trials",
    "data_root": "--data-root",
    "download": "--download",
    "address": "--address",
    "node_timeout": "--node-timeout",
    "report": "--no-report",
    "storage": "--storage",
}
#: what a run's spec.json records about the run's past, which a resume's new document must keep:
#: its resumes, and the conventions search.recalibrate moved it to (the report states them)
CARRIED = ("history", "convention_changes")


def effective_data_size(spec: dict[str, Any]) -> Any:
    """The data size a stored spec ran with (its own, else its budget's)."""
    return spec.get("data_size") or (spec.get("budget_detail") or {}).get("data_size")


def _shown(value: Any) -> str:
    return "(not set)" if value is None else str(value)


def differences(stored: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    """One line per fixed value the command asks differently from the run (empty: none). `asked`
    holds only what the command gave, as spec fields; `options` maps option names to values."""
    out = []
    for key, (flag, why) in FIXED.items():
        if key not in asked or key not in stored and key != "data_size":
            continue
        old = effective_data_size(stored) if key == "data_size" else stored[key]
        if asked[key] != old and not (key == "data_size" and asked[key] is None):
            out.append(f"{flag}: the run has {_shown(old)}, this command gives {_shown(asked[key])} ({why})")
    old_options = stored.get("options") or {}
    for name, value in sorted((asked.get("options") or {}).items()):
        if old_options.get(name) != value:
            out.append(f"--{name.replace('_', '-')}: the run has {_shown(old_options.get(name))}, this command gives "
                       f"{_shown(value)} (the space's options fix its trials)")
    return out


def changes(stored: dict[str, Any], fields: dict[str, Any]) -> dict[str, list[Any]]:
    """{field: [the run's value, the new one]} for every changeable field that changes."""
    return {k: [stored.get(k), fields[k]] for k in MAY_CHANGE if k in fields and fields[k] != stored.get(k)}


def resumed_fields(stored: dict[str, Any], asked: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """The RunSpec fields of the resumed run: the run's own, then what the command changes.
    `known`: the RunSpec's field names (a spec of an older version may lack some, or hold more)."""
    out = {k: v for k, v in stored.items() if k in known}
    out.update({k: v for k, v in asked.items() if k in MAY_CHANGE and k in known})
    return out


def history(stored: dict[str, Any], changed: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The run's record of its resumes, with this one added (what it changed, when, where)."""
    past = list(stored.get("history") or [])
    return past + [{"resumed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "host": socket.gethostname(), "pid": os.getpid(), "changed": changed}]


def resumed_document(stored: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """The spec.json an accepted resume writes: this session's document (`doc`), with the run's
    first start, its past (`CARRIED`) and this resume added to its history. Nothing the run
    recorded about itself is lost by resuming it."""
    out = {**doc, **{k: stored[k] for k in CARRIED if k in stored}}
    provenance = dict(doc.get("provenance") or {})
    past = stored.get("provenance") or {}
    provenance["first_started_at"] = past.get("first_started_at") or past.get("started_at")
    out["provenance"] = provenance
    out["history"] = history(stored, changes(stored, doc))
    return out
