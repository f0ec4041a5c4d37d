"""Search spaces of method hyper-parameters, and the seeded sampling of tuning trials.

A method declares ``search_space = {"weight": LogUniform(0.1, 10.0), "tau": Choice(1.0, 4.0)}``
in its file: option name -> a :class:`Space`. ``tune: {trials: N, split: F}`` in a suite samples
N option sets per method (:func:`trial_options`) with the same N for every method, so each gets
the same tuning budget; the sample of trial i of a row depends only on (tuning seed, row label,
i), so every expansion of the suite draws the same trials.

- :class:`Choice` (one of the listed values, uniformly);
- :class:`Uniform` (low, high): u ~ U[low, high];
- :class:`LogUniform` (low, high), 0 < low: exp(U[log low, log high]), for weights and
  temperatures whose scale is unknown.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Choice:
    """One of ``values``, each with probability 1/len(values)."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        object.__setattr__(self, "values", tuple(values))

    def sample(self, rng: random.Random) -> Any:
        return self.values[rng.randrange(len(self.values))]

    def contains(self, value: Any) -> bool:
        return value in self.values


@dataclass(frozen=True)
class Uniform:
    """A float uniform on [low, high]."""

    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high


@dataclass(frozen=True)
class LogUniform(Uniform):
    """A float whose logarithm is uniform on [log low, log high] (0 < low <= high)."""

    def sample(self, rng: random.Random) -> float:
        value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return min(self.high, max(self.low, value))


Space = Choice | Uniform | LogUniform


def _rng(seed: int, label: str, trial: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}/{label}/{trial}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def trial_options(
    space: Mapping[str, Space], fixed: Mapping[str, Any], seed: int, label: str, trial: int
) -> dict[str, Any]:
    """The options of trial ``trial`` of row ``label``: ``fixed`` (the suite's own choices,
    never searched) plus one sample of every other key of ``space``, in sorted key order. A
    dotted key (``dwld.tau``) names an option of a nested mapping of options (LIX's halves)."""
    rng = _rng(seed, label, trial)
    out = copy.deepcopy(dict(fixed))
    for key in sorted(space):
        value = space[key].sample(rng)
        *parents, leaf = key.split(".")
        node = out
        for parent in parents:
            node[parent] = dict(node.get(parent) or {})
            node = node[parent]
        if leaf not in node:
            node[leaf] = round(value, 6) if isinstance(value, float) else value
    return out


def lookup(options: Mapping[str, Any], key: str) -> Any:
    """The value of a (dotted) search-space ``key`` in ``options``."""
    for part in key.split("."):
        options = options[part]
    return options
