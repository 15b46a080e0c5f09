"""The trainer's CPU priority: training is background work that must not slow a chat.

On a host where the trainer shares its cores with the model server (one-machine `make run`),
llama.cpp's threads wait for each other at every layer, so a torch job at the normal priority
that takes one of their cores stalls every reply (README "Model server",
benchmarks/bench_contention.py). Under Linux's SCHED_IDLE class the trainer runs only on
cores nothing else wants, and it still has every core while no chat is being answered.
"""

import logging
import os

log = logging.getLogger(__name__)

POLICIES = {"idle": "SCHED_IDLE", "batch": "SCHED_BATCH"}


def background_priority(policy: str) -> bool:
    """Move every thread of this process to the scheduler class `policy` ("idle", "batch";
    "normal" leaves them as they are). Threads and processes started later inherit it.

    Returns whether the class was set; False (logged) where the platform lacks it."""
    if policy == "normal":
        return False
    if policy not in POLICIES:
        raise ValueError(f"unknown CPU policy {policy!r}: use idle, batch or normal")
    constant = getattr(os, POLICIES[policy], None)
    if constant is None or not hasattr(os, "sched_setscheduler"):
        log.warning("This platform has no %s; the trainer keeps its CPU priority", policy)
        return False
    # Linux keeps the class per thread: torch's worker threads may already exist.
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setscheduler(int(tid), constant, os.sched_param(0))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
    return True
