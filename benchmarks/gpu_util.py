"""GPU measuring for the benchmarks: NVML utilisation sampling, CUDA-event timing."""

from __future__ import annotations

import statistics
import time


def cuda_median_ms(fn, reps: int) -> float:
    """Median milliseconds of ``fn()`` over ``reps`` calls (CUDA events, after 3 warm-up calls)."""
    import torch

    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


class UtilizationSampler:
    """Samples NVML's GPU utilisation (share of time a kernel was running) in a thread.

    ``mean(t0, t1)`` averages the samples taken between two ``time.monotonic()``
    stamps. Used by the benchmarks to report how busy the GPU was.
    """

    def __init__(self, index: int = 0, period_s: float = 0.05):
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.period = period_s
        self.samples: list[tuple[float, int]] = []
        self._stop = False
        self._thread = None

    def __enter__(self) -> "UtilizationSampler":
        import threading

        self._thread = threading.Thread(target=self._run, daemon=True, name="nvml")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop:
            util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
            self.samples.append((time.monotonic(), int(util)))
            time.sleep(self.period)

    def __exit__(self, *exc) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join()

    def mean(self, t0: float, t1: float) -> float:
        values = [u for t, u in self.samples if t0 <= t <= t1]
        return sum(values) / len(values) / 100 if values else float("nan")

    def per_second(self, t0: float, t1: float) -> list[int]:
        """Mean utilisation (%) in each whole second from ``t0`` to ``t1``: the run's timeline."""
        bins: dict[int, list[int]] = {}
        for t, u in self.samples:
            if t0 <= t <= t1:
                bins.setdefault(int(t - t0), []).append(u)
        return [round(sum(bins[s]) / len(bins[s])) if s in bins else -1 for s in range(int(t1 - t0) + 1)]
