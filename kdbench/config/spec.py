"""A run: its frozen, fully resolved spec, its kind, what it needs, and its identity.

**A run's identity** (:func:`run_id`) is the rule that decides when a finished result is reused:

- the id hashes what can change a result: the fully resolved config (every default filled in:
  data set, model, methods and their options, seed, recipe, evaluation protocol), the ids of the
  runs it reads (its teacher, its tuning trials) and the source hash of its methods (``code``);
- keys that cannot change a result are outside it (:data:`IDENTITY_EXCLUDED`: the suite's name,
  the device, the plugin paths; :data:`LOCATION_KEYS`: where an imported teacher's checkpoint
  lies, whose SHA-256 is hashed instead; :data:`TRAIN_NOT_IDENTITY`: DataLoader workers; any
  logging, tracker or progress-display key added later belongs here too);
- a key added later whose default reproduces the earlier behaviour declares that default in
  :data:`IDENTITY_DEFAULTS`: while a run sits at it, the key is left out of the hash, so existing
  ids (and the results trained under them) stay valid; any other value moves the id; a method
  option added later does the same in :data:`IDENTITY_OPTION_DEFAULTS`. ``needs``
  follows the same rule: it is hashed only where it differs from what ``teacher_id`` and
  ``train.tune`` already say (:func:`implied_needs`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from kdbench.config.budgets import budget_label
from kdbench.errors import KdbenchError

KINDS: dict[str, str] = {"teacher": "teacher", "trial": "student", "student": "student"}
"""Every kind of run -> the launch stage whose resources train it (``launch.teacher`` or
``launch.student``; :mod:`kdbench.resources`). The order of runs is not the kind's business:
each run names the runs it needs (``RunSpec.needs``) and :mod:`kdbench.launch.schedule` orders
them, so a new kind of run (a method's stage, an imported teacher) is one :func:`register_kind`
and touches no executor."""

EXECUTORS: dict[str, str] = {}
"""Kind -> ``"module:function"`` that executes a run of it, for kinds that do not train a
network (the default, :func:`kdbench.train.session.train`). The function is imported by name
where the run executes (:func:`kdbench.train.run.executor`), so config depends on no layer
above it and a SLURM job finds it as the local executor does."""

TEACHER_KINDS: set[str] = {"teacher"}
"""The kinds of run that leave a teacher model (``model.pt``) for students to distil from: their
model is built as a teacher (``model.kind``), evaluated with X, and tables show them as the
teacher row (an imported teacher, :mod:`kdbench.config.imported`)."""


def register_kind(
    name: str, stage: str, execute: str | None = None, *, teacher: bool = False
) -> None:
    """Declare a kind of run, trained with the resources of launch ``stage``.

    ``execute`` (``"package.module:function"``) replaces training for runs of this kind: it is
    called as ``function(spec, store, progress)`` under the run's lease and returns the fields
    its complete record adds (as :func:`kdbench.train.session.train` does). ``teacher``: its
    runs leave a teacher model (:data:`TEACHER_KINDS`)."""
    if stage not in ("teacher", "student"):
        raise KdbenchError(f"run kind {name!r}: expected stage teacher or student, got {stage!r}")
    if execute is not None and execute.count(":") != 1:
        raise KdbenchError(
            f"run kind {name!r}: execute: expected 'module:function', got {execute!r}")
    KINDS[name] = stage
    if execute is not None:
        EXECUTORS[name] = execute
    else:
        EXECUTORS.pop(name, None)
    if teacher:
        TEACHER_KINDS.add(name)
    else:
        TEACHER_KINDS.discard(name)


def is_teacher(kind: str | None) -> bool:
    """Whether runs of ``kind`` leave a teacher model (:data:`TEACHER_KINDS`)."""
    return kind in TEACHER_KINDS


def known_kind(kind: str) -> bool:
    """Whether ``kind`` is a kind of run; a method's stage kind
    (:attr:`kdbench.method.Method.stage`) is registered here on first use, so every process
    that launches or executes such a run knows it (and its executor) without importing it."""
    if kind not in KINDS:
        from kdbench.registry import METHODS

        for entry in METHODS:
            stage = getattr(entry.obj, "stage", None)
            if stage is not None and stage.kind == kind:
                register_kind(stage.kind, stage.launch, execute=stage.execute)
    return kind in KINDS


def executor_of(kind: str) -> str | None:
    """``"module:function"`` executing a run of ``kind``, or None for a kind that trains."""
    known_kind(kind)
    return EXECUTORS.get(kind)


def stage_of(kind: str) -> str:
    """The launch stage (``teacher``/``student``) whose resources train a run of ``kind``."""
    if not known_kind(kind):
        raise KdbenchError(f"unknown kind of run {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind]


@dataclass(frozen=True)
class RunSpec:
    """One training run, fully resolved. ``id`` hashes its identity (see the module doc)."""

    kind: str
    """A key of :data:`KINDS`: ``"teacher"``, ``"trial"`` (a tuning trial) or ``"student"``."""
    dataset: str
    dataset_options: dict[str, Any]
    model: dict[str, Any]
    """Student: ``backbone``, ``pretrained``, ``decoder_channels``, ``head`` ({name, options});
    teachers add ``kind`` and ``x_backbone``."""
    method: str
    """Row label (``"teacher"`` for teachers)."""
    method_terms: tuple[tuple[str, dict[str, Any]], ...]
    """``(registered name, options)`` with every option's default filled in."""
    seed: int
    train: dict[str, Any]
    teacher_id: str | None = None
    """The teacher run a distilling student reads; None for teachers and the baseline."""
    code: str = ""
    """Hash of the source files of the run's methods (:func:`kdbench.provenance.methods_hash`)."""
    eval: dict[str, Any] = field(default_factory=dict)
    """The evaluation protocol (:data:`kdbench.config.sections.EVAL_SCHEMA`, resolved)."""
    suite: str = field(default="", compare=False)
    device: str = field(default="auto", compare=False)
    plugins: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    """``(path, SHA-256)`` of the suite's plugin files, imported by every process that trains."""
    needs: tuple[str, ...] = ()
    """The ids of the runs that must be complete before this one starts (its teacher, its
    tuning trials, a method's stage): the edges of the run graph."""

    @property
    def id(self) -> str:
        return run_id(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> RunSpec:
        """The spec of a stored ``config`` (:meth:`to_dict`'s inverse; a record written before
        ``needs`` existed needs what its teacher and trials imply)."""
        config = dict(config)
        config["method_terms"] = tuple((n, o) for n, o in config["method_terms"])
        config["plugins"] = tuple((p, h) for p, h in config.get("plugins", ()))
        spec = cls(**{**config, "needs": tuple(config.get("needs", ()))})
        return spec if "needs" in config else with_implied_needs(spec)

    @property
    def axes(self) -> dict[str, Any]:
        """The grid coordinates of this run, as tables use them."""
        return {
            "dataset": self.dataset,
            "student": self.model["backbone"],
            "method": self.method,
            "seed": self.seed,
            "teacher": self.teacher_id,
            "budget": budget_label(self.train.get("budget") or {"steps": self.train["steps"]}),
        }

    def describe(self) -> str:
        budget = f" budget={self.axes['budget']}" if self.train.get("budget") else ""
        return (
            f"{self.kind:7s} {self.dataset}/{self.model['backbone']} {self.method} seed={self.seed}"
            + budget
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["method_terms"] = [list(t) for t in self.method_terms]
        out["plugins"] = [list(p) for p in self.plugins]
        out["needs"] = list(self.needs)
        return out


def implied_needs(spec: RunSpec) -> tuple[str, ...]:
    """What a run reads by its hashed fields: its teacher, then its tuning trials."""
    trials = (spec.train.get("tune") or {}).get("trials", [])
    return (*([spec.teacher_id] if spec.teacher_id else []), *trials)


def with_implied_needs(spec: RunSpec) -> RunSpec:
    """``spec`` needing what its teacher and trials imply (the needs of every built-in kind)."""
    return replace(spec, needs=implied_needs(spec))


IDENTITY_EXCLUDED = ("suite", "device", "plugins")
"""Spec fields that are not part of a run's identity (where and under which name it runs)."""
LOCATION_KEYS = ("model.checkpoint.path",)
"""``"section.key"`` of nested keys that say where an input lies, not what it holds: an imported
teacher's checkpoint is identified by its SHA-256 (``model.checkpoint.sha256``), so the same
file moved elsewhere is the same run."""
TRAIN_NOT_IDENTITY = ("workers", "log")
"""Recipe keys that cannot change a run's result (the batches do not depend on the number of
DataLoader workers: a test; the trackers only read the history), so that changing them reuses
the runs already trained."""
IDENTITY_DEFAULTS: dict[str, Any] = {
    "train.compile": False, "eval.scales": None, "eval.flip": False,
}
"""``"section.key"`` -> the value of a key added after runs were trained under ids that did not
hash it, that reproduces their behaviour: at that value the key is left out of the hash."""
IDENTITY_OPTION_DEFAULTS: dict[tuple[str, str], Any] = {
    ("at", "feature"): "stages",
    ("fitnet", "feature"): "stages",
}
"""``(method, option)`` -> the value of a method option added after runs were trained without
it, that reproduces their behaviour: a term at that value hashes without the option."""
IDENTITY_ALIASES: dict[str, tuple[Any, Any]] = {"train.channels_last": (None, False)}
"""``"section.key"`` -> ``(value, as)`` for a key whose default was widened after runs were
trained: a run at ``value`` hashes as one at ``as``, the value that gave the same computation
(``channels_last: null`` means on CUDA only; on the CPU it is the earlier ``false``, and the
device is not part of a run's identity)."""


def identity(spec: RunSpec) -> dict[str, Any]:
    """The part of ``spec.to_dict()`` that the run id hashes (the module doc's rule)."""
    out = spec.to_dict()
    for key in IDENTITY_EXCLUDED:
        out.pop(key)
    out["train"] = {k: v for k, v in out["train"].items() if k not in TRAIN_NOT_IDENTITY}
    for dotted in LOCATION_KEYS:
        node, key = _parent(out, dotted)
        if node is not None:
            node.pop(key, None)
    for dotted, default in IDENTITY_DEFAULTS.items():
        node, key = _parent(out, dotted)
        if node is not None and key in node and node[key] == default:
            del node[key]
    for name, options in out["method_terms"]:
        for (method, option), default in IDENTITY_OPTION_DEFAULTS.items():
            if name == method and option in options and options[option] == default:
                del options[option]
    for dotted, (value, alias) in IDENTITY_ALIASES.items():
        node, key = _parent(out, dotted)
        if node is not None and key in node and node[key] is value:
            node[key] = alias
    if tuple(out["needs"]) == implied_needs(spec):
        del out["needs"]
    return out


def _parent(config: dict[str, Any], dotted: str) -> tuple[dict[str, Any] | None, str]:
    """The dict holding the key ``dotted`` names in ``config`` (None if absent), and the key."""
    *parents, key = dotted.split(".")
    node: Any = config
    for parent in parents:
        node = node.get(parent) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), key


def run_id(spec: RunSpec) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of the spec's :func:`identity`."""
    canonical = json.dumps(identity(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
