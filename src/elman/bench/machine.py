"""This machine's matrix-multiply peak, its BLAS and its cores, for ``elman bench``."""
from __future__ import annotations

import os
import time

import numpy as np

PEAK_N = 2048


def best_seconds(fn, clock=time.perf_counter, budget: float = 0.0, least: int = 3) -> float:
    """The least time of ``fn()`` over at least ``least`` repeats, and more
    until ``budget`` seconds are spent, after one untimed call."""
    fn()
    best, spent, k = float("inf"), 0.0, 0
    while k < least or spent < budget:
        t = clock()
        fn()
        t = clock() - t
        best, spent, k = min(best, t), spent + t, k + 1
    return best


def matmul_peak(n: int = PEAK_N, reps: int = 3, clock=time.perf_counter) -> float:
    """Best GFLOP/s of an (n,n)(n,n) float32 product with numpy's BLAS, timed by ``clock``."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    c = np.empty_like(a)
    return 2.0 * n ** 3 / best_seconds(lambda: np.matmul(a, b, out=c), clock, least=reps) / 1e9


def blas_info() -> str:
    """Which BLAS numpy calls and with how many threads."""
    try:
        from threadpoolctl import threadpool_info
        pools = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if pools:
            i = pools[0]
            return (f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')} kernels), "
                    f"{i.get('num_threads')} threads")
    except ImportError:
        pass
    cfg = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    return f"{cfg.get('name', '?')} {cfg.get('version', '')} (threads: install threadpoolctl to see)"


def kernel_note(architecture=None, cpuinfo=None, coretype=None):
    """A note when OpenBLAS runs its AVX2 (Haswell) kernels on a CPU that has
    AVX-512, else None. Measured on this project's machine: the AVX-512
    (SkylakeX) kernels doubled the float32 peak (254 -> 469 GFLOP/s) and
    elman's training words/s rose 1.7x. Arguments default to this machine's."""
    if architecture is None:
        try:
            from threadpoolctl import threadpool_info
        except ImportError:
            return None
        pools = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
        architecture = pools[0].get("architecture") if pools else None
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    coretype = os.environ.get("OPENBLAS_CORETYPE") if coretype is None else coretype
    flags = set(cpuinfo.split())
    if architecture != "Haswell" or not {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return None
    why = f" because OPENBLAS_CORETYPE={coretype}" if coretype else ""
    return (f"note: OpenBLAS runs its AVX2 (Haswell) kernels{why} on a CPU with AVX-512; "
            f"OPENBLAS_CORETYPE=SkylakeX selects its AVX-512 ones (all of elman's products)")


def cpus() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
