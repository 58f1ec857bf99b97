"""Ray Tune + OptunaSearch over a define-by-run space: the distributed search of a run.

- Ray starts locally in-process by default; `address` joins a cluster (then `storage` must be
  a path every node sees, or a bucket URI: trainables/storage.py; the project's packages travel
  as `py_modules`).
- The Optuna study lives in Journal-file storage inside the run directory (`study.journal`),
  so it survives the driver and can be inspected with plain Optuna.
- Metric and mode are set on the searcher only (a list for multi-objective spaces); a Tune
  scheduler, when asked for, acts on the space's declared objectives per epoch
  (search/schedulers.py). A trial a scheduler stops reaches Optuna as PRUNED, never with its
  partial values as final ones, carrying its fidelity and its rung (epochs, values) as user
  attributes, which the sampler (search/sampler.py) ranks pruned trials by; the results table
  records it as `partial` and it is kept off every front.
- Trials run in reused actors (Tune's `reuse_actors`): the trial function resets the
  process-wide state it touches (Accelerate singletons, seeds, torch threads) on entry.
- A trial that raises or diverges is recorded as failed with its reason and the search goes on;
  Tune retries a crashed trial `retries` times from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from search.checks import BadInput, check_conventions, check_fits, check_resumable
from search.cluster_watch import watch_cluster
from search.disk import DiskEvents, DiskGuard, is_disk_full
from search.collect import collect, settle_unfinished, settle_with_journal, write_tables
from search.prepare import numbered_trial_seed, record_failure, reference_costs, run_document, trial_context
from search.ray_logs import one_line_ray_errors
from search.relocate import restoring_into
from search.resume import resumed_document
from search.schedulers import make_scheduler
from search.signals import StopRequest, activate
from search.spec import RunSpec
from trainables.storage import checkpoint_directory, is_uri, run_mirror, trial_sync
from search.study import trial_numbers, trial_states
from search.trial_count import request as request_trials, search_algorithm
from search.tune_state import resync as resync_tune_state
from search.tune_events import RunEvents
from spaces import Space, get_space
from trainables.atomic import write_json
from trainables.contract import Declaration

__all__ = ["run_search"]

_PACKAGES = ("search", "spaces", "trainables", "reports")


class _TuneReporter:
    """trainables.engine.loop.Reporter on top of tune.report / tune.get_checkpoint."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        from ray import tune

        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=ckpt)

    def get_checkpoint(self) -> str | None:
        from ray import tune

        ckpt = tune.get_checkpoint()
        if ckpt is None:
            return None
        # the checkpoint may sit on remote storage: bring it to a local directory, its keys checked first
        return checkpoint_directory(ckpt)


def run_trial(config: dict[str, Any], spec: dict[str, Any], references: dict[str, float]) -> None:
    """The Tune function trainable: one trial of the space, its failures written down."""
    from ray import tune

    spec_obj = RunSpec.from_dict(spec)
    space = get_space(spec_obj.space)
    trial_id = tune.get_context().get_trial_id()
    ctx = trial_context(space, spec_obj, trial_id, _TuneReporter(), references)
    # a bucket run: this trial's files go to the bucket from a scratch directory on this node (a
    # multi-worker trial's main worker keeps them; this process only writes a failure down)
    sync = trial_sync(spec_obj, trial_id)
    if sync is not None and spec_obj.workers == 1:
        sync.pull()
        ctx.reporter = sync.reporter(ctx.reporter)

    def failed(exc: BaseException) -> None:
        if sync is not None and spec_obj.workers > 1:
            sync.pull()  # what the main worker wrote, so that the failure is added to it
        record_failure(Path(ctx.trial_dir), config, exc)
        if sync is not None:
            sync.push()
            sync.done()

    try:
        if spec_obj.workers > 1:
            from search.distributed import run_data_parallel

            run_data_parallel(config, spec_obj, trial_id, references)
        else:
            space.train(config, ctx, space.budget(spec_obj.budget), spec_obj.options)
        if sync is not None:  # its last report pushed the trial's files
            sync.done()
    except SystemExit as exc:
        # tune.report ends a trial that a scheduler stops with SystemExit(0): a stop, not a failure
        if exc.code not in (0, None):
            failed(exc)
        raise
    except KeyboardInterrupt:
        raise  # a Ctrl-C reached the worker too: the driver marks the trial interrupted
    except BaseException as exc:
        failed(exc)
        raise


def _use_this_sessions_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """A restored Tuner runs the callbacks pickled when the run started: their results writer writes the
    tables of the run directory of that session (on a bucket run resumed elsewhere, another machine's
    copy) and shows its front on that session's display. Tune has no public way to give a restored
    Tuner callbacks, so this session's are put in its run config (ray/tune/impl/tuner_internal.py);
    should that ever move, say so rather than write to the wrong place."""
    run_config = getattr(getattr(tuner, "_local_tuner", None), "get_run_config", lambda: None)()
    if run_config is None or not hasattr(run_config, "callbacks"):
        raise RuntimeError("this Ray version's restored Tuner keeps its run config elsewhere: search/tuner.py "
                           "_use_this_sessions_callbacks needs updating")
    run_config.callbacks = list(callbacks)


def _searcher(space: Space, spec: RunSpec, decl: Declaration):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from search.sampler import RUNG_EPOCH, RUNG_VALUES, RungTPESampler
    from search.study import open_storage

    class FidelityOptunaSearch(OptunaSearch):
        """OptunaSearch that records each trial's Tune id and fidelity as Optuna user
        attributes, gives each trial a seed from its Optuna number (`config["seed"]`, so two
        runs of the same command train the same trials from the same seeds), and marks a trial
        that errored as FAIL even after it had reported (the stock searcher would tell Optuna
        its last, partial values as COMPLETE)."""

        def suggest(self, trial_id: str):
            params = super().suggest(trial_id)
            ot = self._ot_trials.get(trial_id)
            if ot is not None:
                ot.set_user_attr("tune_trial_id", trial_id)
                if isinstance(params, dict):  # the trial's seed (the loop reads config["seed"]), by its number:
                    params.setdefault("seed", numbered_trial_seed(spec.seed, ot.number))  # same command, same seeds
            return params

        def _told(self, trial_id: str) -> bool:
            """Whether Optuna already knows how this trial ended. A resumed search runs the searcher Tune
            last saved, which may predate a tell the study journal kept: a trial that ended (or that a
            scheduler stopped) just before the driver was killed, which Tune then restarts."""
            ot = self._ot_trials.get(trial_id)
            if trial_id not in self._completed_trials and ot is not None \
                    and self._ot_study._storage.get_trial(ot._trial_id).state.is_finished():
                self._completed_trials.add(trial_id)
            return trial_id in self._completed_trials

        def on_trial_result(self, trial_id: str, result):
            if not isinstance(self.metric, list) and not self._told(trial_id):  # (multi-objective: nothing to report)
                super().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
            if self._told(trial_id):
                return
            ot = self._ot_trials.get(trial_id)
            if ot is not None and result:
                ot.set_user_attr("fidelity", result.get("fidelity"))
            if error and ot is not None and trial_id not in self._completed_trials:
                self._ot_study.tell(ot, None, state=optuna.trial.TrialState.FAIL)
                self._completed_trials.add(trial_id)
                return
            fidelity = (result or {}).get("fidelity")
            if ot is not None and trial_id not in self._completed_trials and fidelity is not None and float(fidelity) < 1.0:
                # stopped early by a scheduler: PRUNED, so the sampler never takes its partial values for final
                # ones; what its rung taught goes with it (search/sampler.py ranks pruned trials by it)
                ot.set_user_attr(RUNG_EPOCH, result.get("epoch", result.get("training_iteration")))
                names = self._metric if isinstance(self._metric, list) else [self._metric]
                ot.set_user_attr(RUNG_VALUES, [None if result.get(m) is None else float(result[m]) for m in names])
                self._ot_study.tell(ot, None, state=optuna.trial.TrialState.PRUNED)
                self._completed_trials.add(trial_id)
                return
            super().on_trial_complete(trial_id, result=result, error=error)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(spec.run_dir)
    metrics = list(decl.objectives)
    modes = [decl.objectives[m] for m in metrics]
    sampler = RungTPESampler(seed=spec.seed, multivariate=True, constant_liar=True)
    return FidelityOptunaSearch(
        space=space.search_space(space.budget(spec.budget), spec.options),
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0],
        sampler=sampler,
        study_name=spec.name,
        storage=storage,
        seed=spec.seed,
    )


def trial_dirname(trial) -> str:
    """Tune's own per-trial directory: the trial id, not the whole config in the name."""
    return f"tune_{trial.trial_id}"


def _slots(total: float, per: float) -> int:
    """How many trials asking `per` fit in `total`, in Ray's fixed-point resource accounting
    (units of 1e-4): in floats 1.0 // 0.2 is 4, Ray places 5."""
    return int(round(total * 10_000) // round(per * 10_000))


def _concurrency(spec: RunSpec) -> int:
    import ray

    res = ray.cluster_resources()
    by_cpu = _slots(res.get("CPU", 1), spec.cpus_per_trial)
    if spec.gpus_per_trial > 0:
        return max(1, min(by_cpu, _slots(res.get("GPU", 0), spec.gpus_per_trial)))
    return max(1, by_cpu)


def _init_ray(spec: RunSpec, console=None) -> None:
    """Start this driver's own Ray (marked as its own: search/ray_session.py), or join the cluster
    at `spec.address` and say which one it is (BadInput for another process's in-process Ray)."""
    import ray

    from search.ray_session import ForeignRay, describe_cluster, in_process_init_options

    if ray.is_initialized():
        return
    init_kw: dict[str, Any] = {"include_dashboard": False, "configure_logging": True, "logging_level": "ERROR",
                               "log_to_driver": False}
    if spec.address:
        root = Path(__file__).resolve().parents[1]
        init_kw["address"] = spec.address
        init_kw["runtime_env"] = {"py_modules": [str(root / p) for p in _PACKAGES]}
    else:
        init_kw.update(in_process_init_options())
    try:
        ray.init(**init_kw)
    except ConnectionError as exc:
        raise BadInput(f"cannot join the Ray cluster at --address {spec.address}: {exc}; start one "
                       "(`ray start --head`), check the address, or drop --address to run on this machine") from exc
    if spec.address:
        try:
            joined = describe_cluster(spec.address)
        except ForeignRay as exc:
            ray.shutdown()  # only disconnects: the Ray is the other process's
            raise BadInput(str(exc)) from None
        if console is not None:
            from search.say import say

            say(console, ("cluster", "bold"), f" {joined}")


def _check_resources(spec: RunSpec, console=None, stop: StopRequest | None = None) -> None:
    """Refuse a trial no node can hold, before the search starts. On this machine at once; on a
    cluster after waiting up to `node_timeout` seconds for such a node (an autoscaling cluster
    adds nodes on demand: the trial's resource request is placed so that it can), saying what
    it waits for."""
    import ray

    where = f"the cluster at {spec.address}" if spec.address else "this machine"
    deadline = time.monotonic() + (spec.node_timeout if spec.address else 0.0)
    told = False
    while True:
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        try:
            check_fits(spec.cpus_per_trial, spec.gpus_per_trial, nodes, where, spec.workers)
            if told:
                _request_node(None)  # the trials' own demand drives the autoscaler from here
            return
        except BadInput as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                if told:
                    _request_node(None)
                waited = f" (waited {spec.node_timeout:.0f} s for one to join; --node-timeout sets how long)" \
                    if spec.address and spec.node_timeout else ""
                raise BadInput(f"{exc}{waited}") from None
            if not told:
                told = True
                _request_node(spec)
                if console is not None:
                    from search.say import say

                    say(console, f"waiting up to {left:.0f} s for a node with {spec.cpus_per_trial:g} CPU"
                        f"{f' and {spec.gpus_per_trial:g} GPU' if spec.gpus_per_trial else ''} to join {where} "
                        "(an autoscaling cluster adds one on demand); Ctrl-C to stop")
            if stop is not None:
                stop.check()
            time.sleep(min(2.0, max(left, 0.0)))


def _trial_resources(spec: RunSpec) -> dict[str, float]:
    """What Tune reserves for a trial. A multi-worker trial's Tune process only drives its Ray Train
    workers: it keeps a sliver of the trial's CPUs (Tune refuses an empty request) and the workers
    reserve the rest and the GPUs themselves (search/distributed.py)."""
    if spec.workers > 1:
        from search.distributed import DRIVER_CPU

        return {"cpu": DRIVER_CPU, "gpu": 0}
    return {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial}


def _request_node(spec: RunSpec | None) -> None:
    """Ask an autoscaler (if the cluster has one) for a node that can hold one trial; None
    withdraws the request (it would otherwise stand after the run)."""
    try:
        from ray.autoscaler.sdk import request_resources

        if spec is None:
            request_resources(bundles=[])
            return
        if spec.workers > 1:  # the bundles the trial's Ray Train workers will ask for
            from search.distributed import worker_resources

            request_resources(bundles=[worker_resources(spec)] * spec.workers)
        else:
            request_resources(bundles=[{"CPU": spec.cpus_per_trial,
                                        **({"GPU": spec.gpus_per_trial} if spec.gpus_per_trial else {})}])
    except Exception:  # no autoscaler, or an older API: waiting is all we can do
        pass


def run_search(spec: RunSpec, console=None, stop: StopRequest | None = None) -> Path:
    """Run (or resume) the search a spec describes; returns the run directory.

    Every input is checked before the run directory is made (BadInput, DatasetUnavailable,
    UnsuitableData). A stop asked for by a signal (see search/signals.py) ends the search through
    Tune's graceful stop: the trials it cut short are marked `interrupted` and restart from their
    last checkpoint on --resume; the caller reads `stop.requested`."""
    from ray import tune

    from search.live import LiveDisplay, ResultsWriter

    stop = activate(stop or StopRequest())
    space = get_space(spec.space)
    budget = space.budget(spec.budget)
    run_dir = spec.run_dir
    references = reference_costs(space, spec)  # also fails fast on a missing dataset
    stop.check()
    if spec.resume:
        check_resumable(run_dir)
        check_conventions(run_dir, space.declaration(budget, space.resolve_options(spec.options)))
    _init_ray(spec, console)
    if stop.installed:
        stop.install()  # ray.init put its own SIGTERM handler in place
    stop.check()
    _check_resources(spec, console, stop)

    doc = run_document(space, spec, references, runner="ray tune")
    decl = Declaration.from_dict(doc["declaration"])
    # the same measure every epoch and at the end (the family's evaluate), so rungs compare like with like; made
    # before anything is written (a resumed run's scheduler state must match: BadInput otherwise)
    scheduler = make_scheduler(spec.scheduler, decl.objectives, budget.epochs, state_dir=spec.run_dir,
                               grace_period=budget.grace_period, reduction_factor=budget.reduction_factor)
    spec_path = run_dir / "spec.json"
    if spec.resume and spec_path.exists():  # the resume was accepted (search/resume.py): what it changed is recorded
        doc = resumed_document(json.loads(spec_path.read_text()), doc)
    guard = DiskGuard(run_dir, stop, spec.trials)  # a full disk ends the run cleanly (search/disk.py)
    guard.check_room(spec.storage)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(spec_path, doc)
    guard.keep_reserve()
    mirror = run_mirror(spec)  # a bucket run: the driver's files go up, the trials' come down
    mirror.push("spec.json")

    def write_results() -> int:
        mirror.pull_trials()
        info = {tid: {"number": n} for tid, n in trial_numbers(run_dir).items()}
        results, curves = collect(run_dir, doc, decl, info)
        write_tables(run_dir, results, curves)
        mirror.push_tables()
        return int(sum(1 for on, split in zip(results.column("on_front").to_pylist(), results.column("split").to_pylist())
                       if on and split == "test"))

    watch = watch_cluster(spec, console, run_dir, mirror, write_results)  # a vanished cluster ends the run

    if spec.resume:
        # trials that ran when the driver last stopped (however it stopped) are interrupted, and
        # whatever finished on disk is in the tables before anything else happens
        mirror.push_trial_status(settle_unfinished(run_dir, lambda tid: "interrupted") | settle_with_journal(run_dir, True))
        write_results()

    concurrency = _concurrency(spec)
    searcher = _searcher(space, spec, decl)
    first = next(iter(decl.objectives))
    display = LiveDisplay(spec.trials, concurrency, objective=(first, decl.objectives[first]))
    writer = ResultsWriter(write_results, display)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=spec.to_dict(), references=references),
        _trial_resources(spec),
    )
    callbacks = [display, writer, RunEvents(), DiskEvents()]
    # Tune keeps its state in the run directory, or (a bucket run) in the run's place in the bucket
    tune_storage = spec.storage if is_uri(spec.storage) else str(Path(spec.storage).resolve())
    if spec.resume and tune.Tuner.can_restore(spec.location()):
        # Tune restores its own pickled searcher and scheduler (which read this machine's copy of the run:
        # search/relocate.py) and callbacks. A trial that failed stays failed (the journal has told Optuna
        # so): only unfinished trials continue
        with restoring_into(run_dir):  # a bucket run resumed elsewhere: its scheduler and searcher read this copy
            tuner = tune.Tuner.restore(spec.location(), trainable, resume_unfinished=True, resume_errored=False)
        _use_this_sessions_callbacks(tuner, callbacks)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=search_algorithm(searcher, concurrency),  # its total follows --trials on resume too
                scheduler=scheduler,
                num_samples=spec.trials,
                reuse_actors=spec.reuse_actors,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=tune_storage,
                failure_config=tune.FailureConfig(max_failures=spec.retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=callbacks,
                verbose=0,
            ),
        )
    # our live display replaces Tune's console output (verbose=0 alone still prints a header box)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    one_line_ray_errors()
    request_trials(spec.trials)
    stop.check()
    stop.phase = "tune"
    try:
        with restoring_into(run_dir):  # (Tune unpickles the searcher's saved state when the fit starts)
            grid = tuner.fit()
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        guard.full(f"Tune: {str(exc).strip().splitlines()[-1]}")  # Tune ended on a full disk: settled as a stop
        grid = []
    finally:
        stop.phase = "finish"
    watch.stop()
    guard.release()  # Tune stopped the trials: the reserve is the driver's last writes' room
    if guard.cause is not None and not is_uri(spec.storage):
        resync_tune_state(guard.staging, run_dir)  # its copy into the run may have been cut off by the full disk

    # Tune's view of each trial: errors the trial could not write down itself (killed worker)
    info: dict[str, dict[str, Any]] = {tid: {"number": n} for tid, n in trial_numbers(run_dir).items()}
    for r in grid:
        tid = r.metrics.get("trial_id") if r.metrics else None
        tid = tid or Path(r.path).name
        if r.error is not None:
            info.setdefault(tid, {})["error"] = f"{type(r.error).__name__}: {str(r.error).strip().splitlines()[-1] if str(r.error).strip() else ''}"
    # a trial still marked running was stopped by a scheduler (Tune ended it) or cut short by the stop
    mirror.pull_trials()
    settled = settle_unfinished(run_dir, lambda tid: "stopped" if tid in stop.ended or not stop.requested else "interrupted")
    cut_short = settle_with_journal(run_dir, stopped=stop.requested)  # unfinished in the journal: interrupted
    for tid, state in trial_states(run_dir).items():
        if state == "RUNNING" and tid in info:
            info[tid].pop("error", None)  # Tune's error of an attempt it was to retry: not the trial's end
    mirror.push_trial_status(settled | cut_short)
    results, curves = collect(run_dir, doc, decl, info)
    write_tables(run_dir, results, curves)
    mirror.push_tables()
    return run_dir
