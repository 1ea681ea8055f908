"""The latent cache: a dataset encoded once, reused while the autoencoder and the data stay the same, refused in
one line when either differs, rebuilt with a warning when damaged; LDM's latent scale factor from it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from difflab.data.latent_cache import (
    cached_latents,
    data_fingerprint,
    estimate_scale_factor,
    latent_cache_path,
)
from difflab.models.autoencoder import AutoencoderKL
from difflab.models.weights_hash import weights_hash


def tiny_autoencoder(seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        1, latent_channels=2, block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4
    ).eval()


@pytest.fixture
def images() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(20, 1, 8, 8, generator=g) * 2 - 1, torch.zeros(20))


def test_latents_are_the_posterior_of_every_image_and_a_second_read_is_a_hit(
    images, tmp_path: Path, capsys
) -> None:
    net = tiny_autoencoder(0)
    key, ae = data_fingerprint(images, "toy"), weights_hash(net)
    path = latent_cache_path(tmp_path, "toy", "train", ae, key)
    latents, hit = cached_latents(path, net, ae, images, key, batch_size=7)
    # Its progress, as sampling's and scoring's (before, minutes of encoding a large dataset showed nothing).
    assert capsys.readouterr().out.startswith("encoding the latent cache: 20/20 images · ")
    # Under DDP each rank encodes: only rank 0 shows it (review: every rank printed its own lines).
    cached_latents(tmp_path / "quiet.npz", net, ae, images, key, batch_size=7, shown=False)
    assert capsys.readouterr().out == ""
    with torch.no_grad():
        posterior = net.encode(images.tensors[0])
    assert not hit and path.is_file()
    torch.testing.assert_close(latents.mean.float(), posterior.mean, atol=2e-3, rtol=2e-3)  # float16 storage
    torch.testing.assert_close(latents.std.float(), posterior.std, atol=2e-3, rtol=2e-3)
    again, hit = cached_latents(
        path, tiny_autoencoder(1), ae, images, key
    )  # another net would differ: not run
    assert hit and torch.equal(again.mean, latents.mean)


def test_another_autoencoder_or_other_data_gets_another_file(images, tmp_path: Path) -> None:
    first, second = weights_hash(tiny_autoencoder(0)), weights_hash(tiny_autoencoder(1))
    changed = TensorDataset(images.tensors[0].flip(0), images.tensors[1])
    assert first != second and first == weights_hash(tiny_autoencoder(0))
    assert data_fingerprint(images, "toy") != data_fingerprint(changed, "toy")
    paths = {
        latent_cache_path(tmp_path, "toy", "train", ae, data_fingerprint(d, "toy"))
        for ae in (first, second)
        for d in (images, changed)
    }
    assert len(paths) == 4


def test_a_cache_from_another_autoencoder_is_refused_in_one_line_and_kept(images, tmp_path: Path) -> None:
    net, key = tiny_autoencoder(0), data_fingerprint(images, "toy")
    path = tmp_path / "latents.npz"
    cached_latents(path, net, weights_hash(net), images, key)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"was made by autoencoder .* not by the given one") as error:
        cached_latents(path, net, "0123456789abcdef", images, key)
    assert "\n" not in str(error.value) and path.read_bytes() == before


def test_a_damaged_cache_is_rebuilt_with_a_warning(images, tmp_path: Path, caplog) -> None:
    net, key = tiny_autoencoder(0), data_fingerprint(images, "toy")
    path = tmp_path / "latents.npz"
    first, _ = cached_latents(path, net, weights_hash(net), images, key)
    path.write_bytes(path.read_bytes()[:200])
    with caplog.at_level(logging.WARNING, logger="difflab"):
        rebuilt, hit = cached_latents(path, net, weights_hash(net), images, key)
    assert not hit and "is damaged" in caplog.text
    assert torch.equal(rebuilt.mean, first.mean)
    assert cached_latents(path, net, weights_hash(net), images, key)[1]  # the rebuilt file is whole


def test_a_cache_with_a_row_missing_is_rebuilt_with_a_warning(images, tmp_path: Path, caplog) -> None:
    net, key = tiny_autoencoder(0), data_fingerprint(images, "toy")
    path = tmp_path / "latents.npz"
    first, _ = cached_latents(path, net, weights_hash(net), images, key)
    with np.load(path) as arrays:
        cut = {name: arrays[name] for name in arrays.files}
    cut["mean"], cut["std"] = cut["mean"][:-1], cut["std"][:-1]
    np.savez(path, **cut)
    with caplog.at_level(logging.WARNING, logger="difflab"):
        rebuilt, hit = cached_latents(path, net, weights_hash(net), images, key)
    assert not hit and "mean holds 19 rows" in caplog.text and "for 20 images" in caplog.text
    assert torch.equal(rebuilt.mean, first.mean)


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("nan rows", "mean holds values that are not finite"),
        ("inf std", "std holds values that are not finite"),
        ("negative std", "std holds negative values"),
        ("smaller latents", "mean holds 20 rows of shape (2, 1, 1)"),
    ],
)
def test_a_cache_of_wrong_values_or_shape_is_rebuilt_with_a_warning(images, tmp_path, caplog, damage, said):
    # Before, taken as it was: a NaN row made the scale factor and the loss NaN (with advice to lower the learning
    # rate), and latents of another shape were trained on beside samples of the right one, in every later run.
    net, key = tiny_autoencoder(0), data_fingerprint(images, "toy")
    path = tmp_path / "latents.npz"
    first, _ = cached_latents(path, net, weights_hash(net), images, key)
    shape = tuple(first.mean.shape[1:])
    with np.load(path) as arrays:
        bad = {name: arrays[name].copy() for name in arrays.files}
    if damage == "nan rows":
        bad["mean"][3:5] = np.nan
    elif damage == "inf std":
        bad["std"][0, 0, 0, 0] = np.inf
    elif damage == "negative std":
        bad["std"][7] = -1
    else:
        bad["mean"], bad["std"] = bad["mean"][:, :, :1, :1], bad["std"][:, :, :1, :1]
    np.savez(path, **bad)
    with caplog.at_level(logging.WARNING, logger="difflab"):
        rebuilt, hit = cached_latents(path, net, weights_hash(net), images, key, shape=shape)
    assert not hit and f"is damaged ({said}, for 20 images): encoding the data again" in caplog.text
    assert torch.equal(rebuilt.mean, first.mean)
    assert cached_latents(path, net, weights_hash(net), images, key, shape=shape)[1]  # rewritten whole


def test_the_scale_factor_makes_latents_unit_variance(images, tmp_path: Path) -> None:
    net = tiny_autoencoder(0)
    latents, _ = cached_latents(tmp_path / "l.npz", net, weights_hash(net), images, "k")
    scale = estimate_scale_factor(latents, torch.Generator().manual_seed(0))
    draws = latents.sample(torch.arange(20), torch.Generator().manual_seed(1))
    assert abs(float((draws * scale).std()) - 1.0) < 0.1


def test_with_mirrors_the_cache_also_holds_the_posterior_of_each_mirrored_image(
    images, tmp_path: Path
) -> None:
    net, key = tiny_autoencoder(0), data_fingerprint(images, "toy")
    latents, _ = cached_latents(tmp_path / "l.npz", net, weights_hash(net), images, key, mirrored=True)
    with torch.no_grad():
        original, mirrored = net.encode(images.tensors[0]), net.encode(images.tensors[0].flip(-1))
    assert latents.flip_mean is not None and latents.flip_std is not None
    torch.testing.assert_close(latents.mean.float(), original.mean, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(latents.flip_mean.float(), mirrored.mean, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(latents.flip_std.float(), mirrored.std, atol=2e-3, rtol=2e-3)
    assert not torch.allclose(latents.flip_mean.float(), latents.mean.float(), atol=1e-2)


def test_a_cache_without_mirrors_is_extended_once_with_a_log_line(images, tmp_path: Path, caplog) -> None:
    net, key = tiny_autoencoder(0), data_fingerprint(images, "toy")
    path = tmp_path / "l.npz"
    plain, _ = cached_latents(path, net, weights_hash(net), images, key)
    assert plain.flip_mean is None
    with caplog.at_level(logging.INFO, logger="difflab"):
        extended, hit = cached_latents(path, net, weights_hash(net), images, key, mirrored=True)
    assert not hit and "no mirrored encodings" in caplog.text
    assert torch.equal(extended.mean, plain.mean) and extended.flip_mean is not None
    again, hit = cached_latents(path, tiny_autoencoder(1), weights_hash(net), images, key, mirrored=True)
    assert hit and torch.equal(again.flip_mean, extended.flip_mean)  # read back, not encoded again
    # A run without flips reuses the extended file as it is.
    assert cached_latents(path, tiny_autoencoder(1), weights_hash(net), images, key)[1]


def test_a_picture_replaced_in_the_middle_of_a_folder_gets_another_file(tmp_path: Path) -> None:
    # Before, only the first and last 16 images were read: the 20th of 40 replaced reused the stale latents.
    import os

    from PIL import Image

    from difflab.data.folder import ImageFileDataset, scan_images
    from difflab.data.transforms import TransformedDataset

    for i in range(40):
        Image.new("L", (8, 8), 5 * i).save(tmp_path / f"{i:03d}.png")
    as_tensor = lambda image: torch.tensor(list(image.getdata()), dtype=torch.float32)  # noqa: E731

    def folder() -> TransformedDataset:
        return TransformedDataset(ImageFileDataset(scan_images(tmp_path, None)[0]), as_tensor)

    before = data_fingerprint(folder(), "toy")
    assert data_fingerprint(folder(), "toy") == before  # the same files: the same cache
    Image.new("L", (8, 8), 255).save(tmp_path / "020.png")
    os.utime(tmp_path / "020.png", ns=(1, 1))  # even with a time that goes back
    assert data_fingerprint(folder(), "toy") != before


def test_a_cache_folder_that_cannot_be_written_is_one_line_before_any_encoding(
    images, tmp_path: Path, monkeypatch
) -> None:
    # Before, the whole dataset was encoded first (minutes on MNIST), then the write ended in an OSError traceback.
    import difflab.data.latent_cache as latent_cache

    def never(*args, **kwargs):
        raise AssertionError("encoded before the cache folder was checked")

    monkeypatch.setattr(latent_cache, "encode_dataset", never)
    (tmp_path / "taken").write_text(
        "a file where the folder would be"
    )  # fails as a read-only mount does, as root
    path = tmp_path / "taken" / "latents.npz"
    net = tiny_autoencoder(0)
    with pytest.raises(ValueError) as error:
        cached_latents(path, net, weights_hash(net), images, data_fingerprint(images, "toy"))
    assert str(error.value) == (
        f"cannot write the cache folder {tmp_path / 'taken'} (File exists): give a writable latent_cache_dir"
    )
