"""A suite's ``launch:`` options, checked for every executor, and the sbatch parameters they
give each stage (kept below :mod:`kdbench.launch`, so that suite validation needs no executor).

Resources (``partition``, ``time_min``, ``cpus_per_task``, ``gpus_per_node``, ``tasks_per_node``,
``nodes``, ``mem_gb``) apply to every job; ``teacher: {...}`` and ``student: {...}`` override
them for one stage (teachers are often larger and slower than their students)::

    launch: {executor: slurm, time_min: 240, gpus_per_node: 1, mem_gb: 32,
             teacher: {time_min: 720, mem_gb: 64, gpus_per_node: 4}}

A run is trained by ``tasks_per_node`` × ``nodes`` processes (data parallelism:
:mod:`kdbench.distributed`); ``tasks_per_node`` defaults to ``gpus_per_node`` (one
process per GPU), or 1 without GPUs. ``cpus_per_task`` and ``mem_gb`` are per process and per
node. The local executors honour ``tasks_per_node``, ``gpus_per_node`` and their stage
overrides too (:func:`processes`), on one node.

``signal_margin_s`` is how long before its time limit a job is sent its warning signal
(``--signal=USR2@margin``; SLURM may send it up to a minute earlier): the run then writes its
checkpoint at the next step boundary and requeues itself, at most ``max_requeues`` times.
"""

from __future__ import annotations

from typing import Annotated, Any

from kdbench.errors import KdbenchError
from kdbench.options import Ge, Gt, NonEmpty, Option, check, signature_options, unknown_option
from kdbench.options import resolve as resolve_options

STAGES = ("teacher", "student")
RESOURCES = (
    "partition", "time_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "nodes", "mem_gb"
)
PARALLEL = ("gpus_per_node", "tasks_per_node", "nodes")
"""The resources that say how many processes train a run (every executor reads them)."""


def _launch(
    *,
    partition: Annotated[str, NonEmpty()] | None = None,
    time_min: Annotated[int, Ge(1)] = 60,
    cpus_per_task: Annotated[int, Ge(1)] = 1,
    gpus_per_node: Annotated[int, Ge(0)] = 0,
    tasks_per_node: Annotated[int, Ge(1)] | None = None,
    nodes: Annotated[int, Ge(1)] = 1,
    mem_gb: Annotated[float, Gt(0)] | None = None,
    array_parallelism: Annotated[int, Ge(1)] = 16,
    poll_s: Annotated[float, Gt(0)] = 1.0,
    signal_margin_s: Annotated[int, Ge(0)] = 120,
    max_requeues: Annotated[int, Ge(0)] = 3,
) -> None:
    """The ``launch:`` options (module docstring), declared for the option resolver: minutes,
    GB and seconds; ``mem_gb`` per node, ``cpus_per_task`` per process."""


OPTIONS: dict[str, Option] = signature_options(_launch)
"""Every option of the SLURM executor, with its type, constraint and default."""

DEFAULTS: dict[str, Any] = {name: option.default for name, option in OPTIONS.items()}


def check_value(key: str, value: Any, where: str = "launch") -> None:
    """Raise :class:`KdbenchError` unless ``value`` fits option ``key`` (``<where>.<key>: ...``)."""
    check(where, OPTIONS[key], value)


def tasks_per_node(resources: dict[str, Any]) -> int:
    """Processes per node: ``tasks_per_node``, else one per GPU, else 1."""
    return resources["tasks_per_node"] or max(1, resources["gpus_per_node"])


def processes(options: dict[str, Any], stage: str) -> int:
    """How many processes train a run of ``stage`` under the (unresolved) ``launch:``
    ``options``: ``tasks_per_node`` × ``nodes`` with the stage's overrides."""
    merged = {k: DEFAULTS[k] for k in PARALLEL}
    merged.update({k: v for k, v in options.items() if k in PARALLEL})
    merged.update({k: v for k, v in (options.get(stage) or {}).items() if k in PARALLEL})
    return tasks_per_node(merged) * merged["nodes"]


def check_stage(resources: dict[str, Any], where: str) -> None:
    """A process per GPU: ``tasks_per_node`` cannot differ from a nonzero ``gpus_per_node``."""
    gpus, tasks = resources["gpus_per_node"], resources["tasks_per_node"]
    if gpus and tasks is not None and tasks != gpus:
        raise KdbenchError(
            f"{where}tasks_per_node: {tasks} with gpus_per_node: {gpus}; expected one process "
            f"per GPU (tasks_per_node: {gpus}, or leave it out)"
        )


def resolve(options: dict[str, Any]) -> dict[str, Any]:
    """Validated options with defaults filled in (:func:`kdbench.options.resolve`);
    ``teacher``/``student`` become complete resource dicts."""
    if not isinstance(options, dict):
        raise KdbenchError(f"launch: expected a mapping of options, got {options!r}")
    out = resolve_options(OPTIONS, {k: v for k, v in options.items() if k not in STAGES}, "launch")
    resources = {k: OPTIONS[k] for k in RESOURCES}
    for stage in STAGES:
        overrides = options.get(stage) or {}
        if not isinstance(overrides, dict):
            raise KdbenchError(f"launch.{stage}: expected a mapping of resources")
        for key, value in overrides.items():
            if key not in resources:
                raise unknown_option(f"launch.{stage}", key, resources)
            check_value(key, value, f"launch.{stage}")
        out[stage] = {**{k: out[k] for k in RESOURCES}, **overrides}
        check_stage(out[stage], f"launch.{stage}." if overrides else "launch.")
    return out


def sbatch_parameters(resources: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """submitit's ``update_parameters`` keywords for one stage's jobs."""
    params: dict[str, Any] = {
        "time": resources["time_min"],
        "cpus_per_task": resources["cpus_per_task"],
        "nodes": resources["nodes"],
        "ntasks_per_node": tasks_per_node(resources),
        "array_parallelism": options["array_parallelism"],
        "signal_delay_s": options["signal_margin_s"],
        "additional_parameters": {"kill-on-invalid-dep": "yes", "requeue": True},
    }
    if tasks_per_node(resources) * resources["nodes"] > 1:  # a rank that fails ends the others
        params["srun_args"] = ["--kill-on-bad-exit=1"]
    if resources["partition"] is not None:
        params["partition"] = resources["partition"]
    if resources["gpus_per_node"]:
        params["gpus_per_node"] = resources["gpus_per_node"]
    if resources["mem_gb"] is not None:
        params["mem"] = f"{max(1, round(resources['mem_gb'] * 1024))}M"
    return params


def sbatch_flags(params: dict[str, Any], tasks: int, dependency: str | None) -> list[str]:
    """The sbatch command-line flags ``params`` (see :func:`sbatch_parameters`) become for an
    array of ``tasks`` tasks, as submitit writes them."""
    skip = ("array_parallelism", "signal_delay_s", "srun_args")
    flags = {k: v for k, v in params.items() if k not in skip}
    flags.update(flags.pop("additional_parameters", {}))
    flags["signal"] = f"USR2@{params['signal_delay_s']}"
    flags["array"] = f"0-{tasks - 1}%{min(tasks, params['array_parallelism'])}"
    if dependency:
        flags["dependency"] = dependency
    out = []
    for key in sorted(flags):
        name = key.replace("_", "-")
        out.append(f"--{name}" if flags[key] is True else f"--{name}={flags[key]}")
    return out


def check_jobs(jobs: Any, where: str = "launch.jobs") -> int:
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise KdbenchError(f"{where}: expected an integer >= 1, got {jobs!r}")
    return jobs


def check_local_options(options: dict[str, Any]) -> None:
    """Validate the local executors' ``launch:`` options: ``jobs``, and the processes per run
    (``tasks_per_node``, ``gpus_per_node``, also in ``teacher:``/``student:`` overrides)."""
    local = [k for k in PARALLEL if k != "nodes"]
    for key, value in options.items():
        if key == "jobs":
            check_jobs(value)
        elif key in local:
            check_value(key, value)
        elif key in STAGES and isinstance(value, dict):
            for name, inner in value.items():
                if name not in local:
                    raise KdbenchError(
                        f"launch.{key}.{name}: the local executor takes {' and '.join(local)} "
                        "per stage"
                    )
                check_value(name, inner, f"launch.{key}.")
        else:
            raise KdbenchError(
                f"launch.{key}: the local executor takes jobs, {', '.join(local)} and teacher/"
                "student overrides of them"
            )


def check_launch(launch: dict[str, Any]) -> None:
    """Validate a suite's ``launch:`` section: ``executor: slurm`` takes the SLURM options
    (:func:`resolve`), ``executor: local`` (the default) only :func:`check_local_options`."""
    options = dict(launch)
    executor = options.pop("executor", "local")
    if executor == "slurm":
        resolve(options)
    elif executor != "local":
        raise KdbenchError(f"launch.executor: expected local or slurm, got {executor!r}")
    else:
        check_local_options(options)
