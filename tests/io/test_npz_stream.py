"""An .npz written and read a batch of rows at a time: the same file np.load reads, the same arrays np.savez and
np.savez_compressed wrote (sample.py's, ADM's `arr_0`), and damage found as it is read."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from difflab.io.npz_stream import NpzRowWriter, find_array, read_rows

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(10, 5, 4, 3), dtype=np.uint8)


def test_rows_written_in_batches_are_the_array_np_load_reads() -> None:
    buffer = io.BytesIO()
    writer = NpzRowWriter(buffer, "images", IMAGES.shape, np.uint8)
    for start in range(0, 10, 3):
        writer.write(IMAGES[start : start + 3])
    writer.close()
    with np.load(io.BytesIO(buffer.getvalue())) as arrays:
        assert arrays.files == ["images"]
        np.testing.assert_array_equal(arrays["images"], IMAGES)


def test_a_writer_given_fewer_rows_than_its_shape_says_so_on_close() -> None:
    writer = NpzRowWriter(io.BytesIO(), "images", IMAGES.shape, np.uint8)
    writer.write(IMAGES[:4])
    with pytest.raises(ValueError, match="^4 of 10 rows were written$"):
        writer.close()


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
@pytest.mark.parametrize("order", ["C", "F"])
def test_rows_read_in_batches_are_what_numpy_saved(save, order, tmp_path) -> None:
    path = tmp_path / "x.npz"
    save(path, IMAGES if order == "C" else np.asfortranarray(IMAGES))
    with zipfile.ZipFile(path) as archive:
        array = find_array(archive, ("images", "arr_0"))
        assert (array.shape, array.dtype) == (IMAGES.shape, np.uint8)
        batches = list(read_rows(archive, array, 4))
    assert [len(b) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(batches), IMAGES)


def test_a_truncated_member_is_found_while_reading(tmp_path) -> None:
    path = tmp_path / "x.npz"
    # Stored, not deflated, so the cut is in the array's bytes, not in the zip's.
    with zipfile.ZipFile(path, "w") as archive, archive.open("images.npy", "w") as member:
        header = {"descr": "|u1", "fortran_order": False, "shape": IMAGES.shape}
        np.lib.format.write_array_header_1_0(member, header)
        member.write(IMAGES[:7].tobytes())
    with zipfile.ZipFile(path) as archive:
        rows = read_rows(archive, find_array(archive, ("images",)), 4)
        assert len(next(rows)) == 4
        with pytest.raises(EOFError, match="images.npy ends inside row 8 of 10"):
            next(rows)
