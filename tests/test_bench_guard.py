"""The benchmark's busy-machine guard: CPU taken by other processes during a timed call is seen, the round re-run or flagged."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from instantid import bench, bench_guard

LATENT = 8


@pytest.fixture(scope="module")
def tiny_unet_call():
    """The bench's own timed call (one CFG denoising call through ComfyUI's sampler) on the tiny SDXL topology.

    One torch thread: on a shared CI runner, OpenMP threads spinning against other jobs make a tiny call 10x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    unet = bench.build_unet(32, torch.float32)
    positive, negative = bench._conditioning(LATENT, 0)
    call = bench.timed_call(unet, positive, negative, LATENT)
    call()  # warm-up
    yield call
    torch.set_num_threads(threads)


@pytest.fixture
def busy_loop():
    """A second process spinning on a core for as long as the test runs."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)  # let it start spinning
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def test_busy_process_during_a_timed_call_is_detected_and_the_round_rerun(tiny_unet_call, busy_loop):
    rounds = bench_guard.timed_rounds({"plain": tiny_unet_call}, rounds=1, max_attempts=2)
    first = rounds[0].earlier_attempts[0] if rounds[0].attempts == 2 else rounds[0].loads
    assert rounds[0].attempts == 2, f"a round with a spinning process beside it was not re-run: {first}"
    load = first["plain"]
    assert load.disturbed() and load.others_cores > 0.3, load  # the busy loop alone keeps a good part of a core busy
    assert load.wall > 0 and load.own_cpu > 0
    assert busy_loop.poll() is None
    summary = bench_guard.summarize(rounds, base="plain")
    assert summary["reruns"] == 1 and summary["rounds_detail"][0]["attempts"] == 2
    assert summary["rounds_detail"][0]["earlier_attempts_others_cores"][0]["plain"] > 0.3


class ScriptedMeter:
    """Stands in for the system counters only: each snapshot advances wall and own CPU by 1 s and others by the next value."""

    def __init__(self, others_per_call: list[float]) -> None:
        self.others = iter(others_per_call)
        self.wall = self.busy = self.own = 0.0
        self.pending = None

    def snapshot(self):
        if self.pending is None:  # start of a call
            self.pending = next(self.others)
        else:
            self.wall += 1.0
            self.own += 1.0
            self.busy += 1.0 + self.pending
            self.pending = None
        return self.wall, self.busy, self.own


def _seconds(values: list[float]):
    it = iter(values)
    return lambda: next(it)


def test_rerun_until_quiet_and_flag_when_never_quiet():
    calls = {"plain": _seconds([1.0, 1.0, 1.0, 1.0, 1.0]), "full": _seconds([2.0, 1.5, 3.0, 3.0, 3.0])}
    # round 1: disturbed (0.5 cores), then quiet; round 2: disturbed on all three attempts
    meter = ScriptedMeter([0.5, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.2, 0.3, 0.0])
    rounds = bench_guard.timed_rounds(calls, rounds=2, meter=meter, threshold_cores=0.1, max_attempts=3)
    assert [(r.attempts, r.disturbed) for r in rounds] == [(2, False), (3, True)]
    assert rounds[0].seconds == {"plain": 1.0, "full": 1.5}
    summary = bench_guard.summarize(rounds, base="plain", threshold_cores=0.1)
    assert summary["disturbed_rounds"] == 1 and summary["reruns"] == 3 and summary["rounds_used"] == 1
    assert summary["ratios"] == {"full": [1.5]}  # the disturbed round is left out
    assert "1 of 2 rounds still disturbed" in summary["verdict"]
    only_busy = bench_guard.summarize(rounds[1:], base="plain", threshold_cores=0.1)
    assert only_busy["ratios"] == {"full": [3.0]} and "every round was disturbed" in only_busy["verdict"]


def test_small_accounting_noise_is_not_a_disturbance():
    assert not bench_guard.CallLoad(wall=0.05, own_cpu=0.1, others_cpu=0.02).disturbed(0.1)  # 2 ticks
    assert bench_guard.CallLoad(wall=1.0, own_cpu=2.0, others_cpu=0.2).disturbed(0.1)
    assert not bench_guard.CallLoad(wall=1.0, own_cpu=2.0, others_cpu=0.08).disturbed(0.1)


def test_paired_ratios_and_their_spread():
    plain = [1.0, 1.1, 0.9, 1.2, 1.0]
    full = [1.4, 1.5, 1.3, 1.8, 1.45]
    rounds = [bench_guard.Round({"plain": p, "full": f}, {}, 1, False) for p, f in zip(plain, full, strict=True)]
    summary = bench_guard.summarize(rounds, base="plain")
    paired = np.array(full) / np.array(plain)
    got = summary["ratio_spread"]["full"]
    expected = dict(zip(("min", "q1", "median", "q3", "max"), np.percentile(paired, [0, 25, 50, 75, 100]), strict=True))
    assert got == pytest.approx(expected)
    assert summary["seconds_median"] == pytest.approx({"plain": float(np.median(plain)), "full": float(np.median(full))})
    assert summary["verdict"] == "quiet: no round disturbed"
