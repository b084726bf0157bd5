"""Small, dependency-free timing helpers shared by the benchmark scripts.

The model: a *case* is a callable ``run(number) -> seconds`` that performs ``number``
operations and returns the elapsed wall time of just those operations (so a case can
do untimed setup or cleanup around its timed loop). :func:`interleave` runs every case
for several rounds, rotating the order each round so that drift (CPU frequency, other
processes, allocator state) is spread over all cases instead of biasing the last one,
and reports per-operation statistics over the rounds.

:func:`sync_case` and :func:`async_case` build cases from a per-operation callable;
:func:`calibrate` picks ``number`` so that one batch takes roughly a target time.
"""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata

TIMERS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "cpu": time.process_time,
}
"""``wall`` is what a client sees; ``cpu`` (this process's CPU time) is steadier on a
machine shared with other busy processes, since time spent descheduled is not counted."""

BatchRunner = Callable[[int], float]
"""``run(number)`` performs ``number`` operations and returns the elapsed seconds."""


@dataclass
class Result:
    """Per-operation times (seconds) of one case, one sample per round."""

    name: str
    number: int
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median seconds per operation over the rounds."""
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        """Fastest round, seconds per operation."""
        return min(self.samples)

    @property
    def spread(self) -> float:
        """Relative spread: (max - min) / median over the rounds."""
        med = self.median
        return (max(self.samples) - min(self.samples)) / med if med else 0.0

    def added_over(self, baseline: Result) -> float:
        """Seconds per operation added over ``baseline``: the median, over the rounds,
        of this round's time minus the baseline's time in the same round.

        Paired by round, so that the machine's slow and fast phases, which last longer
        than one round, cancel out instead of landing on one side only.
        """
        return paired_median(self.samples, baseline.samples, lambda a, b: a - b)

    def ratio_to(self, baseline: Result) -> float:
        """The median over the rounds of this round's time / the baseline's."""
        return paired_median(self.samples, baseline.samples, lambda a, b: a / b)


def added_micros(
    results: Mapping[str, Mapping[str, Result]], baseline: str = "bare"
) -> dict[str, dict[str, float]]:
    """µs added per operation over ``baseline``, paired by round, per route and case."""
    return {
        route: {name: 1e6 * r.added_over(cases[baseline]) for name, r in cases.items()}
        for route, cases in results.items()
    }


def paired_median(
    samples: Sequence[float], baseline: Sequence[float], combine: Callable[[float, float], float]
) -> float:
    """The median of ``combine(sample, baseline sample)`` over rounds taken together."""
    if len(samples) != len(baseline):
        raise ValueError("paired samples need the same number of rounds")
    return statistics.median(combine(a, b) for a, b in zip(samples, baseline, strict=True))


def sync_case(
    op: Callable[[], object],
    *,
    setup: Callable[[], object] | None = None,
    teardown: Callable[[], object] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> BatchRunner:
    """A case calling ``op()`` ``number`` times; ``setup``/``teardown`` run untimed."""

    def run(number: int) -> float:
        if setup is not None:
            setup()
        it = range(number)
        start = timer()
        for _ in it:
            op()
        elapsed = timer() - start
        if teardown is not None:
            teardown()
        return elapsed

    return run


def async_case(
    loop: asyncio.AbstractEventLoop,
    batch: Callable[[int], Awaitable[float]],
    *,
    setup: Callable[[], object] | None = None,
    teardown: Callable[[], object] | None = None,
) -> BatchRunner:
    """A case running ``await batch(number)`` on ``loop``.

    ``batch`` does its own timing (a timer of :data:`TIMERS` around its loop) and
    returns the elapsed seconds, so the one ``run_until_complete`` per batch is not
    counted. ``setup``/``teardown`` run untimed, outside the loop.
    """

    def run(number: int) -> float:
        if setup is not None:
            setup()
        elapsed = loop.run_until_complete(batch(number))
        if teardown is not None:
            teardown()
        return elapsed

    return run


def calibrate(
    run: BatchRunner,
    target_seconds: float,
    *,
    probe: int = 200,
    minimum: int = 100,
    maximum: int = 1_000_000,
) -> int:
    """A ``number`` for which one batch of ``run`` takes about ``target_seconds``."""
    per_op = run(probe) / probe
    if per_op <= 0:
        return maximum
    return max(minimum, min(maximum, int(target_seconds / per_op)))


def interleave(
    cases: Mapping[str, BatchRunner],
    numbers: Mapping[str, int] | int,
    *,
    rounds: int = 7,
    warmup: int = 1,
    collect: bool = True,
    progress: Callable[[str], object] | None = None,
) -> dict[str, Result]:
    """Run every case ``rounds`` times, rotating the order each round.

    ``numbers`` is one operation count for all cases or one per case. ``warmup`` full
    untimed passes run first (imports, caches, code objects, allocator pools).
    With ``collect`` a full ``gc.collect()`` runs before each batch so every batch starts
    from the same heap state; the collector stays enabled during the batch, so garbage
    cycles a case creates are paid for by that case, as in production.
    """
    names = list(cases)

    def number_of(name: str) -> int:
        return numbers if isinstance(numbers, int) else numbers[name]

    for _ in range(warmup):
        for name in names:
            cases[name](max(1, number_of(name) // 4))
    results = {name: Result(name, number_of(name)) for name in names}
    for r in range(rounds):
        shift = r % len(names) if names else 0
        order = names[shift:] + names[:shift]
        for name in order:
            if collect:
                gc.collect()
            n = number_of(name)
            results[name].samples.append(cases[name](n) / n)
        if progress is not None:
            progress(f"round {r + 1}/{rounds} done")
    return results


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], align: Sequence[str] | None = None
) -> str:
    """A GitHub markdown table; ``align`` holds ``"l"`` or ``"r"`` per column."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(row[i]) for row in cells)) if cells else len(h)
        for i, h in enumerate(headers)
    ]
    align = align or ["l"] * len(headers)

    def fmt(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if a == "r" else v.ljust(w)
            for v, w, a in zip(values, widths, align, strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    rule = [
        ("-" * (w - 1) + ":") if a == "r" else ("-" * w) for w, a in zip(widths, align, strict=True)
    ]
    return "\n".join([fmt(headers), "| " + " | ".join(rule) + " |", *(fmt(r) for r in cells)])


def environment(packages: Sequence[str] = ()) -> str:
    """One line naming the interpreter, platform, CPU count and package versions."""
    parts = [
        f"{platform.python_implementation()} {platform.python_version()}",
        f"{platform.system()} {platform.machine()}",
        f"{os.cpu_count()} CPU",
    ]
    for name in packages:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def log(message: str) -> None:
    """Progress output on stderr (stdout stays clean for the report)."""
    print(message, file=sys.stderr, flush=True)
