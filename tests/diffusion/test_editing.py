"""Editing with an unconditional model: RePaint inpainting, SDEdit img2img, loading pictures and masks,
and both modes end to end through sample.py's `sample(cfg)`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from analytic import ImageMixtureDenoiser
from conftest import FAST_TRAIN, compose_config, one_error_line, run_cli
from PIL import Image
from torch import Tensor

from difflab.diffusion import DDIMSampler, DDPMSampler, HeunSampler, NoiseSchedule, SampleGenerators
from difflab.diffusion.editing import (
    img2img,
    jump_schedule,
    repaint,
    repaint_model_calls,
    strength_timesteps,
)
from difflab.generation import Generation, GenerationRequest
from difflab.generation.methods import Img2Img, Inpaint
from difflab.generation.modes import repaint_options
from difflab.io.read_inputs import load_images, load_masks
from difflab.run.sample import sample
from difflab.run.train import train

SCHEDULE = NoiseSchedule.from_name("linear", timesteps=1000)
SHAPE = (1, 8, 8)


def constant_model(value: float = 0.5) -> ImageMixtureDenoiser:
    """The exact denoiser for data that is `value` everywhere."""
    return ImageMixtureDenoiser(SCHEDULE, torch.full((1, *SHAPE), value))


def random_pictures(n: int, seed: int) -> Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def hole_mask() -> Tensor:
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 3:8] = 1
    return mask


# -- the jump schedule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "steps, jump_length, jump_n_sample",
    [(250, 10, 10), (20, 5, 2), (7, 3, 4), (5, 10, 3), (12, 4, 1), (1, 1, 1)],
)
def test_jump_schedule_walks_from_the_top_to_clean_one_level_at_a_time(steps, jump_length, jump_n_sample):
    path = jump_schedule(steps, jump_length, jump_n_sample)
    assert path[0] == steps - 1 and path[-1] == -1
    moves = np.diff(path)
    assert set(moves.tolist()) <= {-1, 1}
    assert max(path) == steps - 1 and path.count(-1) == 1
    assert int((moves < 0).sum()) == repaint_model_calls(steps, jump_length, jump_n_sample)


def test_jump_schedule_resamples_each_stretch_the_asked_number_of_times():
    path = jump_schedule(20, 5, 3)
    # Levels 0, 5, 10 start a jump (15 would leave no room above), each twice: 20 + 2·5·3 = 50 calls.
    assert repaint_model_calls(20, 5, 3) == 50
    ups = [here for here, there in zip(path, path[1:], strict=False) if there > here]
    assert sorted(set(ups)) == list(range(15))  # climbing through every level below the last jump's top
    assert jump_schedule(6, 2, 1) == [5, 4, 3, 2, 1, 0, -1]  # jump_n_sample=1: plain DDPM
    with pytest.raises(ValueError, match="jump_length must be at least 1"):
        jump_schedule(10, 0, 2)


# -- RePaint -----------------------------------------------------------------------------------------


def test_repaint_keeps_known_pixels_exactly_and_denoises_the_hole():
    image = random_pictures(3, seed=1)
    mask = hole_mask()
    model = constant_model(0.5)
    g = torch.Generator().manual_seed(0)
    out = repaint(model, SCHEDULE, image, mask, steps=20, jump_length=5, jump_n_sample=2, generator=g)
    hole = mask.bool().expand_as(image)
    assert torch.equal(out[~hole], image[~hole])
    # The hole is generated (the input there is uniform noise in [-1, 1]), not copied.
    torch.testing.assert_close(out[hole], torch.full_like(out[hole], 0.5), atol=1e-3, rtol=0)
    assert len(model.calls) == repaint_model_calls(20, 5, 2) == 35
    assert model.calls[0] == 950  # the top of the 20-step leading grid


def test_repaint_makes_the_hole_agree_with_the_kept_pixels():
    # Data: a picture A or its negative; the kept pixels come from A, so the hole must be filled from A.
    mu = random_pictures(1, seed=2)[0]
    model = ImageMixtureDenoiser(SCHEDULE, torch.stack([mu, -mu]), std=0.02)
    image = mu.expand(4, *SHAPE)
    mask = hole_mask()
    g = torch.Generator().manual_seed(0)
    out = repaint(model, SCHEDULE, image, mask, steps=25, jump_length=5, jump_n_sample=2, generator=g)
    hole = mask.bool().expand_as(image)
    assert (out[hole] - image[hole]).abs().max() < 0.15
    assert (out[hole] + image[hole]).abs().mean() > 0.5  # and not from -A


def test_repaint_accepts_per_image_masks_and_refuses_misfit_ones():
    image = random_pictures(2, seed=3)
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, :, :4] = 1
    masks[1, :, 4:] = 1
    out = repaint(constant_model(), SCHEDULE, image, masks, steps=5, jump_length=2, jump_n_sample=2)
    keep = ~masks.bool().expand_as(image)
    assert torch.equal(out[keep], image[keep])
    with pytest.raises(ValueError, match="does not fit images"):
        repaint(constant_model(), SCHEDULE, image, torch.ones(1, 1, 4, 4), steps=5)


# -- img2img (SDEdit) --------------------------------------------------------------------------------


def test_strength_picks_the_tail_of_the_sampler_timesteps():
    ts = DDIMSampler(SCHEDULE, steps=50).timesteps  # leading: 980, 960, …, 0
    kept = strength_timesteps(ts, 1000, 0.6)
    assert int(kept[0]) == 580 and len(kept) == 30 and int(kept[-1]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its last step, t = 0, noises next to nothing: nothing to say
        assert strength_timesteps(ts, 1000, 1e-4).tolist() == [0]  # always at least the last step
    # A grid that stops short of t = 0 (trailing: 999, 899, …, 99) runs its least noisy step, and says so.
    trailing = DDIMSampler(SCHEDULE, steps=10, timestep_spacing="trailing").timesteps
    with pytest.warns(
        UserWarning, match=r"^strength=1e-09 is below the sampler's least noisy step \(t=99, strength 0.1\)"
    ):
        assert strength_timesteps(trailing, 1000, 1e-9).tolist() == [99]
    assert torch.equal(strength_timesteps(ts, 1000, 1.0), ts)
    # The grid's timesteps noised at most to the strength, (t + 1) / T <= s: 0.59 starts at 580 as 0.6 does, 0.61
    # at 600 (review: the README said 0.59 ran diffusers' steps, which are 29 from 560).
    assert [
        (int(strength_timesteps(ts, 1000, s)[0]), len(strength_timesteps(ts, 1000, s))) for s in (0.59, 0.61)
    ] == [
        (580, 30),
        (600, 31),
    ]
    for bad in (0, 1.5, -0.2, float("nan")):
        with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
            img2img(DDIMSampler(SCHEDULE, steps=10), constant_model(), random_pictures(1, 0), bad)


@pytest.mark.parametrize("sampler", [DDIMSampler(SCHEDULE, steps=10), HeunSampler(SCHEDULE, steps=10)])
def test_an_img2img_edit_reports_the_model_calls_it_makes(sampler):
    # Before, Heun's edit reported one call per timestep (6 at strength 0.6): it makes two for all but the last.
    model = constant_model()
    edit = Img2Img(sampler, random_pictures(1, 0), per_picture=1, strength=0.6)
    edit(model, SampleGenerators(0, [0]), None)
    assert len(model.calls) == edit.nfe == edit.settings()["nfe"] == (11 if sampler.core.nfe(2) == 3 else 6)


def _mixture_of_pictures() -> ImageMixtureDenoiser:
    """A 'data set' of four tight clusters of pictures: the model knows where every input belongs."""
    return ImageMixtureDenoiser(SCHEDULE, random_pictures(4, seed=4), std=0.01)


def test_img2img_at_low_strength_returns_nearly_the_input():
    model = _mixture_of_pictures()
    image = model.means[:2].float() + 0.01 * torch.randn(
        2, *SHAPE, generator=torch.Generator().manual_seed(5)
    )
    for sampler in (DDPMSampler(SCHEDULE), DDIMSampler(SCHEDULE, steps=100, timestep_spacing="trailing")):
        model.calls.clear()
        out = img2img(sampler, model, image, 0.05, generator=torch.Generator().manual_seed(0))
        assert (out - image).abs().max() < 0.1
        assert model.calls[0] <= 49


def test_img2img_at_full_strength_ignores_the_input():
    model = _mixture_of_pictures()
    a, b = random_pictures(2, seed=6), -random_pictures(2, seed=6)
    for sampler in (
        DDPMSampler(SCHEDULE, steps=100, timestep_spacing="trailing"),
        DDIMSampler(SCHEDULE, steps=20),
    ):
        outs = [img2img(sampler, model, x, 1.0, generator=torch.Generator().manual_seed(7)) for x in (a, b)]
        torch.testing.assert_close(outs[0], outs[1], atol=0.05, rtol=0)
        assert (outs[0] - a).abs().mean() > 0.2  # not the input either


# -- reproducible per result: the batch size never changes an edit ---------------------------------


def _in_batches(edit, pictures: Tensor, batch_size: int, seed: int = 11) -> Tensor:
    """edit(pictures[a:b], generators for results a..b-1), batch by batch."""
    parts = []
    for a in range(0, len(pictures), batch_size):
        b = min(a + batch_size, len(pictures))
        parts.append(edit(pictures[a:b], SampleGenerators(seed, range(a, b))))
    return torch.cat(parts)


def test_repaint_results_do_not_depend_on_the_batch_size():
    model, pictures, mask = _mixture_of_pictures(), random_pictures(8, seed=8), hole_mask()

    def inpaint(images: Tensor, generators: SampleGenerators) -> Tensor:
        return repaint(
            model, SCHEDULE, images, mask, steps=10, jump_length=3, jump_n_sample=2, generator=generators
        )

    whole = _in_batches(inpaint, pictures, 8)
    assert torch.equal(_in_batches(inpaint, pictures, 3), whole)
    hole = mask.bool().expand_as(pictures)
    assert not torch.equal(whole[hole], pictures[hole])  # the hole was generated, with noise


@pytest.mark.parametrize(
    "make", [lambda: DDPMSampler(SCHEDULE, steps=20), lambda: DDIMSampler(SCHEDULE, steps=10, eta=1.0)]
)
def test_img2img_results_do_not_depend_on_the_batch_size(make):
    model, pictures, sampler = _mixture_of_pictures(), random_pictures(8, seed=9), make()

    def sdedit(images: Tensor, generators: SampleGenerators) -> Tensor:
        return img2img(sampler, model, images, 0.5, generator=generators)

    assert torch.equal(_in_batches(sdedit, pictures, 3), _in_batches(sdedit, pictures, 8))


def test_edit_requests_give_the_same_results_at_any_batch_size():
    model, pictures = _mixture_of_pictures(), random_pictures(3, seed=10)
    options = {"steps": 10, "jump_length": 3, "jump_n_sample": 2}
    inpaint = Inpaint(SCHEDULE, "epsilon", pictures, hole_mask(), 2, options)

    def edits(batch_size: int) -> Tensor:
        return Generation(GenerationRequest(inpaint, range(6), seed=5, batch_size=batch_size), model).images()

    # 3 pictures × 2 edits: result k is an edit of picture k // 2, the same whether batched by 4 or by 6.
    by_four = edits(4)
    assert torch.equal(edits(6), by_four)
    assert not torch.equal(by_four[0], by_four[1])  # two edits of one picture differ


# -- loading pictures and masks ----------------------------------------------------------------------


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_load_images_resizes_and_converts_with_one_warning(tmp_path):
    rng = np.random.default_rng(0)
    _png(tmp_path / "pics" / "b.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    _png(tmp_path / "pics" / "a.png", rng.integers(0, 256, (32, 24, 3), dtype=np.uint8))
    (tmp_path / "pics" / "notes.txt").write_text("not a picture")
    with pytest.warns(UserWarning) as record:
        loaded = load_images(tmp_path / "pics", (1, 16, 16))
    assert len(record) == 1
    message = str(record[0].message)
    assert "resized 2 to 16×16" in message and "a.png 24×32" in message and "converted 2 to L" in message
    assert [p.name for p in loaded.paths] == ["a.png", "b.png"]
    assert loaded.images.shape == (2, 1, 16, 16) and loaded.sizes == [(24, 32), (32, 32)]
    assert loaded.images.min() >= -1 and loaded.images.max() <= 1


def test_a_cmyk_or_palette_picture_is_named_as_converted(tmp_path):
    """Before, only a picture of another channel count was named: CMYK and palette pictures have 3 channels."""
    Image.new("CMYK", (16, 16), (0, 50, 100, 0)).save(tmp_path / "a.jpg")
    Image.new("P", (16, 16)).save(tmp_path / "b.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "c.png")
    with pytest.warns(UserWarning, match=r"converted 2 to RGB \(a.jpg CMYK, b.png P\)"):
        load_images(tmp_path, (3, 16, 16))


def test_load_images_of_the_model_shape_is_exact_and_silent(tmp_path):
    array = np.arange(256, dtype=np.uint8).reshape(16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_images(_png(tmp_path / "x.png", array), (1, 16, 16))
    assert torch.equal(((loaded.images[0, 0] + 1) * 127.5).round().to(torch.uint8), torch.from_numpy(array))


def test_masks_white_is_generate_and_bad_masks_are_named(tmp_path):
    pic = load_images(_png(tmp_path / "pic.png", np.zeros((16, 16), np.uint8)), (1, 16, 16))
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 2:5] = 255
    m = load_masks(_png(tmp_path / "mask.png", mask), pic)
    assert m.shape == (1, 1, 16, 16) and torch.equal(m[0, 0], torch.from_numpy(mask > 127).float())
    assert load_masks(_png(tmp_path / "white.png", np.full((16, 16), 255, np.uint8)), pic).all()

    big = _png(tmp_path / "big.png", np.full((32, 32), 255, np.uint8))
    with pytest.raises(ValueError, match=r"mask .*big.png is 32×32 but the image .*pic.png is 16×16"):
        load_masks(big, pic)
    black = _png(tmp_path / "black.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match=r"black.png has no pixels to generate \(no white pixels\)"):
        load_masks(black, pic)
    # Both wrong: the size is named first, as fixing it is what the mask needs whatever its pixels.
    big_black = _png(tmp_path / "big_black.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"big_black.png is 32×32 but the image"):
        load_masks(big_black, pic)
    with pytest.raises(FileNotFoundError, match="mask not found: .*nope.png"):
        load_masks(tmp_path / "nope.png", pic)
    with pytest.raises(FileNotFoundError, match="image not found: .*nope.png"):
        load_images(tmp_path / "nope.png", (1, 16, 16))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="could not read image .*broken.png"):
        load_images(tmp_path / "broken.png", (1, 16, 16))


def test_a_mask_drawn_in_transparency_is_refused_and_an_opaque_one_read(tmp_path):
    # Before, an RGBA mask white everywhere, opaque only in its lower half (an editor's mask drawn in alpha), was
    # read by brightness alone: the whole picture was generated, without a word (helper report).
    pic = load_images(_png(tmp_path / "pic.png", np.zeros((16, 16), np.uint8)), (1, 16, 16))
    rgba = np.full((16, 16, 4), 255, np.uint8)
    rgba[:8, :, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    with pytest.raises(ValueError) as raised:
        load_masks(tmp_path / "alpha.png", pic)
    assert str(raised.value) == (
        f"mask {tmp_path / 'alpha.png'} has transparent white pixels: a mask is read by its brightness (white: "
        "generate, black: keep), not its transparency; save it flattened to black and white"
    )
    rgba[:8, :, :3] = 0  # transparent black over the kept half: both readings agree (review report: refused)
    Image.fromarray(rgba).save(tmp_path / "agreeing.png")
    lower_half = [0.0] * 8 + [1.0] * 8
    assert load_masks(tmp_path / "agreeing.png", pic)[0, 0, :, 0].tolist() == lower_half
    palette = Image.fromarray((rgba[..., 0] > 127).astype(np.uint8)).convert("P")
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.save(tmp_path / "palette.png", transparency=0)  # black index transparent, as GIF masks often are
    assert load_masks(tmp_path / "palette.png", pic)[0, 0, :, 0].tolist() == lower_half


def test_a_16_bit_mask_is_read_at_its_own_scale_as_pictures_are(tmp_path):
    """Before, PIL clipped 16-bit values to 255, so anything above 128/65535 counted as white: a mask dark at
    20000 (78/255) regenerated the whole picture."""
    pic = load_images(_png(tmp_path / "pic.png", np.zeros((8, 8), np.uint8)), (1, 8, 8))
    deep = np.full((8, 8), 20000, np.uint16)
    deep[4:] = 65535
    Image.fromarray(deep).save(tmp_path / "m16.png")
    shallow = (deep // 257).astype(np.uint8)
    expected = torch.from_numpy(shallow > 127).float()
    assert torch.equal(load_masks(tmp_path / "m16.png", pic)[0, 0], expected)
    assert torch.equal(load_masks(_png(tmp_path / "m8.png", shallow), pic)[0, 0], expected)


def test_a_link_to_nothing_in_a_folder_of_pictures_is_refused_naming_it(tmp_path):
    # Before, it was left out without a word: the edit set held one picture fewer than given.
    _png(tmp_path / "pics" / "a.png", np.zeros((16, 16), np.uint8))
    (tmp_path / "pics" / "b.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(FileNotFoundError, match=r"pics/b.png is a link to nothing \(.*gone.png\)"):
        load_images(tmp_path / "pics", (1, 16, 16))
    (tmp_path / "one.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(FileNotFoundError, match=r"one.png is a link to nothing"):
        load_images(tmp_path / "one.png", (1, 16, 16))


def test_a_folder_of_masks_matches_pictures_by_name_and_follows_a_resize(tmp_path):
    for name in ("a", "b"):
        _png(tmp_path / "pics" / f"{name}.jpg", np.zeros((32, 32, 3), np.uint8))
    _png(tmp_path / "masks" / "a.png", np.pad(np.full((2, 2), 255, np.uint8), (16, 14)))  # 2×2 → 1 pixel
    _png(tmp_path / "masks" / "b.png", np.full((32, 32), 255, np.uint8))
    with pytest.warns(UserWarning, match="resized 2 to 16×16"):
        pics = load_images(tmp_path / "pics", (1, 16, 16))
    masks = load_masks(tmp_path / "masks", pics)
    assert masks.shape == (2, 1, 16, 16)
    assert masks[0].sum() == 1 and masks[1].all()
    # Two masks of one name: before, the last in name order was used without a word.
    _png(tmp_path / "masks" / "b.jpg", np.zeros((32, 32), np.uint8))
    with pytest.raises(
        ValueError, match=r"^masks b.jpg and b.png in .*masks both match b.jpg: keep one of them$"
    ):
        load_masks(tmp_path / "masks", pics)
    (tmp_path / "masks" / "b.png").unlink()
    (tmp_path / "masks" / "b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="no mask for b.jpg"):
        load_masks(tmp_path / "masks", pics)


def test_a_mask_is_resized_and_cropped_like_its_non_square_picture(tmp_path):
    # A 32 wide x 16 high picture for an 8x8 model: resized to 16x8, the centre 8 columns kept (input 8-23).
    pic_path = _png(tmp_path / "wide.png", np.tile(np.arange(32, dtype=np.uint8) * 8, (16, 1)))
    with pytest.warns(UserWarning, match="resized 1 to 8×8"):
        pic = load_images(pic_path, (1, 8, 8))
    columns = ((pic.images[0, 0, 0] + 1) * 127.5).round()
    assert columns[0] > 8 * 8 - 8 and columns[-1] < 24 * 8 + 8  # the centre of the picture, not all of it
    mask = np.zeros((16, 32), np.uint8)
    mask[6:10, 0:4] = 255  # left edge: cropped away with its pixels
    mask[6:10, 16:18] = 255  # centre: input columns 16-17 -> column 8 of 16 -> 4 after the crop; rows 3-4
    m = load_masks(_png(tmp_path / "mask.png", mask), pic)[0, 0]
    assert m.sum() == 2 and m[3:5, 4].all()
    mask[6:10, 16:18] = 0  # white only in the border cropped away: the model would give the picture back
    with pytest.raises(ValueError, match=r"no pixels to generate in the part of .*wide.png the model sees"):
        load_masks(_png(tmp_path / "edge.png", mask), pic)


# -- end to end through sample.py --------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("edit_run")
    train(compose_config("train", [*FAST_TRAIN, "trainer.max_steps=2", "data.image_size=16"], run / "run"))
    return run / "run" / "checkpoints" / "last.ckpt"


def test_inpaint_steps_beyond_the_schedule_are_named_by_their_key(checkpoint, tmp_path):
    _png(tmp_path / "pic.png", np.zeros((16, 16), np.uint8))
    _png(tmp_path / "mask.png", np.full((16, 16), 255, np.uint8))
    out = tmp_path / "out"
    overrides = [f"ckpt={checkpoint}", "mode=inpaint", f"image={tmp_path / 'pic.png'}"]
    overrides += [f"mask={tmp_path / 'mask.png'}", "inpaint.steps=5000", f"out={out}"]
    with pytest.raises(
        ValueError, match=r"^inpaint.steps=5000 must be at most the schedule's 1000 timesteps$"
    ):
        sample(compose_config("sample", overrides, tmp_path))
    assert not out.exists()


def test_inpaint_and_img2img_through_sample_py(checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(2)]
    for i, array in enumerate(pictures):
        _png(tmp_path / "pics" / f"{i}.png", array)
    mask = np.zeros((16, 16), np.uint8)
    mask[5:11, 3:13] = 255
    _png(tmp_path / "mask.png", mask)

    out = tmp_path / "inpaint"
    overrides = [
        f"ckpt={checkpoint}",
        "mode=inpaint",
        f"image={tmp_path / 'pics'}",
        f"mask={tmp_path / 'mask.png'}",
    ]
    overrides += ["n=2", "inpaint.steps=20", "inpaint.jump_length=5", "inpaint.jump_n_sample=2", f"out={out}"]
    sample(compose_config("sample", overrides, tmp_path))
    results = np.load(out / "samples.npz")["images"]
    assert results.shape == (4, 16, 16, 1) and results.dtype == np.uint8
    pngs = sorted((out / "images").glob("*.png"))
    assert len(pngs) == 4
    keep = mask == 0
    for k, png in enumerate(pngs):
        written = np.asarray(Image.open(png))
        np.testing.assert_array_equal(written[keep], pictures[k // 2][keep])
        assert not np.array_equal(written[~keep], pictures[k // 2][~keep])
    # One row per picture: input | masked input | 2 results, 16-pixel tiles with 2-pixel padding,
    # enlarged 3x (nearest) to be visible like the sample grids.
    assert Image.open(out / "grid.png").size == (3 * (2 + 4 * 18), 3 * (2 + 2 * 18))
    settings = json.loads((out / "settings.json").read_text())
    assert settings["mode"] == "inpaint" and settings["nfe"] == 35 and len(settings["inputs"]) == 2

    out = tmp_path / "img2img"
    overrides = [f"ckpt={checkpoint}", "mode=img2img", f"image={tmp_path / 'pics' / '0.png'}", "strength=0.6"]
    overrides += ["n=3", "sampler=ddim", "sampler.steps=10", f"out={out}"]
    sample(compose_config("sample", overrides, tmp_path))
    assert np.load(out / "samples.npz")["images"].shape == (3, 16, 16, 1)
    assert len(list((out / "images").glob("*.png"))) == 3
    assert Image.open(out / "grid.png").size == (3 * (2 + 4 * 18), 3 * (2 + 18))
    settings = json.loads((out / "settings.json").read_text())
    assert settings["start_timestep"] == 500 and settings["nfe"] == 6


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["mode=paint"], "unknown mode 'paint'; choose one of sample, inpaint, img2img"),
        (["mode=inpaint"], "mode=inpaint needs image="),
        (["mode=inpaint", "image=x.png"], "mode=inpaint needs mask="),
        (["mode=img2img"], "mode=img2img needs image="),
        (["mode=img2img", "image=x.png", "strength=1.5"], r"strength must be in \(0, 1\] \(got 1.5\)"),
        (["mode=img2img", "image=x.png", "strength=abc"], r"^strength='abc' is not a number$"),
        # Before, run as strength 1.0 (and recorded so), where guidance=true and sampler.steps=true were refused.
        (["mode=img2img", "image=x.png", "strength=true"], r"^strength=True is not a number$"),
    ],
)
def test_edit_modes_name_what_is_missing_before_loading_anything(tmp_path, overrides, message):
    cfg = compose_config("sample", ["ckpt=missing.ckpt", *overrides], tmp_path)
    with pytest.raises(ValueError, match=message):
        sample(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["image=x.png"],
            r"^image='x.png' given, but mode=sample does not read it: add mode=img2img, mode=inpaint",
        ),
        (
            ["mode=img2img", "image=x.png", "mask=m.png"],
            r"^mask='m.png' given, but mode=img2img does not read it",
        ),
        (
            ["superres.consistency=true"],
            r"^superres.consistency=True given, but mode=sample does not read it",
        ),
    ],
)
def test_inputs_the_mode_does_not_read_are_refused_not_ignored(tmp_path, overrides, message):
    # Before, a picture given without mode= (or a mask to img2img) was ignored: unrelated samples, no word.
    out = tmp_path / "out"
    cfg = compose_config("sample", ["ckpt=missing.ckpt", f"out={out}", *overrides], tmp_path)
    with pytest.raises(ValueError, match=message):
        sample(cfg)
    assert not out.exists()


@pytest.mark.parametrize("mode", ["sample", "inpaint"])
def test_sample_py_refuses_a_strength_typed_outside_img2img_in_one_line(tiny_ckpt, tmp_path, mode):
    # Before, strength=0.3 without mode=img2img was ignored: samples as if it was not given, rc 0.
    out = tmp_path / "out"
    edit = [] if mode == "sample" else [f"image={tmp_path / 'p.png'}", f"mask={tmp_path / 'm.png'}"]
    result = run_cli("sample.py", f"ckpt={tiny_ckpt}", f"mode={mode}", *edit, "strength=0.3", f"out={out}")
    line = one_error_line(result)
    assert line == f"error: strength=0.3 given, but mode={mode} does not read it (only mode=img2img does)"
    assert not out.exists()


def test_sample_py_refuses_inpaint_settings_typed_outside_inpaint_in_one_line(tiny_ckpt, tmp_path):
    # Before, inpaint.steps=100 without mode=inpaint was ignored: samples as if it was not given, rc 0.
    out = tmp_path / "out"
    result = run_cli("sample.py", f"ckpt={tiny_ckpt}", "inpaint.steps=100", f"out={out}")
    line = one_error_line(result)
    assert line == "error: inpaint.steps=100 given, but mode=sample does not read it (only mode=inpaint does)"
    assert not out.exists()


@pytest.mark.parametrize("given", [["sampler=heun"], ["sampler.steps=2"], ["sampler=ddim", "sampler.eta=1"]])
def test_sample_py_refuses_sampler_settings_for_inpaint_in_one_line(tiny_ckpt, tmp_path, given):
    # Before, mode=inpaint ran RePaint's own DDPM steps whatever sampler= said: the same pixels, rc 0, no word.
    out = tmp_path / "out"
    edit = ["mode=inpaint", f"image={tmp_path / 'p.png'}", f"mask={tmp_path / 'm.png'}"]
    line = one_error_line(run_cli("sample.py", f"ckpt={tiny_ckpt}", *edit, *given, f"out={out}"))
    assert line == (
        f"error: {' '.join(given)} given, but mode=inpaint does not read it (RePaint runs DDPM steps of its own: "
        "set inpaint.steps, inpaint.jump_length, inpaint.jump_n_sample)"
    )
    assert not out.exists()


def test_sample_py_refuses_an_image_without_a_mode_in_one_line(tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    result = run_cli("sample.py", f"ckpt={tiny_ckpt}", f"image={tmp_path / 'three.png'}", f"out={out}")
    assert "but mode=sample does not read it" in one_error_line(result)
    assert not out.exists()


def test_a_jump_length_that_leaves_no_room_to_jump_back_is_refused():
    # Before, inpaint.steps=20 inpaint.jump_length=50 ran 20 model calls: RePaint never resampled, without a word.
    with pytest.raises(ValueError, match=r"^inpaint.jump_length=50 is not below inpaint.steps=20: RePaint"):
        repaint_options({"steps": 20, "jump_length": 50, "jump_n_sample": 10}, 1000)
    assert repaint_options({"steps": 20, "jump_length": 50, "jump_n_sample": 1}, 1000)["jump_length"] == 50
    assert repaint_options({"steps": 20, "jump_length": 10, "jump_n_sample": 10}, 1000)["steps"] == 20


@pytest.mark.parametrize("strength", [0.2, 0.5, 0.6, 0.74, 1.0])
def test_strength_runs_diffusers_img2img_steps_where_steps_times_strength_is_whole(strength):
    """diffusers counts steps, int(steps * strength) from the grid's end; difflab keeps the timesteps noised to at
    most the strength. The two agree where steps * strength is a whole number (not at 0.59: 29 steps there)."""
    diffusers = pytest.importorskip("diffusers")
    theirs = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing="leading")
    theirs.set_timesteps(50)
    start = 50 - min(int(50 * strength), 50)  # StableDiffusionImg2ImgPipeline.get_timesteps
    ours = strength_timesteps(DDIMSampler(SCHEDULE, steps=50).timesteps, 1000, strength)
    assert ours.tolist() == theirs.timesteps[start:].tolist()
