"""Busy-machine guard for ``make bench``: how much CPU other processes took while each call was timed.

On a machine shared with other jobs, a timed call can take longer for reasons
that have nothing to do with the code under test, and a ratio against a
baseline timed at another moment is then meaningless. Around every timed call
the guard reads the system-wide busy CPU time and this process's own CPU time
(psutil: ``/proc/stat`` and ``/proc/self/stat`` on Linux); the difference is
what every other process used meanwhile. A round (one call per configuration,
back to back) in which others used more than ``threshold`` cores on average
during any call is run again, up to ``max_attempts`` times; a round still
disturbed after that is kept but flagged, and the summary says so.

Ratios are paired per round (each configuration against the baseline of the
same round) and reported with their spread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_THRESHOLD_CORES = 0.10
DEFAULT_ATTEMPTS = 3
# /proc/stat counts in 10 ms ticks, sampled per tick: a few ticks of noise are not a disturbance.
MIN_OTHERS_CPU_S = 0.03


@dataclass(frozen=True)
class CallLoad:
    """One timed call. wall: seconds; own_cpu / others_cpu: CPU seconds of this process / all other processes meanwhile."""

    wall: float
    own_cpu: float
    others_cpu: float

    @property
    def others_cores(self) -> float:
        """Average number of cores other processes kept busy during the call."""
        return self.others_cpu / self.wall if self.wall > 0 else 0.0

    def disturbed(self, threshold_cores: float = DEFAULT_THRESHOLD_CORES) -> bool:
        return self.others_cpu > max(threshold_cores * self.wall, MIN_OTHERS_CPU_S)


class CpuMeter:
    """(wall clock, system-wide busy CPU seconds, this process's CPU seconds), read together."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()

    def snapshot(self) -> tuple[float, float, float]:
        times = self._psutil.cpu_times()
        # guest time is already inside user/nice on Linux; idle and iowait are not work.
        idle = sum(getattr(times, f, 0.0) for f in ("idle", "iowait", "guest", "guest_nice"))
        own = self._process.cpu_times()
        return time.perf_counter(), sum(times) - idle, own.user + own.system


def measure(call: Callable[[], float], meter: CpuMeter) -> tuple[float, CallLoad]:
    """Run ``call`` (which returns the seconds it timed itself) and return (those seconds, the load around it)."""
    wall0, busy0, own0 = meter.snapshot()
    seconds = call()
    wall1, busy1, own1 = meter.snapshot()
    own = max(own1 - own0, 0.0)
    return seconds, CallLoad(wall=wall1 - wall0, own_cpu=own, others_cpu=max(busy1 - busy0 - own, 0.0))


@dataclass
class Round:
    """One round: seconds per configuration, and the load of every attempt (the last one is the kept one)."""

    seconds: dict[str, float]
    loads: dict[str, CallLoad]
    attempts: int
    disturbed: bool
    earlier_attempts: list[dict[str, CallLoad]] = field(default_factory=list)

    def as_dict(self, base: str) -> dict:
        return {
            "seconds": self.seconds,
            "ratio": {name: s / self.seconds[base] for name, s in self.seconds.items() if name != base},
            "others_cores": {name: round(load.others_cores, 3) for name, load in self.loads.items()},
            "attempts": self.attempts,
            "disturbed": self.disturbed,
            "earlier_attempts_others_cores": [{n: round(v.others_cores, 3) for n, v in a.items()} for a in self.earlier_attempts],
        }


def timed_rounds(calls: dict[str, Callable[[], float]], rounds: int, meter: CpuMeter | None = None,
                 threshold_cores: float = DEFAULT_THRESHOLD_CORES, max_attempts: int = DEFAULT_ATTEMPTS) -> list[Round]:
    """Run every call once per round, in order; re-run a round in which other processes took CPU."""
    meter = meter or CpuMeter()
    out = []
    for _ in range(rounds):
        earlier: list[dict[str, CallLoad]] = []
        for attempt in range(1, max_attempts + 1):
            seconds, loads = {}, {}
            for name, call in calls.items():
                seconds[name], loads[name] = measure(call, meter)
            disturbed = any(load.disturbed(threshold_cores) for load in loads.values())
            if not disturbed or attempt == max_attempts:
                break
            earlier.append(loads)
        out.append(Round(seconds, loads, attempt, disturbed, earlier))
    return out


def spread(values: list[float]) -> dict[str, float]:
    """min, quartiles (inclusive method) and max of ``values``."""
    if len(values) == 1:
        v = values[0]
        return {"min": v, "q1": v, "median": v, "q3": v, "max": v}
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"min": min(values), "q1": q1, "median": median, "q3": q3, "max": max(values)}


def summarize(rounds: list[Round], base: str, threshold_cores: float = DEFAULT_THRESHOLD_CORES) -> dict:
    """Paired per-round ratios against ``base`` and their spread, from the undisturbed rounds (all rounds if none was)."""
    clean = [r for r in rounds if not r.disturbed]
    used = clean or rounds
    names = [n for n in rounds[0].seconds if n != base]
    ratios = {n: [r.seconds[n] / r.seconds[base] for r in used] for n in names}
    disturbed = len(rounds) - len(clean)
    verdict = ("quiet: no round disturbed" if not disturbed else
               f"{disturbed} of {len(rounds)} rounds still disturbed after re-runs; ratios from the {len(clean)} quiet round(s)" if clean else
               "every round was disturbed: the ratios are from a busy machine")
    return {
        "ratios": ratios,
        "ratio_spread": {n: spread(v) for n, v in ratios.items()},
        "seconds_median": {n: statistics.median(r.seconds[n] for r in used) for n in rounds[0].seconds},
        "rounds_used": len(used),
        "disturbed_rounds": disturbed,
        "reruns": sum(r.attempts - 1 for r in rounds),
        "threshold_cores": threshold_cores,
        "verdict": verdict,
        "rounds_detail": [r.as_dict(base) for r in rounds],
    }
