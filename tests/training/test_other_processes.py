"""The line rank 0 ends a DDP run with when another of its processes failed first."""

from __future__ import annotations

from difflab.training.other_processes import OtherProcessFailed, failed_elsewhere, other_process_failed


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


LOST = RuntimeError("[../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:27036")


def test_a_lost_peer_is_named_by_the_process_that_failed_or_that_finished_without_this_one():
    assert str(failed_elsewhere(LOST, {1: 1})) == str(other_process_failed({1: 1}))
    # Stop 42's CI: rank 0 waited in the final grid's gather for a rank that had ended the run.
    finished = str(failed_elsewhere(LOST, {1: 0}))
    assert finished.startswith("DDP process 1 finished the run while this one waited for it in a collective")


def test_rank_0s_own_failure_is_kept_when_the_others_finished_or_none_ended():
    # A full disk writing rank 0's grid after the others had finished: its own error is the story.
    assert failed_elsewhere(OSError(28, "No space left on device"), {1: 0}) is None
    assert failed_elsewhere(LOST, {}) is None
    assert failed_elsewhere(ValueError("a NaN loss"), {}) is None
