"""The Diffusion Transformer: shapes, the paper's parameter counts, adaLN-Zero, class/text/low-res conditioning,
guidance's drop, one-line errors, the same function as diffusers' DiTTransformer2DModel, and training then
sampling from a checkpoint under every formulation."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLI_FAST, FAST_TRAIN, compose_config, one_error_line, run_cli
from hydra.utils import instantiate
from omegaconf import OmegaConf

import difflab
from difflab.diffusion.guidance import Guided
from difflab.model_folder.dit_mapping import diffusers_dit, dit_arguments
from difflab.models import DiT
from difflab.run.sample import sample
from difflab.run.train import train

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
TINY = dict(hidden_size=32, depth=2, num_heads=4)
TEXT_DIM = 12


def perturbed(net: DiT, seed: int = 0) -> DiT:
    """Give every all-zero parameter small random values, as training soon does: with adaLN-Zero, nothing but
    zero reaches the output until the gates move."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return net.eval()


def text_cond(seed: int, n: int = 2, length: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[:, 3:] = False
    return {
        "text": torch.randn(n, length, TEXT_DIM, generator=g),
        "text_mask": mask,
        "text_pooled": torch.randn(n, TEXT_DIM, generator=g),
    }


SHAPES = {
    "gray8-patch2": (dict(in_channels=1, image_size=8, patch_size=2), (2, 1, 8, 8)),
    "rgb16-patch4": (dict(in_channels=3, image_size=16, patch_size=4), (2, 3, 16, 16)),
    # sin-cos positions are a function of the grid: a net built for 8x8 also runs on other multiples of the patch
    "nonsquare": (dict(in_channels=1, image_size=8, patch_size=2), (1, 1, 12, 4)),
    "learned-positions": (dict(in_channels=1, image_size=8, patch_size=2, pos_embed="learned"), (2, 1, 8, 8)),
    "out-channels-differ": (dict(in_channels=3, out_channels=6, image_size=8), (2, 3, 8, 8)),
}


@pytest.mark.parametrize(("kwargs", "shape"), SHAPES.values(), ids=SHAPES.keys())
def test_output_has_the_input_shape_with_out_channels(kwargs, shape):
    net = perturbed(DiT(**TINY, **kwargs))
    out = net(torch.randn(shape), torch.randint(0, 1000, (shape[0],)))
    assert out.shape == (shape[0], net.out_channels, *shape[2:])
    assert torch.isfinite(out).all() and out.abs().mean() > 0


def test_unpatchify_puts_every_patch_back_where_it_came_from():
    """With identity-like layers out of the way, output patch (i, j) holds what the final Linear made of token
    (i, j): zeroing one token's output changes exactly its p×p pixels."""
    net = perturbed(DiT(in_channels=1, image_size=8, patch_size=2, **TINY))
    x, t = torch.randn(1, 1, 8, 8), torch.tensor([3])
    full = net(x, t)
    tokens_before = net.final.linear.register_forward_hook(
        lambda m, i, o: o.index_fill(1, torch.tensor([5]), 0.0)
    )
    patched = net(x, t)
    tokens_before.remove()
    changed = (full != patched)[0, 0]
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:4, 2:4] = True  # token 5 of a 4×4 grid is row 1, column 1
    assert torch.equal(changed, expected)


@pytest.mark.parametrize(("name", "size", "paper"), [("s2", "S", 33e6), ("s4", "S", 33e6), ("s8", "S", 33e6), ("b2", "B", 130e6), ("b4", "B", 130e6), ("l2", "L", 458e6), ("xl2", "XL", 675e6), ("xl4", "XL", 675e6)])  # fmt: skip
def test_configs_have_the_papers_parameter_counts(name, size, paper):
    """DiT-<size> at the paper's input (32x32x4 latents, 1,000 classes), built on the meta device (no memory)."""
    cfg = OmegaConf.create({"data": {"channels": 4, "image_size": 32}})
    cfg.model = OmegaConf.load(CONF / f"dit_{name}.yaml")
    cfg.model.num_classes = 1000
    with torch.device("meta"):
        count = instantiate(cfg.model).num_parameters()
    assert count == pytest.approx(paper, rel=0.01)
    assert (
        f"{count / 1e6:.2f}M" in (CONF / f"dit_{name}.yaml").read_text()
    )  # the comment states the measured count


def test_dit_tiny_config_builds_on_the_digits():
    cfg = OmegaConf.create({"data": {"channels": 1, "image_size": 8}})
    cfg.model = OmegaConf.load(CONF / "dit_tiny.yaml")
    net = instantiate(cfg.model)
    assert f"{net.num_parameters() // 1000}k" in (CONF / "dit_tiny.yaml").read_text()
    assert net(torch.randn(2, 1, 8, 8), 5).shape == (2, 1, 8, 8)


def test_untrained_net_predicts_exactly_zero_and_blocks_are_the_identity():
    net = DiT(in_channels=3, image_size=8, num_classes=4, **TINY)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(net(x, torch.tensor([0, 999]), torch.tensor([1, 2])), torch.zeros_like(x))
    tokens, c = torch.randn(2, 16, 32), torch.randn(2, 32)
    assert torch.equal(net.blocks[0](tokens, c), tokens)


def test_output_depends_on_timestep_class_and_position():
    net = perturbed(DiT(in_channels=1, image_size=8, num_classes=4, **TINY))
    x = torch.randn(1, 1, 8, 8)
    base = net(x, 10, torch.tensor([0]))
    assert not torch.allclose(base, net(x, 900, torch.tensor([0])), atol=1e-4)
    assert not torch.allclose(base, net(x, 10, torch.tensor([3])), atol=1e-4)
    flat = torch.zeros(1, 1, 8, 8)  # every patch the same: only the position embedding tells them apart
    out = net(flat, 10, torch.tensor([0]))
    assert not torch.allclose(out[..., :2, :2], out[..., 2:4, 2:4], atol=1e-4)


def test_drop_gives_the_no_label_row_and_guidance_is_one_batched_mix():
    net = perturbed(DiT(in_channels=1, image_size=8, num_classes=4, **TINY))
    x, t, labels = torch.randn(3, 1, 8, 8), torch.tensor([5, 50, 500]), torch.tensor([0, 1, 3])
    with torch.no_grad():
        dropped = net(x, t, {"labels": labels, "drop": torch.tensor([True, False, True])})
        unconditional, conditional = net(x, t), net(x, t, labels)
        assert torch.equal(dropped[[0, 2]], unconditional[[0, 2]]) and torch.equal(dropped[1], conditional[1])
        assert torch.equal(net(x, t, torch.full((3,), 4)), unconditional)  # row 4 is "no label"
        guided = Guided(net, {"labels": labels}, 3.0)(x, t)
    torch.testing.assert_close(guided, unconditional + 3.0 * (conditional - unconditional))


def test_text_conditioning_cross_attends_honours_the_mask_and_drops_to_the_null_text():
    torch.manual_seed(0)
    net = perturbed(DiT(in_channels=1, image_size=8, text_dim=TEXT_DIM, **TINY))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 500])
    a, b = text_cond(0), text_cond(1)
    out_a = net(x, t, a)
    assert not torch.allclose(out_a, net(x, t, b), atol=1e-4)
    assert not torch.allclose(
        out_a, net(x, t, {**a, "text": b["text"]}), atol=1e-4
    )  # tokens, not only pooled
    padded = {**a, "text": a["text"].clone()}
    padded["text"][:, 3:] = 100.0
    torch.testing.assert_close(out_a, net(x, t, padded))  # masked tokens are never read
    drop = torch.tensor([True, False])
    out = net(x, t, {**b, "drop": drop})
    torch.testing.assert_close(out[0], net(x, t)[0])  # no text at all is the null text
    torch.testing.assert_close(out[1], net(x, t, b)[1])
    assert sum(1 for name, _ in net.named_modules() if name.endswith(".cross")) == 2


def test_super_resolution_concatenates_the_low_res_image():
    net = perturbed(DiT(in_channels=1, image_size=8, cond_channels=1, **TINY))
    x = torch.randn(2, 1, 8, 8)
    low = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(net(x, 5, {"low_res": low}), net(x, 5, {"low_res": -low}), atol=1e-4)
    assert net.patch_embed.in_channels == 2
    with pytest.raises(
        ValueError, match=r"this DiT concatenates a low-resolution image of shape \(2, 1, 8, 8\)"
    ):
        net(x, 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(image_size=30, patch_size=4), "patch_size 4 does not divide image_size 30"),
        (dict(hidden_size=64, num_heads=5), "num_heads 5 does not divide hidden_size 64"),
        (dict(hidden_size=30, num_heads=5), "hidden_size 30 is not a multiple of 4"),
        (dict(pos_embed="rope"), "pos_embed=rope is not one of sincos, learned"),
        (dict(num_classes=0), "num_classes must be a positive number"),
        (dict(depth=0), "patch_size, depth and num_heads must be at least 1"),
        (dict(mlp_ratio=0), "mlp_ratio 0 leaves each block's MLP 0 wide"),
        (
            dict(mlp_ratio=0.01),
            r"mlp_ratio 0.01 leaves each block's MLP 0 wide \(hidden_size 32 × mlp_ratio\)",
        ),
        (dict(hidden_size=0), "hidden_size must be at least 1"),
    ],
)
def test_a_shape_that_cannot_work_is_one_line_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        DiT(**{**dict(in_channels=1, image_size=8, **TINY), **kwargs})
    assert "\n" not in str(error.value)


def test_bad_inputs_are_named_in_forward():
    net = DiT(in_channels=1, image_size=8, **TINY)
    with pytest.raises(ValueError, match="image size 7 cannot be cut into patches"):
        net(torch.randn(1, 1, 7, 7), 1)
    with pytest.raises(ValueError, match=r"expects input \(N, 1, H, W\)"):
        net(torch.randn(1, 3, 8, 8), 1)
    with pytest.raises(ValueError, match="num_classes=None"):
        net(torch.randn(1, 1, 8, 8), 1, torch.tensor([0]))
    learned = DiT(in_channels=1, image_size=8, pos_embed="learned", **TINY)
    with pytest.raises(ValueError, match="a learned position embedding takes only image_size 8"):
        learned(torch.randn(1, 1, 16, 16), 1)


def test_dropout_drops_in_training_only_and_keeps_the_weights_layout():
    # Before, a DiT took no dropout: hparams_search=ddpm_optuna (which searches model.dropout) aborted on a DiT.
    kwargs = dict(in_channels=1, image_size=8, patch_size=2, **TINY)
    net = perturbed(DiT(**kwargs, dropout=0.5))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.equal(net(x, t), net(x, t))  # eval: no dropout
        net.train()
        assert not torch.equal(net(x, t), net(x, t))
    assert net.state_dict().keys() == DiT(**kwargs).state_dict().keys()  # checkpoints and exports unchanged
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\) \(got 1.0\)"):
        DiT(**kwargs, dropout=1.0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.patch_size=3", "error: patch_size 3 does not divide image_size 8"),
        ("model.num_heads=3", "error: num_heads 3 does not divide hidden_size 64"),
        ("model.mlp_ratio=0", "error: mlp_ratio 0 leaves each block's MLP 0 wide"),
    ],
)
def test_train_py_refuses_a_dit_that_cannot_work_in_one_line_and_writes_nothing(tmp_path, override, message):
    run = tmp_path / "run"
    result = run_cli("train.py", *CLI_FAST, "model=dit_tiny", override, f"hydra.run.dir={run}")
    assert one_error_line(result).startswith(message)
    assert not run.exists()


def test_preflights_preparation_refuses_the_shape_before_hydra_writes_anything(tmp_path):
    """prepare() is what preflight runs before Hydra makes the run folder: the net is built there (on the meta
    device), so a shape it cannot take never gets as far as a folder."""
    from hydra.errors import InstantiationException

    from difflab.run.prepare import prepare

    run = tmp_path / "run"
    cfg = compose_config("train", [*FAST_TRAIN, "model=dit_tiny", "model.num_heads=3"], run)
    with pytest.raises(InstantiationException, match="num_heads 3 does not divide hidden_size 64"):
        prepare(cfg, run)
    assert not run.exists()


@pytest.mark.parametrize("num_classes", [10, None], ids=["class-conditional", "unconditional"])
def test_same_function_as_diffusers_dit_with_mapped_weights(num_classes):
    pytest.importorskip("diffusers")
    config = dict(_target_="difflab.models.DiT", in_channels=4, image_size=8, patch_size=2, num_classes=num_classes, **TINY)  # fmt: skip
    torch.manual_seed(0)
    net = DiT(**{k: v for k, v in config.items() if k != "_target_"})
    with (
        torch.no_grad()
    ):  # every weight random, the zero-initialised ones included, so every path is compared
        for p in net.parameters():
            p.copy_(0.1 * torch.randn(p.shape))
    net.eval()
    theirs = diffusers_dit(net.state_dict(), dit_arguments(config))
    x, t = torch.randn(3, 4, 8, 8), torch.tensor([0, 421, 999])
    labels = torch.tensor([0, 7, 10]) if num_classes else torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        ours = net(x, t, labels if num_classes else None)
        reference = theirs(x, t, class_labels=labels).sample
    assert ours.abs().mean() > 0.1
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("formulation", ["vp", "edm", "flow"])
def test_train_then_sample_py_and_difflab_load(tmp_path, formulation):
    run = tmp_path / "run"
    overrides = [*FAST_TRAIN, "model=dit_tiny", f"formulation={formulation}", "trainer.max_steps=2"]
    metrics = train(compose_config("train", overrides, run))
    assert np.isfinite(metrics["train/loss"])
    ckpt = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "samples"
    sample(compose_config("sample", [f"ckpt={ckpt}", "n=3", "sampler.steps=3", f"out={out}"], tmp_path))
    from_cli = np.load(out / "samples.npz")["images"]
    pipe = difflab.load(ckpt)
    assert any(isinstance(m, DiT) for m in pipe.net.modules())  # EDM and flow wrap it in an epsilon face
    from_api = pipe.sample(3, steps=3, seed=0)
    assert from_cli.shape == from_api.shape == (3, 8, 8, 1)
    np.testing.assert_array_equal(from_cli, from_api)  # one generation path: the same images


def test_class_conditional_dit_trains_and_samples_with_guidance(tmp_path):
    run = tmp_path / "run"
    train(
        compose_config(
            "train", [*FAST_TRAIN, "model=dit_tiny", "model.num_classes=10", "trainer.max_steps=2"], run
        )
    )
    pipe = difflab.load(run / "checkpoints" / "last.ckpt")
    assert pipe.net.num_classes == 10
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([100, 100])
    with torch.no_grad():  # two steps moved the zero-initialised gates: the labels reach the output
        assert not torch.equal(pipe.net(x, t, torch.tensor([1, 2])), pipe.net(x, t))
    images = pipe.sample(4, steps=3, seed=0, labels=[1, 2], guidance=3.0)
    assert images.shape == (4, 8, 8, 1)


def test_img2img_and_inpaint_edit_with_a_dit(tmp_path):
    """Editing wraps the denoiser, never the network: RePaint keeps the known pixels of a DiT's result exactly."""
    from PIL import Image

    run = tmp_path / "run"
    train(compose_config("train", [*FAST_TRAIN, "model=dit_tiny", "trainer.max_steps=2"], run))
    ckpt = run / "checkpoints" / "last.ckpt"
    picture = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "pic.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[4:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    edits = {
        "i2i": ["mode=img2img", "strength=0.5"],
        "inp": [
            "mode=inpaint",
            f"mask={tmp_path / 'mask.png'}",
            "inpaint.steps=4",
            "inpaint.jump_n_sample=1",
        ],
    }
    for name, overrides in edits.items():
        out = tmp_path / name
        common = [f"ckpt={ckpt}", f"image={tmp_path / 'pic.png'}", "n=2", "sampler.steps=3", f"out={out}"]
        sample(compose_config("sample", [*common, *overrides], tmp_path))
        assert np.load(out / "samples.npz")["images"].shape == (2, 8, 8, 1)
    inpainted = np.load(tmp_path / "inp" / "samples.npz")["images"][..., 0]
    np.testing.assert_array_equal(inpainted[:, :4], np.broadcast_to(picture[:4], (2, 4, 8)))


def test_the_dit_blocks_are_what_fsdp_shards_and_regional_compile_compiles():
    from difflab.models.blocks import repeated_blocks

    net = DiT(in_channels=1, image_size=8, patch_size=2, hidden_size=32, depth=3, num_heads=2)
    assert repeated_blocks(net) == list(net.blocks)
