"""`python -m search.run --space NAME`: train every candidate, calibrate its exits, report fronts.

Exit codes: 0 done (even when some trials failed: they are in the results with their reasons);
2 bad input (unknown space or dataset, bad value, missing or corrupt data, resources no node
has, a cluster that does not answer, a run another driver holds, a resume that would change
what fixes the run; nothing is written); 1 the search could not go on (it broke, its disk filled
up, or its cluster went away: what was written is kept); 130 / 143 interrupted by SIGINT
(Ctrl-C) / SIGTERM (finished trials, results and report are kept; interrupted trials restart
from their checkpoints with --resume).

Every message prints what the user typed verbatim (search/say.py). A run is locked before it is
read or written (search/run_lock.py); a resume takes the run's own values for the flags left out
(search/resume.py).
"""

from __future__ import annotations

from search.signals import StopRequest  # first, and light: a Ctrl-C is ours from the first moment

_STOP = StopRequest(phase="load").install() if __name__ == "__main__" else None  # recorded until `main` runs

import argparse  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from rich.console import Console  # noqa: E402

from search.checks import (  # noqa: E402
    BadInput,
    check_address,
    check_bucket_run,
    check_continuable,
    check_conventions,
    check_device,
    check_resumable,
    check_resume,
    check_storage,
    read_stored_spec,
)
from search.run_lock import RunLock, release_all  # noqa: E402
from search.say import error, say  # noqa: E402
from search.signals import Interrupted, exit_code  # noqa: E402
from search.spec import NUMBERS, RunSpec, check_numbers, default_run_name  # noqa: E402
from search.schedulers import check as check_scheduler, describe as describe_schedulers, list_schedulers  # noqa: E402
from trainables.storage import is_uri, run_mirror  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    from spaces import list_spaces
    from trainables.data import describe_datasets

    p = argparse.ArgumentParser(
        prog="python -m search.run",
        description="Search a named space of early-exit / hierarchical classifiers with Ray Tune + Optuna, "
        "calibrate each trained network's exits, and report Pareto fronts.",
        epilog=f"spaces: {', '.join(list_spaces())}.  datasets: {describe_datasets()}.",
    )
    p.add_argument("--space", required=True, help=f"one of: {', '.join(list_spaces())}")
    p.add_argument("--data", default=None, help=f"dataset (default: the space's); one of: {describe_datasets()}")
    p.add_argument("--data-root", default=None, help="directory holding the dataset's official files")
    p.add_argument("--download", action="store_true", default=None, help="download the dataset into --data-root if missing")
    p.add_argument("--trials", type=int, default=None, help="number of trials (default: the budget's)")
    p.add_argument("--budget", default=None, help="the space's budget: smoke (minutes on a laptop) or full (a real search); "
                   "each space lists its own")
    for name, spaces_with in _space_options().items():  # each space's own run options
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=spaces_with)
    p.add_argument("--data-size", default=None, choices=["tiny", "smoke", "full"],
                   help="dataset size (default: the budget's): full, or a class-balanced smoke/tiny subset")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPUs per trial; fractions pack trials onto one GPU (default with a GPU: 1/k, k trials per GPU as "
                        "many as the space's largest network's measured memory, the CPUs and a cap of 8 allow; "
                        "else 0)")
    p.add_argument("--cpus-per-trial", type=float, default=None, help="CPU cores per trial, shared by its workers (default 1)")
    p.add_argument("--workers-per-trial", type=int, default=None,
                   help="data-parallel workers per trial (Ray Train TorchTrainer inside the Tune trial, Accelerate DDP; "
                        "gloo on CPUs, one GPU each on GPUs); default: --gpus-per-trial when that is a whole number "
                        "above 1, else 1")
    p.add_argument("--address", default=None, help="Ray cluster address to join (default: start Ray locally)")
    p.add_argument("--node-timeout", type=float, default=None,
                   help="with --address: seconds to wait for a node that can hold one trial (an autoscaling cluster "
                        "may add it) before refusing; 0 refuses at once (default 300)")
    p.add_argument("--storage", default=None, help="directory of run directories (default runs), shared by all nodes on a "
                   "cluster; or a bucket: s3://BUCKET/PREFIX or gs://BUCKET/PREFIX (see clusters/README.md)")
    p.add_argument("--name", default=None, help="run name (default: SPACE-UTCTIME)")
    p.add_argument("--resume", action="store_true", default=None,
                   help="resume the run --name in --storage: a flag left out takes the run's value; one given must agree "
                        "with the run, except --trials (more trials), --data-root, --download, --address, --node-timeout, "
                        "--no-report")
    p.add_argument("--seed", type=int, default=None, help="run seed, 0 .. 2^32-1 (default 0); each trial's seed derives from it")
    p.add_argument("--scheduler", default=None, choices=list_schedulers(), help=f"Tune scheduler ({describe_schedulers()})")
    p.add_argument("--retries", type=int, default=None, help="times a crashed trial is retried from its checkpoint")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-report", action="store_true", default=None, help="skip building report.html at the end")
    p.add_argument("--no-reuse-actors", action="store_true", default=None, help="start a fresh worker process for every trial")
    return p


def _space_options() -> dict[str, str]:
    """Every run option any space declares, with its "space: help (accepted values)" texts."""
    from spaces import get_space, list_spaces

    out: dict[str, str] = {}
    for name in list_spaces():
        for key, opt in get_space(name).options.items():
            text = out.get(key, "")
            out[key] = (text + "; " if text else "") + f"{name}: {opt.help} ({opt.accepts()})"
    return out


def _fail(console: Console, msg: str, code: int = 2) -> int:
    error(console, msg)  # verbatim (search/say.py), unbroken: paths stay whole
    return code


def _plugin_problem() -> str | None:
    from spaces import plugin_errors

    errs = plugin_errors()
    if not errs:
        return None
    return ("EXITSEARCH_SPACES names space modules that cannot be imported: " + "; ".join(errs)
            + ". Fix the variable (comma-separated importable module names, on PYTHONPATH) or unset it")


def main(argv: list[str] | None = None) -> int:
    stop = _STOP or StopRequest().install()  # Ctrl-C / SIGTERM from here on end the run cleanly
    console = Console(stderr=True)
    try:
        stop.phase = "start"
        stop.check()  # a signal that came while this module was imported
        _reap(console)
        return _main(argv, console, stop)
    except Interrupted as exc:
        say(console, ("interrupted", "yellow"), f" ({signal.Signals(exc.signum).name}) before the search started; "
            "nothing was written")
        _leave_ray(exit_code(exc.signum))
        return exit_code(exc.signum)


def _reap(console: Console) -> None:
    """End the Ray processes a killed driver left on this machine (search/ray_session.py)."""
    from search.ray_session import reap_orphans

    for mark, pids in reap_orphans().items():
        say(console, ("cleaned up", "yellow"), f" {len(pids)} Ray process(es) left by a search driver that was killed "
            f"(pid {mark.partition('-')[0]}): {', '.join(map(str, sorted(pids)))}")


def _leave_ray(code: int) -> None:
    """After an interrupt that may have hit `import ray` or `ray.init` halfway, Ray can crash the
    interpreter's teardown: its threads, or the `shutdown` that `ray._private.worker` registers
    with atexit as soon as it is imported, which on a half-imported `ray` package fails with a
    traceback ("module 'ray' has no attribute 'actor'"). So once any of Ray is loaded: shut Ray
    down if its package is whole, and leave at once with the intended code (no atexit, no teardown)."""
    release_all()  # os._exit skips every finally: the run's lock goes first
    if not any(m == "ray" or m.startswith("ray.") for m in list(sys.modules)):
        return
    ray = sys.modules.get("ray")
    whole = ray is not None and not getattr(getattr(ray, "__spec__", None), "_initializing", False) \
        and callable(getattr(ray, "shutdown", None))
    if whole:  # a half-imported ray has started nothing to shut down (ray.init was never reached)
        try:  # is_initialized() is False while ray.init is halfway: its threads may still run
            ray.shutdown()
        except BaseException:
            pass
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


#: the value of every flag left out of a new run (parsed as None, so that a resume can tell a flag
#: given from one left out: a resume takes the run's own value for what is left out)
_DEFAULTS = {"budget": "smoke", "cpus_per_trial": 1.0, "node_timeout": 300.0, "storage": "runs", "resume": False,
             "seed": 0, "scheduler": "fifo", "retries": 1, "device": "auto", "no_report": False,
             "no_reuse_actors": False, "download": False}
#: flag dest -> RunSpec field, for what a flag sets directly
_FIELDS = {"data": "data", "data_root": "data_root", "download": "download", "trials": "trials", "budget": "budget",
           "data_size": "data_size", "gpus_per_trial": "gpus_per_trial", "cpus_per_trial": "cpus_per_trial",
           "workers_per_trial": "workers_per_trial", "address": "address", "node_timeout": "node_timeout",
           "seed": "seed", "scheduler": "scheduler", "retries": "retries", "device": "device", "space": "space",
           "storage": "storage"}


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, set[str]]:
    """The arguments, with defaults filled in, and the names of those the user gave."""
    args = _parser().parse_args(argv)
    given = {k for k, v in vars(args).items() if v is not None}
    for key, value in _DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args, given


def _asked(args: argparse.Namespace, given: set[str]) -> dict:
    """What the command gives, as RunSpec fields (a resume compares these with the run's)."""
    out = {_FIELDS[k]: getattr(args, k) for k in given if k in _FIELDS}
    if "data_root" in out:
        out["data_root"] = str(Path(out["data_root"]).resolve())
    if "storage" in out and not is_uri(out["storage"]):
        out["storage"] = str(Path(out["storage"]).resolve())
    if "no_report" in given:
        out["report"] = not args.no_report
    if "no_reuse_actors" in given:
        out["reuse_actors"] = not args.no_reuse_actors
    options = {k: getattr(args, k) for k in _space_options() if k in given}
    if options:
        out["options"] = options
    return out


def _main(argv: list[str] | None, console: Console, stop: StopRequest) -> int:
    args, given = _parse(argv)
    problem = _plugin_problem()
    if problem:
        return _fail(console, problem)
    from spaces import get_space
    from trainables.data import DatasetUnavailable, UnknownDataset, canonical_dataset

    try:  # every number finite and in range before anything else (search/spec.py)
        check_numbers({k: getattr(args, k, None) for k in NUMBERS})
    except ValueError as exc:
        return _fail(console, str(exc))
    try:
        space = get_space(args.space)
    except KeyError as exc:
        return _fail(console, str(exc.args[0]))
    try:  # a name with an argument comes back in the form every worker can use (csv:PATH: the path absolute)
        if args.data is not None:
            args.data = canonical_dataset(args.data)
    except (UnknownDataset, DatasetUnavailable) as exc:
        return _fail(console, str(exc))
    if args.resume and not args.name:
        return _fail(console, "--resume needs --name of the run to resume")
    try:
        budget = space.budget(args.budget)
        options = space.resolve_options({k: getattr(args, k) for k in _space_options()})
        check_scheduler(args.scheduler, space.declaration(budget, options).objectives)
        storage = args.storage if is_uri(args.storage) else str(Path(args.storage).resolve())
        name = args.name or default_run_name(args.space)
        RunSpec(space=args.space, data=args.data or space.default_data, name=name, storage=storage)  # the name's form
        check_storage(storage)
    except ValueError as exc:  # BadInput too
        return _fail(console, str(exc))
    lock = RunLock(storage, name)
    try:  # one run, one driver: taken before anything of the run is read or written, held to the end
        taken_over = lock.acquire()
    except BadInput as exc:
        return _fail(console, str(exc))
    try:
        if taken_over:
            say(console, ("lock", "yellow"), f" {taken_over}")
        return _run(args, given, space, storage, name, console, stop)
    finally:
        lock.release()


def _spec_fields(args: argparse.Namespace, given: set[str], space, storage: str, name: str, console: Console) -> dict:
    """The RunSpec fields: a new run's from the arguments and their defaults; a resumed run's from
    its spec.json, changed where the command may change it (search/resume.py), or BadInput."""
    import dataclasses

    from search.resume import differences, resumed_fields

    asked = _asked(args, given)
    if args.resume:
        stored = read_stored_spec(storage, name)
        diffs = differences(stored, asked)
        if diffs:
            raise BadInput(f"--resume of run {name!r} cannot change what fixes its trials:\n  " + "\n  ".join(diffs)
                           + "\nLeave those flags out (a resume takes the run's own values), or start a new run with "
                           "another --name")
        fields = resumed_fields(stored, asked, {f.name for f in dataclasses.fields(RunSpec)})
        return fields | {"name": name, "storage": storage, "resume": True}
    data = args.data or space.default_data
    budget = space.budget(args.budget)
    options = space.resolve_options({k: getattr(args, k) for k in _space_options()})
    gpus, packing = args.gpus_per_trial, None
    if gpus is None:  # on a GPU: as many trials per GPU as a measured trial's memory allows (search/packing.py)
        from search.packing import measured_default

        gpus, packing = measured_default(space, data, options, args, console)
    return dict(
        space=args.space, data=data, name=name, storage=storage, budget=args.budget, data_size=args.data_size,
        trials=args.trials if args.trials is not None else budget.trials, seed=args.seed,
        data_root=str(Path(args.data_root).resolve()) if args.data_root else None, download=args.download,
        gpus_per_trial=gpus, cpus_per_trial=args.cpus_per_trial,
        workers_per_trial=args.workers_per_trial if args.workers_per_trial is not None else max(1, int(gpus)),
        address=args.address, node_timeout=args.node_timeout, resume=False, scheduler=args.scheduler,
        retries=args.retries, device=args.device, report=not args.no_report, reuse_actors=not args.no_reuse_actors,
        options=options, packing=packing)


def _run(args: argparse.Namespace, given: set[str], space, storage: str, name: str, console: Console,
         stop: StopRequest) -> int:
    from trainables.data import DatasetUnavailable, canonical_dataset

    import torch

    try:
        spec = RunSpec(**_spec_fields(args, given, space, storage, name, console))
        try:  # a resumed run's dataset must still be one (UnknownDataset is a ValueError)
            canonical_dataset(spec.data)
        except DatasetUnavailable as exc:
            raise BadInput(str(exc)) from exc
        budget = space.budget(spec.budget)
        check_scheduler(spec.scheduler, space.declaration(budget, space.resolve_options(spec.options)).objectives)
        check_device(spec.device, torch.cuda.is_available())
        if is_uri(spec.storage):  # a bucket run: its files come down to this machine's copy to be resumed
            check_bucket_run(spec.storage, spec.name, spec.resume, spec.run_dir)
            if spec.resume:
                _pull_run(spec)
        check_resume(spec.run_dir, spec.resume, Path(spec.storage))
        if spec.resume:  # first whether this code can continue the run at all, then whether its state can
            check_conventions(spec.run_dir, space.declaration(budget, space.resolve_options(spec.options)))
            check_resumable(spec.run_dir)
            if not is_uri(spec.storage):  # Tune's state cut off by a kill while Tune copied it in: put back whole
                from search.tune_state import recover

                restored = recover(spec.run_dir)
                if restored:
                    say(console, ("resume", "yellow"), f" Tune's state in {spec.run_dir} was cut off (its driver was "
                        f"killed while Tune copied it in): put back whole from Tune's staging copy ({', '.join(restored)})")
            check_continuable(spec)
        check_address(spec.address)
    except ValueError as exc:  # BadInput too
        return _fail(console, str(exc))

    where = f"{spec.location()} (this machine's copy: {spec.run_dir})" if is_uri(spec.storage) else spec.run_dir
    say(console, ("run", "bold"), f" {spec.name}: space {spec.space}, data {spec.data}, budget {spec.budget}, "
        f"{spec.trials} trials -> {where}")
    from search.tuner import run_search
    from trainables.engine.family import UnsuitableData

    from search.disk import current as disk_guard, is_disk_full

    code = 0
    try:
        run_search(spec, console, stop)
    except (DatasetUnavailable, UnsuitableData, BadInput) as exc:
        return _fail(console, str(exc))
    except Interrupted as exc:
        if not spec.run_dir.exists():
            raise
        stop.signum = stop.signum or exc.signum
    except Exception as exc:  # the search itself broke (not a trial: those are recorded)
        guard = disk_guard()
        if guard is not None and is_disk_full(exc):  # a full disk after Tune stopped: what could be written is
            guard.full(f"{type(exc).__name__}: {exc}")
        else:
            console.print_exception(max_frames=5)
            code = _fail(console, f"search failed: {type(exc).__name__}: {exc}", 1)
    finally:
        guard = disk_guard()
        if guard is not None:
            guard.done()  # the reserve goes (released already when the disk filled)
    stop.phase = "finish"
    if guard is not None and guard.cause is not None:  # search/disk.py: the run stopped on a full disk
        return _fail(console, guard.message(spec.storage, _finished(spec.run_dir), _resume_command(spec)), 1)
    if stop.signum is not None:
        code = exit_code(stop.signum)
    if spec.report and (spec.run_dir / "results.parquet").exists():
        from reports.build import build_report
        from reports.summary import print_summary

        try:
            path = build_report(spec.run_dir)
            run_mirror(spec).push("report.html", "figures")
            print_summary(spec.run_dir, Console())
            say(console, ("report", "bold green"), f" {path}")
        except Exception as exc:
            console.print_exception(max_frames=5)
            code = code or _fail(console, f"report failed: {type(exc).__name__}: {exc}", 1)
    if stop.signum is not None:
        say(console, ("interrupted", "yellow"), f" ({signal.Signals(stop.signum).name}): finished trials and results are "
            f"kept, interrupted trials restart from their last checkpoint; resume with\n  {_resume_command(spec)}")
    return code


def _finished(run_dir: Path) -> int:
    """Trials of the run that ended (complete, partial or failed), from their statuses."""
    import json

    done = 0
    for path in run_dir.glob("trials/*/status.json"):
        try:
            done += json.loads(path.read_text()).get("status") not in ("running", "interrupted", None)
        except (OSError, ValueError):
            pass
    return done


def _pull_run(spec: RunSpec) -> None:
    try:
        run_mirror(spec).pull_run()
    except OSError as exc:
        raise BadInput(f"run {spec.name!r} cannot be fetched from {spec.storage} to {spec.run_dir} ({exc})") from exc


def _resume_command(spec: RunSpec) -> str:
    return spec.resume_command()

if __name__ == "__main__":
    sys.exit(main())
