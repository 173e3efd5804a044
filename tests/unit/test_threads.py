"""Torch's threads in a step (pose inference): every core it may use, or its share where the host says so."""

from __future__ import annotations

import os

import pytest

from action_recognition.threads import cpu_threads, use_its_share_of_cores


@pytest.mark.parametrize("given", [None, "", "0", "x", " 1 ", "3"])
def test_the_share_where_given_else_every_core(monkeypatch: pytest.MonkeyPatch, given: str | None) -> None:
    if given is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", given)
    cores = len(os.sched_getaffinity(0))
    expected = {" 1 ": 1, "3": 3}.get(given or "", cores)
    assert cpu_threads() == expected


def test_inference_sets_torchs_threads_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        torch.set_num_threads(3)
        use_its_share_of_cores()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
