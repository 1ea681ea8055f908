"""The U-Net denoiser: shapes, the DDPM parameter count, zero init, conditioning, errors and learning."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from difflab.models import SelfAttention, UNet, timestep_embedding

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"

TINY = dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, dropout=0.0, num_groups=8)


def model_config(name: str, channels: int, image_size: int) -> DictConfig:
    """conf/model/<name>.yaml with its ${data.*} interpolations resolved for a dataset of the given shape."""
    cfg = OmegaConf.create({"data": {"channels": channels, "image_size": image_size}})
    cfg.model = OmegaConf.load(CONF / f"{name}.yaml")
    return cfg.model


def build(name: str, channels: int, image_size: int) -> UNet:
    """Instantiate conf/model/<name>.yaml as Hydra would."""
    return instantiate(model_config(name, channels, image_size))


def perturb_zero_init(model: UNet, seed: int = 0) -> UNet:
    """Give every all-zero parameter small random values, as training soon does.

    Perturbing conv_out alone is not enough to see t: each residual block's last conv is zero too, so until
    those move, the time embedding never reaches the output.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


SHAPE_CASES = {
    "gray16": (dict(in_channels=1, image_size=16, attention_resolutions=(), **TINY), (2, 1, 16, 16)),
    "rgb16-attn": (dict(in_channels=3, image_size=16, attention_resolutions=(8,), **TINY), (2, 3, 16, 16)),
    "gray32-attn-at-two-levels": (
        dict(TINY, in_channels=1, image_size=32, channel_mults=(1, 2, 2), attention_resolutions=(16, 8)),
        (2, 1, 32, 32),
    ),
    "rgb32-ddpm-layout-2heads": (
        dict(TINY, in_channels=3, image_size=32, channel_mults=(1, 2, 2, 2), num_res_blocks=2, num_heads=2),
        (2, 3, 32, 32),
    ),
    # The net is convolutional: a 16x16-configured net also runs on other valid sizes, non-square too.
    "nonsquare": (dict(in_channels=1, image_size=16, attention_resolutions=(), **TINY), (1, 1, 24, 8)),
    "class-conditional": (
        dict(in_channels=1, image_size=16, attention_resolutions=(8,), num_classes=10, **TINY),
        (2, 1, 16, 16),
    ),
    "dropout-in-train-mode": (
        dict(TINY, in_channels=3, image_size=16, attention_resolutions=(8,), dropout=0.3),
        (2, 3, 16, 16),
    ),
}


@pytest.mark.parametrize(("kwargs", "shape"), SHAPE_CASES.values(), ids=SHAPE_CASES.keys())
def test_output_has_input_shape(kwargs: dict, shape: tuple[int, ...]) -> None:
    model = perturb_zero_init(UNet(**kwargs))
    x = torch.randn(shape)
    out = model(x, torch.randint(0, 1000, (shape[0],)))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_mnist_28_padded_to_32() -> None:
    model = build("unet_small", channels=1, image_size=32)
    x = torch.nn.functional.pad(torch.randn(2, 1, 28, 28), (2, 2, 2, 2), value=-1.0)
    assert model(x, torch.tensor([0, 999])).shape == (2, 1, 32, 32)


def test_out_channels_can_differ() -> None:
    model = UNet(in_channels=3, out_channels=6, image_size=16, attention_resolutions=(), **TINY)
    assert model(torch.randn(2, 3, 16, 16), 10).shape == (2, 6, 16, 16)


def test_ddpm_cifar10_parameter_count() -> None:
    model = build("unet_ddpm_cifar10", channels=3, image_size=32)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 35.7e6) < 0.05e6
    # Exactly the count of the DDPM reference implementation (pesser/pytorch_diffusion).
    assert count == model.num_parameters() == 35_746_307


@pytest.mark.parametrize(
    ("name", "channels", "size"), [("unet_tiny", 1, 16), ("unet_small", 1, 16), ("unet_small", 3, 32)]
)
def test_configs_instantiate_and_run(name: str, channels: int, size: int) -> None:
    model = build(name, channels, size)
    x = torch.randn(2, channels, size, size)
    assert model(x, torch.tensor([1, 500])).shape == x.shape


def test_untrained_net_predicts_exactly_zero() -> None:
    torch.manual_seed(0)
    model = UNet(in_channels=3, image_size=16, attention_resolutions=(8,), num_classes=5, **TINY)
    out = model(torch.randn(4, 3, 16, 16), torch.tensor([0, 10, 100, 999]), torch.tensor([0, 1, 4, 5]))
    assert torch.equal(out, torch.zeros_like(out))


def test_output_depends_on_timestep_and_class() -> None:
    torch.manual_seed(0)
    model = perturb_zero_init(
        UNet(in_channels=1, image_size=16, attention_resolutions=(8,), num_classes=3, **TINY)
    )
    x = torch.randn(1, 1, 16, 16).expand(2, -1, -1, -1)
    out_t = model(x, torch.tensor([0, 500]), torch.tensor([1, 1]))
    assert (out_t[0] - out_t[1]).abs().max() > 1e-4
    out_y = model(x, torch.tensor([7, 7]), torch.tensor([0, 2]))
    assert (out_y[0] - out_y[1]).abs().max() > 1e-4
    # No labels means the null label (index num_classes), as classifier-free guidance expects.
    assert torch.equal(model(x, 7), model(x, 7, torch.tensor([3, 3])))


def test_timestep_long_float_and_scalar_agree() -> None:
    torch.manual_seed(0)
    model = perturb_zero_init(UNet(in_channels=1, image_size=16, attention_resolutions=(), **TINY))
    x = torch.randn(3, 1, 16, 16)
    ref = model(x, torch.full((3,), 42, dtype=torch.long))
    for t in (torch.full((3,), 42.0), 42, 42.0, torch.tensor(42), torch.tensor([42])):
        torch.testing.assert_close(model(x, t), ref)
    # Fractional timesteps (continuous-time samplers) are accepted and change the output.
    assert not torch.allclose(model(x, 42.5), ref)


def test_timestep_embedding_is_sin_then_cos() -> None:
    emb = timestep_embedding(torch.tensor([0, 3]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert emb[1, 0] == pytest.approx(torch.sin(torch.tensor(3.0)).item())  # first frequency is 1
    assert emb[1, 3] == pytest.approx(torch.sin(torch.tensor(3e-4)).item(), rel=1e-4)  # last is 1/10000


def test_bad_image_size_is_rejected_in_init_and_forward() -> None:
    with pytest.raises(ValueError, match=r"image size 30 .*3 times.*multiples of 8 \(got 30×30\)"):
        UNet(image_size=30, base_channels=32)
    model = UNet(in_channels=1, image_size=16, attention_resolutions=(), **TINY)
    with pytest.raises(ValueError, match=r"image size 15×16 .*multiples of 2 \(got 15×16\)"):
        model(torch.randn(1, 1, 15, 16), 0)
    with pytest.raises(ValueError, match=r"multiples of 8 \(got 28×28\)"):
        UNet(image_size=32, base_channels=32).check_image_size(28)


def test_bad_channels_are_rejected() -> None:
    model = UNet(in_channels=1, image_size=16, attention_resolutions=(), **TINY)
    with pytest.raises(ValueError, match=r"in_channels=1 \(got shape \(2, 3, 16, 16\)\)"):
        model(torch.randn(2, 3, 16, 16), 0)
    with pytest.raises(ValueError, match=r"num_groups 32 does not divide 48 channels"):
        UNet(base_channels=48)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            dict(base_channels=0),
            r"base_channels, num_heads and num_groups must be at least 1 \(got 0, 1, 8\)",
        ),
        (dict(num_heads=0), r"base_channels, num_heads and num_groups must be at least 1 \(got 32, 0, 8\)"),
        (dict(num_groups=0), r"base_channels, num_heads and num_groups must be at least 1 \(got 32, 1, 0\)"),
        (dict(channel_mults=(1, 0)), r"channel_mults must be positive whole numbers \(got \[1, 0\]\)"),
    ],
)
def test_a_width_of_zero_is_one_line_at_construction(kwargs, message) -> None:
    # Before: base_channels=0 or a 0 multiplier built a net with empty layers; 0 heads or groups divided by 0.
    with pytest.raises(ValueError, match=message) as error:
        UNet(**{**dict(in_channels=1, image_size=8, base_channels=32, num_groups=8), **kwargs})
    assert "\n" not in str(error.value)


def test_bad_attention_resolution_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"attention resolution 12 .*image_size 32: valid are 32, 16, 8, 4"):
        UNet(base_channels=32, attention_resolutions=(12,))
    # 28x28 MNIST has no 8x8 level: the error says so instead of silently skipping attention.
    kwargs = OmegaConf.to_container(model_config("unet_small", channels=1, image_size=28), resolve=True)
    del kwargs["_target_"]
    with pytest.raises(ValueError, match=r"attention resolution 8 .*image_size 28: valid are 28, 14, 7"):
        UNet(**kwargs)


def test_bad_timesteps_and_labels_are_rejected() -> None:
    model = UNet(in_channels=1, image_size=16, attention_resolutions=(), **TINY)
    with pytest.raises(ValueError, match=r"shape \(2,\) \(got \(3,\)\)"):
        model(torch.randn(2, 1, 16, 16), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="num_classes=None"):
        model(torch.randn(2, 1, 16, 16), 0, torch.tensor([0, 1]))


def test_adam_steps_reduce_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = UNet(in_channels=1, image_size=8, attention_resolutions=(4,), **TINY)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, t, target = torch.randn(4, 1, 8, 8), torch.randint(0, 1000, (4,)), torch.randn(4, 1, 8, 8)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(model(x, t), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # The zero-initialised output starts at loss = mean(target²) ≈ 1; gradients must reach every layer to fit.
    assert losses[-1] < 0.7 * losses[0]
    assert all(p.grad is not None for p in model.parameters())
    # Training moved the zero-initialised layers, so the prediction now depends on the timestep.
    with torch.no_grad():
        assert not torch.allclose(model(x[:1], 10), model(x[:1], 900))


def test_attention_matches_explicit_softmax_per_head() -> None:
    torch.manual_seed(0)
    attn = perturb_zero_init(SelfAttention(8, num_heads=2, num_groups=4))
    x = torch.randn(2, 8, 3, 5)
    q, k, v = attn.qkv(attn.norm(x)).flatten(2).chunk(3, dim=1)  # each (N, C, HW)
    heads = []
    for h in range(2):  # head h owns channels 4h..4h+3 of q, k and v
        qh, kh, vh = (z[:, 4 * h : 4 * h + 4] for z in (q, k, v))
        w = torch.softmax(qh.transpose(1, 2) @ kh / 2.0, dim=-1)  # (N, HW, HW), scaled by 1/sqrt(4)
        heads.append(vh @ w.transpose(1, 2))  # (N, 4, HW)
    expected = x + attn.proj(torch.cat(heads, dim=1).reshape(2, 8, 3, 5))
    torch.testing.assert_close(attn(x), expected)
