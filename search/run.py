"""`python -m search.run --space NAME`: train every candidate, calibrate its exits, report fronts.

Exit codes: 0 done (even when some trials failed: they are in the results with their reasons);
2 bad input (unknown space or dataset, bad value, missing or corrupt data, resources no node
has, a cluster that does not answer; nothing is written); 1 the search itself broke;
130 / 143 interrupted by SIGINT (Ctrl-C) / SIGTERM (finished trials, results and report are
kept; interrupted trials restart from their checkpoints with --resume).
"""

from __future__ import annotations

from search.signals import StopRequest  # first, and light: a Ctrl-C is ours from the first moment

_STOP = StopRequest().install() if __name__ == "__main__" else None

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
    check_conventions,
    check_device,
    check_resumable,
    check_resume,
    check_storage,
)
from search.signals import Interrupted, exit_code  # noqa: E402
from search.spec import RunSpec, default_run_name  # noqa: E402
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
    p.add_argument("--download", action="store_true", help="download the dataset into --data-root if missing")
    p.add_argument("--trials", type=int, default=None, help="number of trials (default: the budget's)")
    p.add_argument("--budget", default="smoke", help="the space's budget: smoke (minutes on a laptop) or full (a real search); "
                   "each space lists its own")
    for name, spaces_with in _space_options().items():  # each space's own run options
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=spaces_with)
    p.add_argument("--data-size", default=None, choices=["tiny", "smoke", "full"],
                   help="dataset size (default: the budget's): full, or a class-balanced smoke/tiny subset")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPUs per trial; fractions pack trials onto one GPU (default with a GPU: 1/k, k trials per GPU as "
                        "many as the space's largest network's measured memory, the CPUs and a cap of 8 allow; "
                        "else 0)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPU cores per trial, shared by its workers (default 1)")
    p.add_argument("--workers-per-trial", type=int, default=None,
                   help="data-parallel workers per trial (Ray Train TorchTrainer inside the Tune trial, Accelerate DDP; "
                        "gloo on CPUs, one GPU each on GPUs); default: --gpus-per-trial when that is a whole number "
                        "above 1, else 1")
    p.add_argument("--address", default=None, help="Ray cluster address to join (default: start Ray locally)")
    p.add_argument("--node-timeout", type=float, default=300.0,
                   help="with --address: seconds to wait for a node that can hold one trial (an autoscaling cluster "
                        "may add it) before refusing; 0 refuses at once (default 300)")
    p.add_argument("--storage", default="runs", help="directory of run directories (default runs), shared by all nodes on a "
                   "cluster; or a bucket: s3://BUCKET/PREFIX or gs://BUCKET/PREFIX (see clusters/README.md)")
    p.add_argument("--name", default=None, help="run name (default: SPACE-UTCTIME)")
    p.add_argument("--resume", action="store_true", help="resume the run --name in --storage")
    p.add_argument("--seed", type=int, default=0, help="run seed; each trial's seed derives from it")
    p.add_argument("--scheduler", default="fifo", choices=list_schedulers(), help=f"Tune scheduler ({describe_schedulers()})")
    p.add_argument("--retries", type=int, default=1, help="times a crashed trial is retried from its checkpoint")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-report", action="store_true", help="skip building report.html at the end")
    p.add_argument("--no-reuse-actors", action="store_true", help="start a fresh worker process for every trial")
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
    console.print(f"[bold red]error:[/] {msg}", soft_wrap=True)  # unbroken: paths stay whole
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
        return _main(argv, console, stop)
    except Interrupted as exc:
        console.print(f"[yellow]interrupted[/] ({signal.Signals(exc.signum).name}) before the search started; "
                      "nothing was written")
        _leave_ray(exit_code(exc.signum))
        return exit_code(exc.signum)


def _leave_ray(code: int) -> None:
    """After an interrupt that may have hit `ray.init` halfway, Ray's threads can crash the
    interpreter's teardown: shut Ray down, and leave at once with the intended code."""
    if "ray" not in sys.modules:
        return
    import ray

    try:  # is_initialized() is False while ray.init is halfway: its threads may still run
        ray.shutdown()
    except BaseException:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(argv: list[str] | None, console: Console, stop: StopRequest) -> int:
    args = _parser().parse_args(argv)
    problem = _plugin_problem()
    if problem:
        return _fail(console, problem)
    from spaces import get_space
    from trainables.data import DatasetUnavailable, UnknownDataset, canonical_dataset

    try:
        space = get_space(args.space)
    except KeyError as exc:
        return _fail(console, str(exc.args[0]))
    try:  # a name with an argument comes back in the form every worker can use (csv:PATH: the path absolute)
        data = canonical_dataset(args.data or space.default_data)
    except (UnknownDataset, DatasetUnavailable) as exc:
        return _fail(console, str(exc))
    if args.resume and not args.name:
        return _fail(console, "--resume needs --name of the run to resume")
    try:
        budget = space.budget(args.budget)
        options = space.resolve_options({k: getattr(args, k) for k in _space_options()})
        check_scheduler(args.scheduler, space.declaration(budget, options).objectives)
    except ValueError as exc:
        return _fail(console, str(exc))
    import torch

    gpus, packing = args.gpus_per_trial, None
    if gpus is None:  # on a GPU: as many trials per GPU as a measured trial's memory allows (search/packing.py)
        from search.packing import measured_default

        gpus, packing = measured_default(space, data, options, args, console)
    try:
        spec = RunSpec(
            space=args.space,
            data=data,
            name=args.name or default_run_name(args.space),
            storage=args.storage if is_uri(args.storage) else str(Path(args.storage).resolve()),
            budget=args.budget,
            data_size=args.data_size,
            trials=args.trials if args.trials is not None else budget.trials,
            seed=args.seed,
            data_root=str(Path(args.data_root).resolve()) if args.data_root else None,
            download=args.download,
            gpus_per_trial=gpus,
            cpus_per_trial=args.cpus_per_trial,
            workers_per_trial=args.workers_per_trial if args.workers_per_trial is not None else max(1, int(gpus)),
            address=args.address,
            node_timeout=args.node_timeout,
            resume=args.resume,
            scheduler=args.scheduler,
            retries=args.retries,
            device=args.device,
            report=not args.no_report,
            reuse_actors=not args.no_reuse_actors,
            options=options,
            packing=packing,
        )
        check_device(spec.device, torch.cuda.is_available())
        check_storage(spec.storage)
        if is_uri(spec.storage):  # a bucket run: its files come down to this machine's copy to be resumed
            check_bucket_run(spec.storage, spec.name, spec.resume, spec.run_dir)
            if spec.resume:
                _pull_run(spec)
        check_resume(spec.run_dir, spec.resume, Path(spec.storage))
        if spec.resume:
            check_resumable(spec.run_dir)
            check_conventions(spec.run_dir, space.declaration(budget, options))
        check_address(spec.address)
    except ValueError as exc:  # BadInput too
        return _fail(console, str(exc))

    where = f"{spec.location()} (this machine's copy: {spec.run_dir})" if is_uri(spec.storage) else spec.run_dir
    console.print(f"[bold]run[/] {spec.name}: space {spec.space}, data {spec.data}, budget {spec.budget}, "
                  f"{spec.trials} trials -> {where}", soft_wrap=True)
    from search.tuner import run_search
    from trainables.engine.family import UnsuitableData

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
        console.print_exception(max_frames=5)
        code = _fail(console, f"search failed: {type(exc).__name__}: {exc}", 1)
    stop.phase = "finish"
    if stop.requested:
        code = exit_code(stop.signum)
    if spec.report and (spec.run_dir / "results.parquet").exists():
        from reports.build import build_report
        from reports.summary import print_summary

        try:
            path = build_report(spec.run_dir)
            run_mirror(spec).push("report.html", "figures")
            print_summary(spec.run_dir, Console())
            console.print(f"[bold green]report[/] {path}")
        except Exception as exc:
            console.print_exception(max_frames=5)
            code = code or _fail(console, f"report failed: {type(exc).__name__}: {exc}", 1)
    if stop.requested:
        console.print(f"[yellow]interrupted[/] ({signal.Signals(stop.signum).name}): finished trials and results are "
                      f"kept, interrupted trials restart from their last checkpoint; resume with\n"
                      f"  {_resume_command(argv, spec)}", soft_wrap=True)
    return code


def _pull_run(spec: RunSpec) -> None:
    try:
        run_mirror(spec).pull_run()
    except OSError as exc:
        raise BadInput(f"run {spec.name!r} cannot be fetched from {spec.storage} to {spec.run_dir} ({exc})") from exc


def _resume_command(argv: list[str] | None, spec: RunSpec) -> str:
    """The command that continues this run: the same arguments, with --name and --resume."""
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    if "--name" not in args and not any(a.startswith("--name=") for a in args):
        args += ["--name", spec.name]
    if "--resume" not in args:
        args.append("--resume")
    return "python -m search.run " + shlex.join(args)


if __name__ == "__main__":
    sys.exit(main())
