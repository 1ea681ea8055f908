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


def test_pictures_left_in_subfolders_beside_the_top_ones_are_warned_of(tmp_path: Path) -> None:
    """Before, a folder of 8 pictures and a subfolder of 4 edited the 8 without a word."""
    Image.new("L", (4, 4)).save(tmp_path / "top.png")
    (tmp_path / "more").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "more" / "0.png")
    with pytest.warns(
        UserWarning, match=r"the pictures in its subfolder more are not read \(only those at its top"
    ):
        assert [p.name for p in image_files(tmp_path)] == ["top.png"]


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


def test_the_subfolders_named_are_neither_hidden_nor_a_training_runs_grids(tmp_path: Path) -> None:
    # Before, "its subfolders .git, cats hold some" and, for a run folder, "its subfolders samples hold some".
    for sub in (".git", "cats"):
        (tmp_path / "pictures" / sub).mkdir(parents=True)
        Image.new("L", (4, 4)).save(tmp_path / "pictures" / sub / "0.png")
    with pytest.raises(FileNotFoundError, match=r"\(its subfolders cats hold some: give one of them\)$"):
        image_files(tmp_path / "pictures")
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    Image.new("L", (4, 4)).save(run / "samples" / "final.png")
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(
        FileNotFoundError, match=rf"\({run} is a training run folder: make pictures from its model"
    ):
        image_files(run)


@pytest.mark.parametrize("given", ["out", "out/images"])
def test_a_folder_a_stopped_sample_py_left_is_refused(tmp_path: Path, given: str) -> None:
    # Before, image=<it> edited the part it had made without a word (evaluate.py images= refused it).
    (tmp_path / "out" / "images").mkdir(parents=True)
    Image.new("L", (4, 4)).save(tmp_path / "out" / "images" / "00000.png")
    (tmp_path / "out" / ".difflab-writing").write_text("")
    with pytest.raises(ValueError, match=r"is unfinished .* resume=true, then give it as image=$"):
        image_files(tmp_path / given)
    # However it is named: a link to it (or image=. inside it).
    (tmp_path / "link").symlink_to(tmp_path / given, target_is_directory=True)
    with pytest.raises(ValueError, match=r"is unfinished"):
        image_files(tmp_path / "link")
