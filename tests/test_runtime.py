"""What the lab's code asks of the process it runs in (runtime/__init__.py). Pure."""

from __future__ import annotations

import threading

import pytest

import runtime


def test_at_once_runs_every_item_together_and_keeps_their_order():
    barrier = threading.Barrier(5, timeout=10)  # each call waits for all five: only at once can they pass

    def work(i: int) -> int:
        barrier.wait()
        return i * i

    assert runtime.at_once(work, range(5)) == [0, 1, 4, 9, 16]
    assert runtime.at_once(work, []) == []


def test_at_once_raises_the_first_failure():
    def work(i: int) -> int:
        if i == 2:
            raise ValueError("web02 did not answer")
        return i

    with pytest.raises(ValueError, match="web02"):
        runtime.at_once(work, range(4))
