"""One array of an .npz written or read a batch of rows at a time, so 50,000 generated images never have to sit
in memory at once. The file is an ordinary .npz: `np.load` reads what `NpzRowWriter` writes, and the reader takes
`np.savez`/`np.savez_compressed` files (sample.py's, ADM's and torch-fidelity's `arr_0`)."""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np
from numpy.lib import format as npy


class NpzRowWriter:
    """Writes the array `name` of shape `shape` into the open binary file `file` as a compressed .npz member, rows
    appended in order by `write`; `close` checks that every row came."""

    def __init__(self, file: IO[bytes], name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape, self.dtype, self.rows = tuple(shape), np.dtype(dtype), 0
        self._zip = zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED)
        self._member: IO[bytes] | None = None
        try:
            # force_zip64: the member's size is unknown when its header is written and may pass 4 GiB.
            self._member = self._zip.open(f"{name}.npy", "w", force_zip64=True)
            header = {"descr": npy.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
            npy.write_array_header_1_0(self._member, header)  # as np.save writes it, for any reader of .npy
        except BaseException:
            self.abandon()
            raise

    def write(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != self.shape[1:] or rows.dtype != self.dtype:
            raise ValueError(
                f"rows of {rows.dtype} {rows.shape[1:]} for an array of {self.dtype} {self.shape[1:]}"
            )
        if self.rows + len(rows) > self.shape[0]:
            raise ValueError(f"{self.rows + len(rows)} rows written to an array of {self.shape[0]}")
        self._member.write(np.ascontiguousarray(rows).tobytes())
        self.rows += len(rows)

    def abandon(self) -> None:
        """Stop writing an unfinished file without an error (it is being thrown away, perhaps for a full disk):
        the member and the archive are each closed, so that neither tries again when it is collected."""
        if self._member is not None:
            with contextlib.suppress(Exception):
                self._member.close()
        with contextlib.suppress(Exception):
            self._zip.close()

    def close(self) -> None:
        assert self._member is not None
        self._member.close()
        self._zip.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.rows} of {self.shape[0]} rows were written")


@dataclass
class NpzArray:
    """An array inside an .npz, read from its header: its member name, shape and dtype."""

    member: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool


def _read_header(member: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """shape, Fortran order and dtype of the .npy stream `member`, which is left where its data starts."""
    version = npy.read_magic(member)
    read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
    shape, fortran_order, dtype = read_header(member)
    return tuple(shape), bool(fortran_order), np.dtype(dtype)


def find_array(archive: zipfile.ZipFile, names: tuple[str, ...]) -> NpzArray | None:
    """The first of `names` the .npz holds, its header read (nothing else)."""
    members = set(archive.namelist())
    name = next((n for n in names if f"{n}.npy" in members), None)
    if name is None:
        return None
    with archive.open(f"{name}.npy") as member:
        shape, fortran_order, dtype = _read_header(member)
    return NpzArray(f"{name}.npy", shape, dtype, fortran_order)


def read_rows(archive: zipfile.ZipFile, array: NpzArray, batch: int) -> Iterator[np.ndarray]:
    """The array's rows, `batch` at a time (a Fortran-ordered array, which has no rows on disk, read whole)."""
    with archive.open(array.member) as member:
        if array.fortran_order:
            whole = npy.read_array(member, allow_pickle=False)
            for start in range(0, len(whole), batch):
                yield whole[start : start + batch]
            return
        _read_header(member)
        row_shape = array.shape[1:]
        row_bytes = array.dtype.itemsize * int(np.prod(row_shape))
        for start in range(0, array.shape[0], batch):
            count = min(batch, array.shape[0] - start)
            data = member.read(count * row_bytes)
            if len(data) != count * row_bytes:
                raise EOFError(
                    f"{array.member} ends inside row {start + len(data) // row_bytes + 1} of {array.shape[0]}"
                )
            yield np.frombuffer(data, dtype=array.dtype).reshape(count, *row_shape)
