"""Imported teachers: a suite's ``teacher: {checkpoint: PATH, format: F}`` as a kind of run.

A teacher given as a checkpoint is not trained: its run (kind :data:`IMPORTED`, executed by
:func:`kdbench.train.imported.evaluate_imported` with the teachers' launch resources) loads the
file into the teacher model the suite's ``teacher`` section describes, evaluates it once on the
evaluation split under the suite's protocol and leaves its weights as ``model.pt``, where
distilling students read a trained teacher's. Its spec is the trained teacher's with:

- ``model.checkpoint = {path, format, sha256}``: the file (absolute; a relative path is read from
  the suite's folder), its format (:data:`kdbench.models.imports.FORMATS`) and the SHA-256 of its
  bytes, computed when the suite is expanded. The hash is part of the run id, the path is not
  (:data:`kdbench.config.spec.LOCATION_KEYS`): a changed file is a new teacher (and new students),
  the same file elsewhere the same one;
- ``pretrained`` null and ``train`` reduced to what evaluation reads (``steps: 0``, the batch
  size, ``amp``, ``channels_last``, ``workers``), so that the teacher recipe does not move its id;
- ``seed`` 0 whatever the suite's seeds: evaluating a checkpoint draws nothing at random, so
  every seed's students share one imported teacher, evaluated once.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from kdbench.config.spec import RunSpec, register_kind
from kdbench.errors import KdbenchError

IMPORTED = "imported_teacher"
"""The kind of run of an imported teacher."""

register_kind(IMPORTED, "teacher", execute="kdbench.train.imported:evaluate_imported",
              teacher=True)

EVAL_TRAIN_KEYS = ("batch_size", "amp", "channels_last", "workers")
"""The recipe keys an imported teacher's evaluation reads (the eval batch size defaults to the
training batch size; precision and memory format change the logits' rounding)."""

_DIGESTS: dict[tuple[str, int, int], str] = {}
"""(resolved path, size, mtime in ns) -> SHA-256: a file is hashed once per process."""


def checkpoint_path(value: str, suite: Path) -> Path:
    """``teacher.checkpoint`` as an absolute path (a relative one from the suite's folder)."""
    path = Path(value).expanduser()
    return (path if path.is_absolute() else suite.parent / path).resolve()


def checkpoint_digest(path: Path, where: str) -> str:
    """SHA-256 (hex) of the checkpoint file's bytes, cached by path, size and mtime; a missing
    file is one line naming it."""
    if not path.is_file():
        raise KdbenchError(
            f"{where}: teacher.checkpoint: no such file {str(path)!r}; expected a teacher "
            "checkpoint (a state dict saved with torch.save, or .safetensors)"
        )
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def check_import(config: dict[str, Any], where: str) -> None:
    """The ``teacher`` keys an import needs: a known format, the backbone the file holds, no
    ``pretrained`` weights (the checkpoint replaces them)."""
    from kdbench.models.imports import FORMATS

    if config["format"] not in FORMATS:
        raise KdbenchError(
            f"{where}: teacher.format: unknown format {config['format']!r}; expected one of "
            + ", ".join(FORMATS)
        )
    if not config["backbone"]:
        raise KdbenchError(
            f"{where}: teacher.checkpoint: expected teacher.backbone too (the architecture "
            "the checkpoint holds)"
        )
    if config["pretrained"]:
        raise KdbenchError(
            f"{where}: teacher.pretrained: not used with teacher.checkpoint; remove one of them"
        )


def imported_teacher(teacher: RunSpec, config: dict[str, Any], suite: Path) -> RunSpec:
    """The imported-teacher run that replaces the trained ``teacher`` run (module docstring)."""
    where = str(suite)
    check_import(config, where)
    path = checkpoint_path(config["checkpoint"], suite)
    source = {"path": str(path), "format": config["format"],
              "sha256": checkpoint_digest(path, where)}
    train = {"steps": 0, **{k: teacher.train[k] for k in EVAL_TRAIN_KEYS}}
    return replace(teacher, kind=IMPORTED, model={**teacher.model, "checkpoint": source},
                   train=train, seed=0)
