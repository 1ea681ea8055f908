"""DiT, the Diffusion Transformer (Peebles & Xie 2023): patchify, adaLN-Zero transformer blocks conditioned on
time (and class, or text as PixArt-α), unpatchify. Same constructor conventions and `model(x, t, cond)` contract
as difflab.models.UNet, so every formulation, sampler and guidance takes either."""

import torch
from torch import Tensor, nn

from difflab.models.dit_block import DiTBlock, FinalLayer
from difflab.models.embeddings import TimeEmbedding
from difflab.models.net_inputs import (
    add_conditions,
    batch_timesteps,
    check_conditioning_arguments,
    check_input,
    low_res_input,
)
from difflab.models.pos_embed import sincos_pos_embed
from difflab.models.text_conditioning import TextConditioning

POS_EMBEDS = ("sincos", "learned")
TIME_FREQUENCIES = 256  # width of the sinusoidal timestep encoding, as DiT's


class DiT(nn.Module):
    """Diffusion Transformer: model(x_t, t[, cond]) → a tensor shaped like x_t (out_channels of it).

    The image (with cond["low_res"] concatenated when `cond_channels` > 0, SR3) is cut into patch_size² patches,
    each a token of width `hidden_size` plus its position embedding (fixed 2-D sin-cos as DiT, or `learned`).
    The conditioning vector c = time embedding (+ class embedding when `num_classes`, with a "no label" row;
    + the pooled text embedding when `text_dim`) scales, shifts and gates every block (adaLN-Zero); a
    text-conditional DiT also cross-attends to the token states (cond["text"], masked by cond["text_mask"]). Where
    cond["drop"] is set, the label becomes "no label" and the text the learned null text (classifier-free
    guidance). One tensor is predicted, not DiT's ε plus learned Σ: difflab's formulations train no variance.
    """

    # What FSDP shards one by one and compile=regional compiles once (difflab.models.blocks.repeated_blocks): one
    # graph serves every block, as they share their shapes.
    repeated_block_types = (DiTBlock,)

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        image_size: int = 32,
        patch_size: int = 2,
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        pos_embed: str = "sincos",
        num_classes: int | None = None,
        cond_channels: int = 0,
        text_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self._check_arguments(image_size, patch_size, hidden_size, depth, num_heads, mlp_ratio, pos_embed)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (got {dropout})")
        check_conditioning_arguments(num_classes, text_dim, cond_channels)
        self.in_channels = in_channels
        self.out_channels = out_channels if out_channels is not None else in_channels
        self.cond_channels = cond_channels
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_classes = num_classes
        self.text_dim = text_dim
        self.pos_embed_kind = pos_embed

        self.patch_embed = nn.Conv2d(in_channels + cond_channels, hidden_size, patch_size, stride=patch_size)
        grid = image_size // patch_size
        table = sincos_pos_embed(hidden_size, grid, grid)[None]
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(table)  # starts from the sin-cos values, then trains
        else:
            self.register_buffer(
                "pos_embed", table, persistent=False
            )  # a function of the shape: never stored
        self.time_embed = TimeEmbedding(TIME_FREQUENCIES, hidden_size)
        # Row num_classes is the "no class" label, so the same net can be run unconditionally (CFG).
        self.class_embed = nn.Embedding(num_classes + 1, hidden_size) if num_classes is not None else None
        self.text_embed = (
            TextConditioning(text_dim, hidden_size, hidden_size) if text_dim is not None else None
        )
        cross = text_dim is not None
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio, cross, dropout) for _ in range(depth)
        )
        self.final = FinalLayer(hidden_size, patch_size * patch_size * self.out_channels)
        self._init_weights()

    @staticmethod
    def _check_arguments(
        image_size: int,
        patch_size: int,
        hidden_size: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        pos_embed: str,
    ) -> None:
        """One-line ValueErrors for a shape the transformer cannot take."""
        if patch_size < 1 or depth < 1 or num_heads < 1:
            raise ValueError(
                f"patch_size, depth and num_heads must be at least 1 (got {patch_size}, {depth}, {num_heads})"
            )
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be at least 1 (got {hidden_size})")
        if int(hidden_size * mlp_ratio) < 1:  # DiTBlock's MLP width; 0 would train blocks without an MLP
            raise ValueError(
                f"mlp_ratio {mlp_ratio:g} leaves each block's MLP {int(hidden_size * mlp_ratio)} wide "
                f"(hidden_size {hidden_size} × mlp_ratio): it must be at least 1"
            )
        if image_size % patch_size:
            raise ValueError(
                f"patch_size {patch_size} does not divide image_size {image_size}: DiT cuts the image into "
                f"{patch_size}×{patch_size} patches"
            )
        if hidden_size % num_heads:
            raise ValueError(
                f"num_heads {num_heads} does not divide hidden_size {hidden_size}: every head takes an equal share"
            )
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed={pos_embed} is not one of {', '.join(POS_EMBEDS)}")
        if hidden_size % 4:
            raise ValueError(
                f"hidden_size {hidden_size} is not a multiple of 4: the 2-D sin-cos position embedding "
                "splits it in four"
            )

    def _init_weights(self) -> None:
        """DiT's initialisation: Xavier-uniform Linears (and patch embedding) with zero bias, N(0, 0.02) class and
        time embeddings; the zero-initialised modulations and output are left at zero (adaLN-Zero)."""
        zeroed = {id(p) for block in self.blocks for p in block.modulation.parameters()}
        zeroed |= {id(p) for p in self.final.parameters()}
        zeroed |= {
            id(p) for block in self.blocks if block.cross is not None for p in block.cross.proj.parameters()
        }
        for module in self.modules():
            if isinstance(module, nn.Linear) and id(module.weight) not in zeroed:
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        weight = self.patch_embed.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        for layer in (self.time_embed.mlp[0], self.time_embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)

    def check_image_size(self, size: int | tuple[int, int]) -> None:
        """Raise ValueError unless height and width are whole numbers of patches (and, for a learned position
        embedding, the size it was built for)."""
        h, w = (size, size) if isinstance(size, int) else size
        p = self.patch_size
        if h <= 0 or w <= 0 or h % p or w % p:
            name = h if h == w else f"{h}×{w}"
            raise ValueError(
                f"image size {name} cannot be cut into patches: DiT's patch_size {p} must divide height and "
                f"width (got {h}×{w})"
            )
        if self.pos_embed_kind == "learned" and (h, w) != (self.image_size, self.image_size):
            raise ValueError(
                f"a learned position embedding takes only image_size {self.image_size} (got {h}×{w}); "
                "use pos_embed=sincos for other sizes"
            )

    def num_parameters(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: Tensor, t: Tensor | float, cond: dict[str, Tensor] | Tensor | None = None) -> Tensor:
        """Predict from x (N, C, H, W), timesteps t ((N,) long or float, or a scalar) and the conditions the
        net was built for (a dict; a bare tensor is taken as class labels)."""
        check_input(x, self.in_channels, "DiT")
        n, _, h, w = x.shape
        self.check_image_size((h, w))
        cond = {"labels": cond} if isinstance(cond, Tensor) else (cond or {})
        c = self.time_embed(batch_timesteps(t, x))
        c, context = add_conditions(c, cond, x, "DiT", self.class_embed, self.num_classes, self.text_embed)
        if self.cond_channels:
            x = torch.cat([x, low_res_input(cond, self.cond_channels, x, "DiT")], dim=1)

        p = self.patch_size
        rows, cols = h // p, w // p
        # Contiguous (N, L, D): the convolution's (N, D, L) layout seen transposed would otherwise be kept by every
        # residual addcmul, so each LayerNorm (forward and backward) would copy its input first.
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2).contiguous() + self._pos_embed(rows, cols, x)
        silu_c = nn.functional.silu(c)
        for block in self.blocks:
            tokens = block(tokens, silu_c, context)
        patches = self.final(tokens, silu_c)  # (N, rows·cols, p·p·C), each patch's values in (p, p, C) order
        out = patches.view(n, rows, cols, p, p, self.out_channels).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(n, self.out_channels, h, w)

    def _pos_embed(self, rows: int, cols: int, x: Tensor) -> Tensor:
        """The position embedding of a rows×cols grid: the stored one at the built size, else computed."""
        grid = self.image_size // self.patch_size
        if (rows, cols) == (grid, grid):
            return self.pos_embed.to(x.dtype)
        return sincos_pos_embed(self.hidden_size, rows, cols)[None].to(x.device, x.dtype)
