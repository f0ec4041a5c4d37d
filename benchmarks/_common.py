"""What every benchmark shares: its parser's common flag, timing, the machine, a JSON report.

A benchmark builds its parser with :func:`parser`, which adds ``--json PATH`` (default
``results/benchmarks/<benchmark>.json``), and runs its body inside :class:`Report`: the text it
prints goes to the terminal as before and, with the figures it puts in ``report.results``, the
command, its options and :func:`machine`, into that JSON file when the body ends.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def parser(doc: str | None, name: str) -> argparse.ArgumentParser:
    """An argument parser described by ``doc``'s first line, with ``--json PATH``."""
    out = argparse.ArgumentParser(prog=f"benchmarks/{name}.py",
                                  description=(doc or name).strip().splitlines()[0])
    out.add_argument("--json", type=Path, default=ROOT / "results" / "benchmarks" / f"{name}.json",
                     help="where to write the figures as JSON (default: %(default)s)")
    return out


def timed(work: Callable[[], T]) -> tuple[T, float, float]:
    """``(work(), wall seconds, CPU seconds of this process)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = work()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def timed_process(command: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one fresh process running ``command``,
    which must exit 0; its output is discarded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(list(command), env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (the middle one, or the mean of the two middle ones)."""
    return statistics.median(values)


def _cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, or what :mod:`platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    """The installed version of ``package`` (without importing it), or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """The machine a figure was measured on: CPU model, cores, load, Python and torch, date."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "platform": platform.platform(),
    }


def _plain(value: Any) -> Any:
    """``value`` with paths and tuples made JSON's strings and lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


class _Tee(io.TextIOBase):
    """A text stream that writes to ``stream`` and keeps a copy."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.copy.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class Report:
    """Run a benchmark's body: print as usual; on a normal exit write ``args.json`` holding the
    command, options, machine, ``results`` (the figures the body stored) and the printed text.

    >>> with Report("name", args, argv) as report:   # doctest: +SKIP
    ...     report.results["step_ms"] = 12.5
    """

    def __init__(self, name: str, args: argparse.Namespace,
                 argv: Sequence[str] | None = None) -> None:
        self.name, self.args = name, args
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.results: dict[str, Any] = {}
        self._tee = _Tee(sys.stdout)
        self._redirect = contextlib.redirect_stdout(self._tee)

    def __enter__(self) -> Report:
        self._redirect.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: Any) -> None:
        self._redirect.__exit__(kind, *rest)
        if kind is None:
            self.save()

    def save(self) -> Path:
        """Write the JSON file and say where; returns its path."""
        path: Path = self.args.json
        document = {
            "benchmark": self.name,
            "command": " ".join(["python", f"benchmarks/{self.name}.py", *self.argv]),
            "options": _plain({k: v for k, v in vars(self.args).items() if k != "json"}),
            "machine": machine(),
            "results": _plain(self.results),
            "text": self._tee.copy.getvalue().splitlines(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1) + "\n")
        print(f"figures written to {path}")
        return path
