"""The DDPM U-Net (Ho et al. 2020) with ADM's zero init and optional class, text or low-res conditioning."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from difflab.models.attention import CrossAttention, SelfAttention
from difflab.models.embeddings import TimeEmbedding
from difflab.models.net_inputs import (
    add_conditions,
    batch_timesteps,
    check_conditioning_arguments,
    check_input,
    low_res_input,
)
from difflab.models.norm import group_norm, zero_
from difflab.models.resample import Downsample, Upsample
from difflab.models.resblock import ResidualBlock
from difflab.models.text_conditioning import TextConditioning


class ResAttnBlock(nn.Module):
    """A residual block, followed by self-attention at the resolutions that use it, and there by
    cross-attention to the text in a text-conditional net."""

    def __init__(
        self, res: ResidualBlock, attn: SelfAttention | None, cross: CrossAttention | None = None
    ) -> None:
        super().__init__()
        self.res = res
        self.attn = attn
        self.cross = cross

    def forward(self, x: Tensor, emb: Tensor, context: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Apply the residual block, then attention if present; `context` is (text states, mask)."""
        h = self.res(x, emb)
        h = self.attn(h) if self.attn is not None else h
        return self.cross(h, *context) if self.cross is not None and context is not None else h


class Level(nn.Module):
    """One resolution of the U-Net: its blocks and the resampling that leaves it (None at the end)."""

    def __init__(self, blocks: list[ResAttnBlock], resample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.resample = resample


class UNet(nn.Module):
    """Noise-prediction U-Net of the DDPM paper: model(x_t, t[, cond]) → a tensor shaped like x_t.

    Conditioning (see difflab.diffusion.conditioning for the keys of `cond`): `num_classes` adds a label
    embedding to the time embedding, with one more row for "no label"; `cond_channels` widens the input so a
    low-resolution image (cond["low_res"]) is concatenated to x_t (SR3). `text_dim` (384 for MiniLM) makes a
    text-to-image net (Imagen/LDM style): the token states (cond["text"], masked by cond["text_mask"]) feed a
    cross-attention after every self-attention, and the pooled embedding (cond["text_pooled"]) is added to
    the time embedding. Where cond["drop"] is set, the label is replaced by "no label" and the text by a
    learned null text, so one net is conditional and unconditional (classifier-free guidance).
    """

    # What FSDP shards one by one and compile=regional compiles once (difflab.models.blocks.repeated_blocks).
    repeated_block_types = (ResAttnBlock,)

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        base_channels: int = 128,
        channel_mults: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        image_size: int = 32,
        dropout: float = 0.1,
        num_heads: int = 1,
        num_groups: int = 32,
        num_classes: int | None = None,
        cond_channels: int = 0,
        text_dim: int | None = None,
        text_heads: int | None = None,
        downsample_padding: int = 1,
    ) -> None:
        super().__init__()
        channel_mults = tuple(channel_mults)
        if not channel_mults:
            raise ValueError("channel_mults must list at least one level")
        if any(m < 1 for m in channel_mults):
            raise ValueError(f"channel_mults must be positive whole numbers (got {list(channel_mults)})")
        if min(base_channels, num_heads, num_groups) < 1:  # else empty layers, or a division by zero later
            raise ValueError(
                "base_channels, num_heads and num_groups must be at least 1 "
                f"(got {base_channels}, {num_heads}, {num_groups})"
            )
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be at least 1 (got {num_res_blocks})")
        check_conditioning_arguments(num_classes, text_dim, cond_channels)
        self.in_channels = in_channels
        self.cond_channels = cond_channels
        self.out_channels = out_channels if out_channels is not None else in_channels
        self.image_size = image_size
        self.channel_mults = channel_mults
        self.num_classes = num_classes
        self.text_dim = text_dim

        self.check_image_size(image_size)
        resolutions = [image_size // 2**i for i in range(len(channel_mults))]
        for r in attention_resolutions:
            if r not in resolutions:
                valid = ", ".join(map(str, resolutions))
                raise ValueError(
                    f"attention resolution {r} is not a resolution of this U-Net at image_size {image_size}: "
                    f"valid are {valid}"
                )
        for c in (base_channels, *(base_channels * m for m in channel_mults)):
            if c % num_groups:
                raise ValueError(
                    f"num_groups {num_groups} does not divide {c} channels "
                    f"(base_channels {base_channels}, channel_mults {list(channel_mults)}): "
                    "every level's width must be a multiple of num_groups"
                )

        embed_dim = 4 * base_channels
        self.time_embed = TimeEmbedding(base_channels, embed_dim)
        # Row num_classes is the "no class" label, so the same net can be run unconditionally (CFG).
        self.class_embed = nn.Embedding(num_classes + 1, embed_dim) if num_classes is not None else None
        # Text states are projected once to the time embedding's width; each cross-attention reads them there.
        self.text_embed = TextConditioning(text_dim, embed_dim, embed_dim) if text_dim is not None else None
        heads = text_heads or num_heads

        def cross(channels: int) -> CrossAttention | None:
            return CrossAttention(channels, embed_dim, heads, num_groups) if text_dim is not None else None

        def res_attn(c_in: int, c_out: int, res: int) -> ResAttnBlock:
            attn = SelfAttention(c_out, num_heads, num_groups) if res in attention_resolutions else None
            block = ResidualBlock(c_in, c_out, embed_dim, dropout, num_groups)
            return ResAttnBlock(block, attn, cross(c_out) if attn is not None else None)

        self.conv_in = nn.Conv2d(in_channels + cond_channels, base_channels, 3, padding=1)

        # Down path. skip_channels records the width of every activation the up path will concatenate.
        skip_channels = [base_channels]
        ch = base_channels
        self.down = nn.ModuleList()
        for i, (mult, res) in enumerate(zip(channel_mults, resolutions, strict=True)):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(res_attn(ch, base_channels * mult, res))
                ch = base_channels * mult
                skip_channels.append(ch)
            is_last = i == len(channel_mults) - 1
            self.down.append(Level(blocks, None if is_last else Downsample(ch, downsample_padding)))
            if not is_last:
                skip_channels.append(ch)

        # Middle: Res–Attn–Res at the lowest resolution; it attends whatever attention_resolutions says.
        self.mid = nn.ModuleList(
            [
                ResAttnBlock(
                    ResidualBlock(ch, ch, embed_dim, dropout, num_groups),
                    SelfAttention(ch, num_heads, num_groups),
                    cross(ch),
                ),
                ResidualBlock(ch, ch, embed_dim, dropout, num_groups),
            ]
        )

        # Up path: one more block per level than going down, so every skip is consumed exactly once.
        self.up = nn.ModuleList()
        for i in reversed(range(len(channel_mults))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                c_out = base_channels * channel_mults[i]
                blocks.append(res_attn(ch + skip_channels.pop(), c_out, resolutions[i]))
                ch = c_out
            self.up.append(Level(blocks, Upsample(ch) if i > 0 else None))

        self.norm_out = group_norm(ch, num_groups)
        # Zero init: an untrained net predicts exactly 0, the mean of the ε it must learn to predict.
        self.conv_out = zero_(nn.Conv2d(ch, self.out_channels, 3, padding=1))

    def check_image_size(self, size: int | tuple[int, int]) -> None:
        """Raise ValueError unless height and width survive the U-Net's halvings without rounding."""
        h, w = (size, size) if isinstance(size, int) else size
        halvings = len(self.channel_mults) - 1
        factor = 2**halvings
        if h <= 0 or w <= 0 or h % factor or w % factor:
            name = h if h == w else f"{h}×{w}"
            times = "time" if halvings == 1 else "times"
            raise ValueError(
                f"image size {name} cannot be divided down by the U-Net: it halves the resolution "
                f"{halvings} {times}, so height and width must be multiples of {factor} (got {h}×{w})"
            )

    def num_parameters(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: Tensor, t: Tensor | float, cond: dict[str, Tensor] | Tensor | None = None) -> Tensor:
        """Predict from x (N, C, H, W), timesteps t ((N,) long or float, or a scalar) and the conditions the
        net was built for (a dict; a bare tensor is taken as class labels)."""
        check_input(x, self.in_channels, "U-Net")
        self.check_image_size((x.shape[2], x.shape[3]))
        cond = {"labels": cond} if isinstance(cond, Tensor) else (cond or {})
        emb = self.time_embed(batch_timesteps(t, x))
        emb, context = add_conditions(
            emb, cond, x, "U-Net", self.class_embed, self.num_classes, self.text_embed
        )
        if self.cond_channels:
            x = torch.cat([x, low_res_input(cond, self.cond_channels, x, "U-Net")], dim=1)

        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for block in level.blocks:
                h = block(h, emb, context)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)

        h = self.mid[0](h, emb, context)
        h = self.mid[1](h, emb)

        for level in self.up:
            for block in level.blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
            if level.resample is not None:
                h = level.resample(h)

        return self.conv_out(nn.functional.silu(self.norm_out(h)))
