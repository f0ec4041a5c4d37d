"""Experiment trackers: the run's history also sent to TensorBoard, Weights & Biases or MLflow.

``train.log: [tensorboard, wandb, mlflow]`` (default empty, not part of the run id) names the
trackers a run writes to. Each receives:

- at every history entry (every ``log_every`` steps, and every periodic evaluation) its scalars,
  flattened with ``/``: ``loss``, ``losses/<term>``, ``lr``, ``epoch``, ``eval/miou``, and any
  other number the entry holds (a grad norm, a method's own statistics), at the entry's step;
- the resolved config as hyper-parameters when the tracker run is created, and at the end of the
  run the cost (``cost/...``) and the final metrics (``final/miou``, ``final/mfsc``,
  ``final/pixel_acc``, at the last step).

Runs are grouped by suite: TensorBoard writes ``<results>/tensorboard/<suite>/<run id>``; W&B
uses project = suite, group = method, run id = the kdbench run id, offline mode unless
``WANDB_MODE`` is set, files under ``<results>/wandb`` (one ``offline-run-*`` folder per session,
which ``wandb sync`` uploads as one run); MLflow uses experiment = suite, run name =
run id (found again by its ``kdbench_run_id`` tag), and the SQLite store
``sqlite:///<results>/mlflow.db`` unless ``MLFLOW_TRACKING_URI`` names another server.

A resumed run continues the same tracker run: ``<run dir>/tracking.json`` keeps, per tracker,
how many history entries it has written; the history is append-only and a resumed run rebuilds the
same entries, so entry ``i`` is written once (the entries a killed session wrote after its last
checkpoint are not written again, the ones it never wrote are).

A tracker never fails the run: if its package is missing or it raises, one warning line goes to
stderr and that tracker is off for the rest of the session.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from kdbench.results.files import write_json_atomic

SIDECAR = "tracking.json"
"""Per tracker, the number of history entries already written (in the run's folder)."""


class Backend(Protocol):
    """One tracker's run: scalars at a step, hyper-parameters, closing."""

    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def finish(self, params: dict[str, Any], final: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def flatten(entry: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to one level with ``/``-joined keys, keeping numbers, strings, bools and
    None (lists become JSON text). ``{"a": {"b": 1}}`` -> ``{"a/b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in entry.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}/"))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def entry_scalars(entry: dict[str, Any]) -> dict[str, float]:
    """The numbers of a history entry, flattened, without its ``step``: a loss entry gives
    ``loss``, ``losses/<term>``, ``lr``, ``epoch`` (and whatever else it holds); an evaluation
    entry gives ``eval/<metric>``."""
    return {
        key: float(value)
        for key, value in flatten(entry).items()
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _hparam(value: Any) -> str | int | float | bool:
    """A hyper-parameter value as the trackers take it: lists and None as JSON text."""
    return value if isinstance(value, (str, int, float, bool)) else json.dumps(value)


class TensorBoard:
    """Event files in ``<results>/tensorboard/<suite>/<run id>`` (a resumed session adds a file)."""

    def __init__(self, root: Path, suite: str, method: str, run_id: str,
                 config: dict[str, Any], fresh: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(root / "tensorboard" / suite / run_id))
        if fresh:  # text at step 0 once: a resumed session writing it again would purge it
            self.writer.add_text("config", f"```\n{json.dumps(config, indent=2)}\n```", 0)
            self.writer.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, params: dict[str, Any], final: dict[str, float], step: int) -> None:
        from torch.utils.tensorboard.summary import hparams

        self.scalars(step, final)
        hp = {k: _hparam(v) for k, v in params.items()}
        for summary in hparams(hp, final):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    """A W&B run with the kdbench run id, resumed with ``resume="allow"``; offline by default."""

    def __init__(self, root: Path, suite: str, method: str, run_id: str,
                 config: dict[str, Any], fresh: bool) -> None:
        import wandb

        if wandb.run is not None and wandb.run.id == run_id:  # a killed session's, same process
            wandb.run.finish()
        root.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=suite or "kdbench", group=method, id=run_id, name=run_id,
            dir=str(root), config=config, resume="allow",
            mode=os.environ.get("WANDB_MODE", "offline"),
            settings=wandb.Settings(console="off", silent=True),
        )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def finish(self, params: dict[str, Any], final: dict[str, float], step: int) -> None:
        self.run.log(final, step=step)
        self.run.config.update(params, allow_val_change=True)

    def close(self) -> None:
        self.run.finish()


class MLflow:
    """An MLflow run (experiment = suite, name = run id) found again by its ``kdbench_run_id``
    tag; the store is ``MLFLOW_TRACKING_URI`` or ``sqlite:///<results>/mlflow.db``."""

    TAG = "kdbench_run_id"

    def __init__(self, root: Path, suite: str, method: str, run_id: str,
                 config: dict[str, Any], fresh: bool) -> None:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        self.client = MlflowClient(tracking_uri=uri or f"sqlite:///{root.resolve()}/mlflow.db")
        name = suite or "kdbench"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            name, artifact_location=None if uri else (root.resolve() / "mlartifacts").as_uri()
        )
        found = self.client.search_runs([experiment_id], f"tags.{self.TAG} = '{run_id}'")
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(experiment_id, run_name=run_id,
                                         tags={self.TAG: run_id, "kdbench_method": method})
            self.run_id = run.info.run_id
            self._params(config)

    def _params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(_hparam(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, params: dict[str, Any], final: dict[str, float], step: int) -> None:
        self.scalars(step, final)
        self._params({k: v for k, v in params.items() if k.startswith("cost/")})

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


BACKENDS: dict[str, Callable[..., Backend]] = {
    "tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow,
}


def warn(name: str, what: str, exc: BaseException) -> None:
    """The one line a failing tracker prints before it is switched off."""
    print(f"kdbench: tracker {name} {what} ({type(exc).__name__}: {exc}); "
          "it is off for the rest of the run", file=sys.stderr)


class Trackers:
    """The run's trackers, fed once per history entry (:meth:`log`) and closed at its end.

    ``history`` is the run's history as restored (empty for a fresh run): entries a previous
    session did not write yet are written at once; then :meth:`log` must be called once per
    entry appended, in order, so that entry ``i`` of the history is the ``i``-th entry seen.
    """

    def __init__(self, names: list[str], run_dir: Path, root: Path, suite: str, method: str,
                 run_id: str, config: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.sidecar = run_dir / SIDECAR
        self.written: dict[str, int] = (
            json.loads(self.sidecar.read_text()) if self.sidecar.exists() else {}
        )
        self.config = flatten(config)
        self.backends: dict[str, Backend] = {}
        for name in names:
            try:
                fresh = self.written.get(name, 0) == 0
                self.backends[name] = BACKENDS[name](root, suite, method, run_id,
                                                     self.config, fresh)
            except Exception as exc:  # noqa: BLE001 - a tracker never fails the run
                warn(name, "could not start", exc)
        self.seen = 0
        for entry in history:
            self.log(entry)

    def _guard(self, name: str, what: str, call: Callable[[Backend], None]) -> bool:
        try:
            call(self.backends[name])
            return True
        except Exception as exc:  # noqa: BLE001 - a tracker never fails the run
            warn(name, what, exc)
            backend = self.backends.pop(name)
            try:
                backend.close()
            except Exception:  # noqa: BLE001, S110 - it is already reported and off
                pass
            return False

    def log(self, entry: dict[str, Any]) -> None:
        """Write history entry number ``self.seen`` to every tracker that has not written it."""
        index, self.seen = self.seen, self.seen + 1
        values = entry_scalars(entry)
        changed = False
        for name in list(self.backends):
            if index < self.written.get(name, 0):
                continue  # written by a session that was killed after its last checkpoint
            if self._guard(name, "failed to log", lambda b: b.scalars(entry["step"], values)):
                self.written[name] = index + 1
                changed = True
        if changed:
            write_json_atomic(self.sidecar, self.written)

    def close(self, result: dict[str, Any] | None = None) -> None:
        """End every tracker run; with the run's ``result`` (a completed run) first write its
        cost as hyper-parameters and its final metrics at its last step."""
        finish = None if result is None else functools.partial(_finish, **_closing(self.config,
                                                                                     result))
        for name in list(self.backends):
            if finish is not None and not self._guard(name, "failed to finish", finish):
                continue
            self._guard(name, "failed to close", lambda b: b.close())
        self.backends.clear()


def _closing(config: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """What a completed run adds: its config and cost as hyper-parameters, its final metrics."""
    metrics = result["metrics"]
    return {
        "params": {**config, **flatten({"cost": result["cost"]})},
        "final": {f"final/{k}": float(metrics[k]) for k in ("miou", "mfsc", "pixel_acc")
                  if isinstance(metrics.get(k), (int, float))},
        "step": result["cost"]["steps"],
    }


def _finish(backend: Backend, params: dict[str, Any], final: dict[str, float], step: int) -> None:
    backend.finish(params, final, step)


def open_trackers(spec: Any, store: Any, history: list[dict[str, Any]], writer: bool) -> Trackers:
    """The trackers ``spec.train["log"]`` names, for the run's writing rank (none elsewhere)."""
    names = list(spec.train.get("log") or []) if writer else []
    return Trackers(names, store.run_dir(spec.id), store.root, spec.suite, spec.method, spec.id,
                    spec.to_dict(), history)
