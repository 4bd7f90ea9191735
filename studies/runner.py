"""The study runner: a validated study becomes a Ray Tune experiment (Optuna search, ASHA, MLflow)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from cluster.resources import limit_search, with_trial_resources
from search_spaces import SPACES
from studies.baselines import BaselineCallback, BaselineJob
from studies.health import driver_lease, reconcile
from studies.join import Membership, build_once, join_study, leave_study
from studies.optuna_heartbeat import HeartbeatOptunaSearch, driver_gone, heartbeat_storage, stop_heartbeats
from studies.pretraining import publish, use_pretrained
from studies.progress import ProgressCallback, print_data_summary, quiet
from studies.redact import adopt_credentials, private_files, redact_url, worker_env
from studies.report import refresh_study
from studies.spec import StudySpec, load_study
from studies.teaching import use_teacher
from studies.tracking import (
    MLflowTrialCallback,
    StudyPaths,
    StudyTracker,
    leaderboard,
    resolve_tracking_uri,
    save_state,
    tracking_uri_scope,
)
from studies.trials import ran_out, stopped_early
from studies.tune_adapter import trial_reporter
from trainables import TASKS, Prepared
from trainables.errors import StudyError
from trainables.io import atomic_write_text

__all__ = ["StudyResult", "launch", "resume", "prepare", "run_trial", "trial_env"]


@dataclass
class StudyResult:
    """What a finished (or resumed) study returns."""

    name: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    best_config: dict[str, Any] | None
    leaderboard: pd.DataFrame
    num_errors: int
    report: Path | None = None  # the HTML report (also an artifact of the study run)


def run_trial(config: dict[str, Any], *, payload: Any, spec: StudySpec) -> None:
    """The Ray Tune function trainable: the task's plain core with a Tune (or Ray Train) reporter."""
    import torch

    torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))
    # Several workers per trial run this same function inside Ray Train (cluster.distributed).
    TASKS.get(spec.task).train(config, payload, spec.trial_spec(), trial_reporter())


def prepare(spec: StudySpec, tracking_uri: str | None = None) -> Prepared:
    """Everything ``launch`` checks before any trial: the search space and the data.

    ``tracking_uri`` is the study's MLflow store: a teacher named ``models:/...`` is looked up there,
    not in MLflow's default store of the current folder.
    """
    SPACES.get(spec.search_space).define_by_run(spec.fixed, spec.ranges)
    if tracking_uri is None:
        return TASKS.get(spec.task).prepare(spec)
    with tracking_uri_scope(tracking_uri):
        return TASKS.get(spec.task).prepare(spec)


def _job_env_vars() -> dict[str, str]:
    """Environment variables the Ray job (``ray job submit``, a KubeRay RayJob) already gives every process."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # set by Ray's job supervisor for the job's driver
    if not raw:
        return {}
    return dict((json.loads(raw).get("runtime_env") or {}).get("env_vars") or {})


def trial_env(tracking_uri: str, job_env: dict[str, str] | None = None) -> dict[str, str]:
    """Settings the trials need from the driver: ``CHEMTUNE_*`` and the study's tracking URI, each set once.

    Trials read models from MLflow too (a teacher, a phase-1 base model), so they use the driver's store.
    A variable the job's runtime environment already carries with the same value is left to the job (Ray
    refuses a driver env that repeats a job's key); with a different value the trials would silently see
    the job's, so that is an error naming the key. Ray's runtime_env is stored in the GCS, so credentials are
    filtered out first (:func:`studies.redact.worker_env`); a job URL that differs only by its password is
    the same setting.
    """
    wanted = worker_env(os.environ, tracking_uri)
    job_env = _job_env_vars() if job_env is None else job_env
    clash = sorted(k for k in wanted if k in job_env and redact_url(job_env[k]) != wanted[k])
    if clash:
        raise StudyError(
            f"the Ray job's runtime environment sets {', '.join(clash)} to a different value than this study "
            "uses (study file, --tracking-uri or the driver's environment): set each in one place only, e.g. "
            "in the study's tracking: section or in the cluster's container env, not in the job's runtime env"
        )
    return {k: v for k, v in wanted.items() if k not in job_env}


_EMBEDDED: set[str] = set()  # GCS addresses of the local Rays this process started (the embedded default)


# Ray's switch for a one-machine Ray (its default on macOS and Windows): the node's address is loopback, so
# the GCS, raylet, object manager, agents and every worker bind 127.0.0.1 instead of all interfaces.
_LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def _loopback_only() -> Iterator[None]:
    """While the embedded Ray starts: its processes (which inherit the variable) and this one's node address
    resolve to loopback. Restored after, so a later ``ray.init(address=...)`` of this process is unchanged."""
    from ray._private import ray_constants

    before_env, before = os.environ.get(_LOCAL_ONLY), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOCAL_ONLY], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(_LOCAL_ONLY, None)
        else:
            os.environ[_LOCAL_ONLY] = before_env


def _init_ray(address: str | None, tracking_uri: str) -> None:
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": trial_env(tracking_uri)}  # no credential goes into Ray's GCS
    if address:  # a cluster binds what its operator configured (cluster/README.md)
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:  # embedded default: a local Ray on this machine, reachable from this machine only
        with _loopback_only():
            ray.init(include_dashboard=False, runtime_env=runtime_env, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
        _EMBEDDED.add(ray.get_runtime_context().gcs_address)


def _reuse_actors(spec: StudySpec, embedded: bool) -> bool:
    """Whether a finished trial's process runs the next trial (``resources.reuse_actors``, else by the cluster).

    Reuse saves each trial a new interpreter importing torch: on the embedded local Ray, whose resources
    never change, it is pure gain. On a cluster it stops the cluster's growth from helping: a trial queued
    for a node that just joined (or that an autoscaler is adding) waits while its actor starts there, and
    when any running trial ends first, Tune hands the queued trial to that trial's cached process and
    removes the new node's actor; with trials shorter than an actor's start-up the new node never runs
    one (measured on the local cluster: peak 1 with reuse, 2 without). Ray Train trials never reuse.
    """
    if spec.resources.num_workers > 1:
        return False
    return spec.resources.reuse_actors if spec.resources.reuse_actors is not None else embedded


def _searcher(spec: StudySpec, optuna_url: str, member: Membership | None = None) -> HeartbeatOptunaSearch:
    """TPE over the space (enqueued points first), or the study's grid with each row exactly once.

    A joined process (``launch --join``) after the first offsets the seed by its slot (else all would
    start on the same random points) and does not enqueue the study's points again (the first did).
    """
    # a killed driver's Optuna trials go stale, fail and are retried (grid rows too)
    storage = heartbeat_storage(optuna_url, max_retry=max(1, spec.max_failures))
    # several objectives: lists, and Optuna's TPE (multi-objective since optuna 3) searches their Pareto front
    metric, mode = (list(spec.objectives), spec.directions) if spec.objectives else (spec.metric, spec.direction)
    if spec.sampler == "grid":
        from studies.grid import grid_define_by_run, grid_sampler

        space = grid_define_by_run(SPACES.get(spec.search_space), spec.grid, spec.fixed)
        return HeartbeatOptunaSearch(space=space, metric=metric, mode=mode, study_name=spec.name,
                                     storage=storage, sampler=grid_sampler(spec), max_epochs=spec.max_epochs)
    space = SPACES.get(spec.search_space).define_by_run(spec.fixed, spec.ranges)
    later = member is not None and not member.creator
    return HeartbeatOptunaSearch(
        space=space, metric=metric, mode=mode, study_name=spec.name, storage=storage,
        seed=spec.seed + member.slot if later else spec.seed,
        points_to_evaluate=None if later else [dict(p) for p in spec.enqueue] or None, max_epochs=spec.max_epochs,
    )


def _tuner(spec: StudySpec, prepared: Prepared, tracker: StudyTracker, paths: StudyPaths, optuna_url: str,
           member: Membership | None = None, trials: int | None = None,
           baselines: BaselineJob | None = None) -> tune.Tuner:
    searcher = _searcher(spec, optuna_url, member)
    num_trials = trials or spec.num_trials
    scheduler = ASHAScheduler(
        time_attr="training_iteration", max_t=spec.max_epochs,
        grace_period=min(spec.scheduler.grace_period, spec.max_epochs), reduction_factor=spec.scheduler.reduction_factor,
    )
    trainable = with_trial_resources(tune.with_parameters(run_trial, payload=prepared.payload, spec=spec), spec.resources)
    callbacks = [
        MLflowTrialCallback(tracker.uri, tracker.experiment_id, tracker.parent_run_id, spec.task, prepared.tags,
                            metric=spec.metric, mode=spec.direction, max_epochs=spec.max_epochs,
                            joiner=member.joiner_id if member else None),
        ProgressCallback(spec.metric, spec.direction, num_trials, spec.max_epochs),
    ]
    if baselines is not None:  # their results are logged as they come, while the trials run
        callbacks.append(BaselineCallback(baselines))
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=limit_search(searcher, spec.resources), scheduler=scheduler, num_samples=num_trials,
            metric=spec.metric, mode=spec.direction,
            # No cap from the resources present at launch: Tune queues trials against the cluster, so an
            # autoscaling cluster that starts with no workers grows to run them (cap only when asked).
            max_concurrent_trials=spec.resources.max_concurrent_trials,
            reuse_actors=_reuse_actors(spec, ray.get_runtime_context().gcs_address in _EMBEDDED),
        ),
        run_config=tune.RunConfig(
            # a joined process has its own experiment beside the other joiners' (studies/join.py)
            name=f"{spec.name}.{member.experiment}" if member else spec.name,
            storage_path=spec.tracking.storage_path or paths.tune_storage,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks, verbose=0,
        ),
    )


def _interrupted(results: tune.ResultGrid) -> bool:
    """Whether Tune stopped on a Ctrl-C: it then stops the running trials (TERMINATED, like finished ones),
    saves the experiment and *returns* (no exception). A trial that ran out -- to its last epoch, or stopped by
    ASHA or patience -- has ``done`` in its last result; one the interrupt stopped has not, nor has a pending
    one (no result at all); an ERROR trial ran out of retries."""
    return not all(ran_out(r.metrics, r.error is not None) for r in results)


def _fit(tuner: tune.Tuner, tracker: StudyTracker, member: Membership | None = None,
         baselines: BaselineJob | None = None) -> tune.ResultGrid:
    """Run the trials (and wait for the baselines fitted beside them); end the study run as they ended."""
    status = "FAILED"
    try:
        if baselines is not None:  # the first baseline's task before any trial: it has its CPUs, trials fill the rest
            baselines.poll()
        results = tuner.fit()
        if _interrupted(results):  # not a finished study: no report, no seed repeats; the parent run ends KILLED
            raise KeyboardInterrupt(f"interrupted; continue with `chemtune resume {tracker.spec.name}`")
        if baselines is not None:  # the leaderboard and report show them
            baselines.finish()
        status = "FINISHED"
        return results
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if baselines is not None:  # one still fitting ends KILLED with the reason; resume fits it again
            baselines.cancel()
        stop_heartbeats()  # this fit's searcher: its study is over on this driver
        if member is None:
            tracker.close(status)
        else:  # the parent run ends with the last joined process
            leave_study(member, tracker.client, status)


def _result(spec: StudySpec, tracker: StudyTracker, results: tune.ResultGrid, optuna_url: str | None,
            paths: StudyPaths, report: bool = True) -> StudyResult:
    # Only complete trials compete: one ASHA stopped has a partial (earlier-epoch) score.
    scored = [r for r in results if r.error is None and r.metrics and spec.metric in r.metrics
              and not stopped_early(r.metrics, spec.max_epochs)]
    sign = 1 if spec.direction == "min" else -1
    best = min(scored, key=lambda r: sign * r.metrics[spec.metric]).config if scored else None
    board = leaderboard(spec.name, tracker.uri)
    page = None
    try:  # leaderboard table, Optuna's plots and the HTML report on the study run
        if report:
            page = refresh_study(spec.name, tracker.uri, optuna_url, paths.root / "reports" / f"{spec.name}.html")
    except Exception as err:  # noqa: BLE001 - the study's results stand without their views
        tracker.client.set_tag(tracker.parent_run_id, "chemtune.report_error", repr(err)[:500])
    return StudyResult(spec.name, tracker.parent_run_id, tracker.experiment_id, tracker.uri, best, board,
                       results.num_errors, page)


@private_files  # the study's files (state, Ray's experiment, checkpoints, reports) are its user's only
def launch(spec: StudySpec, *, address: str | None = None, tracking_uri: str | None = None,
           root: str | os.PathLike[str] | None = None, restart: bool = False, join: bool = False,
           trials: int | None = None) -> StudyResult:
    """Validate the data, then run the study on Ray Tune and track it in MLflow.

    Args:
        spec: The validated study.
        address: Ray cluster address (``auto``, ``ray://host:10001``); default: a local Ray.
        tracking_uri: MLflow URI; default: the study's, ``MLFLOW_TRACKING_URI``, or ``./chemtune-runs``.
        root: The embedded store's folder (default ``$CHEMTUNE_HOME`` or ``./chemtune-runs``).
        restart: Start over if a study of this name was launched before from ``root``.
        join: Create or attach to the study in its (shared) Optuna storage and MLflow parent run, and run
            this process's share of its trials beside other processes (``studies/join.py``).
        trials: With ``join``: this process's share (default the study's ``num_trials``).
    """
    if trials is not None and (not join or trials < 1):
        raise StudyError(f"--trials {trials}: give a share of 1 or more, with --join (without it the study "
                         "runs its num_trials)")
    if join:
        if restart:
            raise StudyError("--join and --restart exclude each other: --join attaches to a study other processes run")
        return _launch_joined(spec, address, tracking_uri, root, trials)
    paths = StudyPaths.default(root)
    state_file = paths.state_file(spec.name)
    if state_file.exists() and not restart:
        raise StudyError(
            f"study {spec.name!r} was launched before ({state_file}); run `chemtune resume {spec.name}` "
            "or launch with --restart to start over"
        )
    uri = resolve_tracking_uri(tracking_uri or spec.tracking.tracking_uri, paths)
    spec = _without_credentials(spec)
    stage_run = _stage_runner(address, tracking_uri, root, uri)
    spec = use_pretrained(spec, uri, paths, stage_run)  # model.pretrain: cached or run first
    spec = use_teacher(spec, uri, paths, stage_run)  # options.teacher_study: cached or trained first
    prepared = prepare(spec, uri)  # bad data fails here, before Ray starts
    quiet()
    print_data_summary(prepared)
    optuna_url = spec.tracking.optuna_storage or paths.optuna_url
    if restart:
        _forget(spec, paths, optuna_url)
    _init_ray(address, uri)
    tracker = StudyTracker(uri, spec, paths)
    spec_yaml = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    tracker.log_study(redact_url(spec_yaml), prepared)  # the MLflow copy never holds a database password
    atomic_write_text(paths.study_file(spec.name), spec_yaml)
    save_state(paths, spec.name, {"parent_run_id": tracker.parent_run_id, "tracking_uri": uri,
                                  "optuna_url": optuna_url, "address": address, "driver": driver_lease()})
    job = _baselines(spec, prepared, tracker)
    results = _fit(_tuner(spec, prepared, tracker, paths, optuna_url, baselines=job), tracker, baselines=job)
    result = _result(spec, tracker, results, optuna_url, paths)
    if spec.task == "pretrain" and result.best_config is not None:  # the checkpoint, cached by content hash
        publish(spec, prepared, tracker.uri)
    if spec.seed_repeats and result.best_config is not None:  # mean +/- std of the best config (studies/seeds.py)
        from studies.seeds import repeat_best

        repeat_best(spec, prepared, result.best_config, tracker.uri, tracker.parent_run_id)
    return result


def _stage_runner(address: str | None, tracking_uri: str | None, root: str | os.PathLike[str] | None,
                  uri: str) -> Callable[[StudySpec], StudyResult]:
    """How a study runs its stages (pretraining, teacher) first: each is launched as a study of its own, on the
    same Ray and in the same MLflow store (``uri``, the study's: ``--tracking-uri``, else the stage file's own
    store, else the study's), where joined processes on other machines fetch its checkpoint."""
    def run(stage: StudySpec) -> StudyResult:
        return launch(stage, address=address, tracking_uri=tracking_uri or stage.tracking.tracking_uri or uri,
                      root=root)

    return run


def _without_credentials(spec: StudySpec) -> StudySpec:
    """The study with its MLflow URI's password moved to MLflow's variables: the spec travels to the trials
    (Ray's object store), into Tune's experiment files and the saved study file, so none holds it."""
    uri = spec.tracking.tracking_uri
    if not uri or adopt_credentials(uri) == uri:
        return spec
    return spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"tracking_uri": adopt_credentials(uri)})})


def _launch_joined(spec: StudySpec, address: str | None, tracking_uri: str | None,
                   root: str | os.PathLike[str] | None, trials: int | None) -> StudyResult:
    """``launch --join``: one of several processes on one study (Optuna's distributed optimisation)."""
    paths = StudyPaths.default(root)
    uri = resolve_tracking_uri(tracking_uri or spec.tracking.tracking_uri, paths)
    spec = _without_credentials(spec)
    optuna_url = spec.tracking.optuna_storage or paths.optuna_url
    stage_run = _stage_runner(address, tracking_uri, root, uri)

    def shared(name: str, build: Callable[[], dict[str, Any]], fetch: Callable[[dict[str, Any]], None]) -> None:
        build_once(optuna_url, name, build, fetch)  # one joiner builds each stage, the others fetch it

    # before the study is joined (no parent run yet): a failed stage leaves no joined run RUNNING
    spec = use_teacher(use_pretrained(spec, uri, paths, stage_run, shared), uri, paths, stage_run, shared)
    prepared = prepare(spec, uri)  # bad data fails here, before Ray starts or the study is joined
    quiet()
    print_data_summary(prepared)
    _init_ray(address, uri)
    created: list[StudyTracker] = []

    def create_parent() -> str:
        created.append(StudyTracker(uri, spec, paths))
        return created[0].parent_run_id

    member = join_study(spec.name, spec.directions or spec.direction, optuna_url, create_parent)
    tracker = created[0] if created else StudyTracker(uri, spec, paths, parent_run_id=member.parent_run_id)
    spec_yaml = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    atomic_write_text(paths.study_file(spec.name), spec_yaml)
    if not paths.state_file(spec.name).exists():  # doctor/leaderboard from this root; resume refuses (joined)
        save_state(paths, spec.name, {"parent_run_id": member.parent_run_id, "tracking_uri": uri,
                                      "optuna_url": optuna_url, "address": address, "joined": True})
    job = None
    if member.creator:  # the study's parameters, data report and baselines: once, by the process that created it
        try:
            tracker.log_study(redact_url(spec_yaml), prepared)
            job = _baselines(spec, prepared, tracker)
        except BaseException:
            leave_study(member, tracker.client, "KILLED")  # no run left RUNNING, nor the other joiners' ended
            raise
    try:
        tuner = _tuner(spec, prepared, tracker, paths, optuna_url, member, trials, baselines=job)
    except BaseException:
        leave_study(member, tracker.client, "FAILED")  # this joiner is gone: the others may close the study
        raise
    results = _fit(tuner, tracker, member, baselines=job)
    return _result(spec, tracker, results, optuna_url, paths, report=member.last)


def _baselines(spec: StudySpec, prepared: Prepared, tracker: StudyTracker) -> BaselineJob | None:
    """The study's peer baselines not yet FINISHED (a resumed study skips the others), or ``None``; ``_fit``
    starts them beside the trials."""
    job = BaselineJob(spec, prepared, tracker.uri, tracker.experiment_id, tracker.parent_run_id)
    return job if job.pending else None


def _forget(spec: StudySpec, paths: StudyPaths, optuna_url: str) -> None:
    state_file = paths.state_file(spec.name)
    if state_file.exists():  # the previous attempt's runs end as KILLED, not RUNNING forever
        reconcile(paths, spec.name)  # refuses while its driver is alive
    experiment_dir = Path(spec.tracking.storage_path or paths.tune_storage) / spec.name
    if experiment_dir.exists():
        shutil.rmtree(experiment_dir)
    try:
        optuna.delete_study(study_name=spec.name, storage=optuna_url)
    except KeyError:
        pass
    paths.state_file(spec.name).unlink(missing_ok=True)


def _read_state(paths: StudyPaths, name: str) -> dict[str, Any]:
    """The saved state, its tracking URI without credentials (a state saved before they moved out of it is
    rewritten): ``resume`` reads them from ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` or ``~/.mlflow/credentials``."""
    from trainables.inputs import read_text

    source = paths.state_file(name)
    try:
        state = json.loads(read_text(source, "study state file", 1 << 20))
        uri = state["tracking_uri"]
    except (ValueError, KeyError, TypeError) as err:  # DataError is a ValueError
        raise StudyError(f"{source}: not a chemtune study state ({str(err).splitlines()[0][:200]}); "
                         f"launch the study again with --restart") from None
    if adopt_credentials(uri) != uri:
        state["tracking_uri"] = adopt_credentials(uri)
        save_state(paths, name, state)
    return state


@private_files
def resume(name: str, *, address: str | None = None, root: str | os.PathLike[str] | None = None) -> StudyResult:
    """Continue an interrupted study: unfinished and errored trials resume from their checkpoints."""
    paths = StudyPaths.default(root)
    if not paths.state_file(name).exists():
        raise StudyError(f"no study named {name!r} was launched from {paths.root}")
    state = _read_state(paths, name)
    if state.get("joined"):
        raise StudyError(f"study {name!r} was launched with --join (several processes): a joined process is not "
                         "resumed; launch another `chemtune launch STUDY --join --trials N` to run the share it lost")
    # checked like any study file (a planted YAML tag is one line) first; an older copy's URI password moved out
    spec = _without_credentials(load_study(paths.study_file(name)))
    reconcile(paths, name)  # a killed driver's RUNNING runs end as KILLED (reason tagged) before anything else
    driver_gone(name)  # ... and its Optuna trials no restored trial holds fail and are retried first
    save_state(paths, name, {**state, "driver": driver_lease()})
    prepared = prepare(spec, state["tracking_uri"])
    experiment_dir = str(Path(spec.tracking.storage_path or paths.tune_storage) / spec.name)
    _init_ray(address or state.get("address"), state["tracking_uri"])
    tracker = StudyTracker(state["tracking_uri"], spec, paths, parent_run_id=state["parent_run_id"])
    job = _baselines(spec, prepared, tracker)  # a restored experiment keeps its old callbacks: logged at its end
    if tune.Tuner.can_restore(experiment_dir):
        trainable = with_trial_resources(tune.with_parameters(run_trial, payload=prepared.payload, spec=spec),
                                         spec.resources)
        tuner = tune.Tuner.restore(experiment_dir, trainable=trainable, resume_errored=True)
    else:  # the driver died before Tune's first experiment checkpoint: start its trials again, same runs
        tuner = _tuner(spec, prepared, tracker, paths, state["optuna_url"], baselines=job)
    quiet()
    result = _result(spec, tracker, _fit(tuner, tracker, baselines=job), state.get("optuna_url"), paths)
    if spec.task == "pretrain" and result.best_config is not None:
        publish(spec, prepared, tracker.uri)
    return result
