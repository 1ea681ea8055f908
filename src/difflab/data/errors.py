"""Errors and warnings raised by the data layer, so callers can catch them by type."""

import re


class DataError(ValueError):
    """A dataset is misconfigured or its files cannot be used; the message is one line naming the cause."""


class UnreadableImagesWarning(UserWarning):
    """Files with image extensions were skipped: unreadable headers while scanning a folder (one warning for
    all), or pixel data that fails to decode when loaded (one warning per file)."""


# torch's words when a loader worker process dies: killed by a signal, or gone without one.
_KILLED = re.compile(r"DataLoader worker \(pid (\d+)\) is killed by signal: ([^.]+)\.")
_EXITED = re.compile(r"DataLoader worker \(pid\(s\) ([\d, ]+)\) exited unexpectedly")
_MOST_OFTEN = {
    "Killed": "most often by the machine's out-of-memory killer: lower data.num_workers (each worker holds its "
    "own batches) or data.batch_size",
    "Bus error": "most often out of shared memory (/dev/shm: 64 MB in a default Docker container): raise it "
    "(docker run --shm-size=8g) or lower data.num_workers",
}


def worker_death(error: BaseException) -> DataError | None:
    """The one-line DataError for a loader worker that died (torch says so in a RuntimeError); None for other
    errors."""
    text = str(error) if isinstance(error, RuntimeError) else ""
    if killed := _KILLED.search(text):
        pid, how = killed.groups()
        advice = _MOST_OFTEN.get(
            how, "lower data.num_workers, or set it to 0 to see what fails in this process"
        )
        return DataError(f"a data loader worker (pid {pid}) was killed by signal: {how}, {advice}")
    if exited := _EXITED.search(text):  # a kill torch saw as the worker's silence before its signal
        return DataError(
            f"a data loader worker (pid {exited.group(1)}) exited unexpectedly, {_MOST_OFTEN['Killed']} "
            "(data.num_workers=0 shows any other error in this process)"
        )
    return None
