"""What a resumed sample.py reads back from its own PNGs is exactly what it wrote, with nothing printed."""

import warnings

import torch

from difflab.io.write_images import from_uint8, read_png, save_png, to_uint8


def test_a_png_reads_back_as_the_image_it_was_written_from_without_a_warning(tmp_path):
    """Gray pictures came back through a read-only NumPy view, and torch printed 'The given NumPy array is not
    writable …' in every resumed run."""
    torch.manual_seed(0)
    for channels in (1, 3):
        image = torch.randint(0, 256, (channels, 8, 6), dtype=torch.uint8)
        save_png(image, tmp_path / f"{channels}.png")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            back = read_png(tmp_path / f"{channels}.png")
        assert back.dtype == torch.uint8 and torch.equal(back, image)
        assert torch.equal(to_uint8(from_uint8(back)), image)  # what samples.npz takes from it
