"""The line rank 0 ends a DDP run with when another of its processes failed first."""

from __future__ import annotations

from difflab.training.other_processes import OtherProcessFailed, other_process_failed


def test_a_process_killed_by_a_signal_is_named_with_the_signal():
    # The system's out-of-memory killer ends a process with SIGKILL, and it prints nothing of its own.
    error = other_process_failed({2: -9, 3: 1})
    assert isinstance(error, OtherProcessFailed) and isinstance(error, ValueError)  # one line, exit 2
    assert str(error) == (
        "DDP process 2 was killed by SIGKILL (as the system does when it runs out of memory: see dmesg); the "
        "others stopped with it"
    )


def test_another_signal_is_named_without_the_memory_hint():
    assert (
        str(other_process_failed({1: -15}))
        == "DDP process 1 was killed by SIGTERM; the others stopped with it"
    )


def test_a_process_that_exited_with_an_error_points_at_its_message():
    assert str(other_process_failed({1: 1})) == (
        "DDP process 1 ended with exit 1 (its error is above); the others stopped with it"
    )
