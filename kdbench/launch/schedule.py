"""The run graph of a launch: which runs are done, ready, waiting or blocked, and why.

Every run names the runs it needs (``spec.needs``: its teacher, its tuning trials, a method's
stage, ...); a run may start once each of them is complete. A need is complete when this launch
finished it complete, or, for a run outside the launch, when the store holds its complete
record. A run is *blocked* when a need failed (or was itself blocked), or lies outside the launch
without a complete record: it is never started, and its failed record names that need
(:meth:`Schedule.blocked_error`, the one place that says so). Every executor schedules through
this module: the in-process and worker executors hand out :meth:`Schedule.ready` runs and report
each outcome to :meth:`Schedule.finish`; the SLURM executor turns the edges into ``afterok``
dependencies (:meth:`Schedule.depth` orders its arrays). No executor knows the kinds of run.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from kdbench.errors import KdbenchError
from kdbench.launch.base import fail_unless_complete, failed_record
from kdbench.results.store import RunStore


class Schedule:
    """The state of the runs of one launch (``specs``, any order) against ``store``.

    Runs whose complete record the store already holds are done from the start. Blocked runs get
    their failed record written to the store (unless ``write`` is false: a dry run). Runs in
    ``elsewhere`` are being trained by an earlier launch (a SLURM job still pending or running):
    they are pending, never missing."""

    def __init__(
        self,
        specs: Sequence[Any],
        store: RunStore,
        write: bool = True,
        elsewhere: Collection[str] = (),
    ) -> None:
        self.store = store
        self.write = write
        self.elsewhere = set(elsewhere)
        self.by_id = {spec.id: spec for spec in specs}
        for spec in specs:
            for need in spec.needs:
                if need == spec.id:
                    raise KdbenchError(f"run {spec.id} needs itself")
        self.order = self._topological(list(self.by_id.values()))
        self.records: dict[str, dict[str, Any]] = {}
        """Run id -> the record of every run that is done: complete (now or before), failed or
        blocked."""
        self.taken: set[str] = set()
        """Runs handed out (training, or submitted) whose outcome is not known yet."""
        for spec in self.order:
            if store.status(spec.id) == "complete":
                self.records[spec.id] = store.load(spec.id) or {}

    def _topological(self, specs: list[Any]) -> list[Any]:
        """``specs``, each after the runs of the launch it needs (otherwise in the given order);
        a cycle is a KdbenchError."""
        out: list[Any] = []
        placed: set[str] = set()
        todo = list(specs)
        while todo:
            ready = [s for s in todo if all(n in placed or n not in self.by_id for n in s.needs)]
            if not ready:
                raise KdbenchError(f"runs {', '.join(s.id for s in todo)} need each other")
            out += ready
            placed |= {s.id for s in ready}
            todo = [s for s in todo if s.id not in placed]
        return out

    def need_state(self, run_id: str) -> str:
        """``complete``, ``failed`` (failed or blocked), ``pending`` (in this launch and not
        done, or trained elsewhere) or ``missing`` (outside the launch, no complete record)."""
        if run_id in self.by_id:
            record = self.records.get(run_id)
            if record is None:
                return "pending"
            return "complete" if record.get("status") == "complete" else "failed"
        if self.store.status(run_id) == "complete":
            return "complete"
        return "pending" if run_id in self.elsewhere else "missing"

    def blocked_error(self, spec: Any) -> str | None:
        """Why ``spec`` cannot start (naming the first need that failed or is missing), or None
        while each of its needs is complete or pending."""
        for need in spec.needs:
            state = self.need_state(need)
            if state == "failed":
                record = self.records[need]
                reason = record.get("error") or record.get("status", "failed")
                return f"not started: {record.get('kind', 'run')} run {need} failed ({reason})"
            if state == "missing":
                return (
                    f"not started: the run {need} it needs has no complete record and is not "
                    "part of this launch"
                )
        return None

    def ready(self) -> list[Any]:
        """The runs not done nor handed out whose needs are all complete, in graph order."""
        return [
            spec for spec in self.order
            if spec.id not in self.records and spec.id not in self.taken
            and all(self.need_state(n) == "complete" for n in spec.needs)
        ]

    def take(self, spec: Any) -> None:
        """Mark ``spec`` as handed out (training, submitted) until :meth:`finish`."""
        self.taken.add(spec.id)

    def finish(self, spec: Any, record: dict[str, Any]) -> list[tuple[Any, dict[str, Any]]]:
        """Record ``spec``'s outcome; return the runs it blocked (transitively), each with its
        failed record (written to the store)."""
        self.taken.discard(spec.id)
        self.records[spec.id] = record
        return self.block()

    def block(self) -> list[tuple[Any, dict[str, Any]]]:
        """Give every run that can no longer start its failed record; return them in order."""
        out = []
        for spec in self.order:
            if spec.id in self.records or spec.id in self.taken:
                continue
            error = self.blocked_error(spec)
            if error is not None:
                self.records[spec.id] = self.blocked_record(spec, error)
                out.append((spec, self.records[spec.id]))
        return out

    def blocked_record(self, spec: Any, error: str) -> dict[str, Any]:
        """The failed record of a run that was not started (written unless a dry run)."""
        if not self.write:
            return failed_record(spec, error)
        return fail_unless_complete(self.store, spec, error)

    def depth(self, spec: Any) -> int:
        """0 for a run that needs no run of this launch, else 1 + the deepest such need."""
        needs = [self.by_id[n] for n in spec.needs if n in self.by_id]
        return 1 + max(map(self.depth, needs)) if needs else 0

    @property
    def done(self) -> bool:
        return len(self.records) == len(self.by_id)

    def ordered_records(self, specs: Sequence[Any]) -> list[dict[str, Any]]:
        """The records of ``specs``, in their order."""
        return [self.records[spec.id] for spec in specs]
