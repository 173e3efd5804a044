"""Torch's CPU threads in a step: every core the process may use, or the share its host gives it."""

from __future__ import annotations

import os


def use_its_share_of_cores() -> None:
    """Inference on the CPU gets every core this process may use, or ``OMP_NUM_THREADS`` where that is set
    (a host running several steps at once gives each its share; torch itself reads the same variable).
    Ultralytics leaves one core free (it sets torch's threads to cores - 1 when a predictor starts, per
    thread): on 2 cores that halves the step's speed, while decoding needs a small part of one core. Called
    before each batch, since a new predictor resets it."""
    import torch

    threads = cpu_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def cpu_threads() -> int:
    """``OMP_NUM_THREADS`` when it is a positive number, else the cores this process may use."""
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    return usable_cores()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
