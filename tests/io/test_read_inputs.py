"""The pictures a user gives sample.py to edit (image=, mask=): a file, or the pictures of one folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from difflab.io.read_inputs import image_files


def test_a_folder_is_its_own_pictures_in_name_order(tmp_path: Path) -> None:
    for name in ("b.png", "a.jpg", "notes.txt"):
        (
            Image.new("L", (4, 4)).save(tmp_path / name)
            if name != "notes.txt"
            else (tmp_path / name).write_text("x")
        )
    assert [p.name for p in image_files(tmp_path)] == ["a.jpg", "b.png"]


def test_a_folder_whose_pictures_are_in_subfolders_names_them(tmp_path: Path) -> None:
    """Before, "no image files … in folder <it>", though a training folder is read at any depth."""
    for sub in ("cats", "dogs"):
        (tmp_path / sub).mkdir()
        Image.new("L", (4, 4)).save(tmp_path / sub / "0.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as error:
        image_files(tmp_path)
    assert str(error.value).endswith(
        f"in folder {tmp_path} (its subfolders cats, dogs hold some: give one of them)"
    )
