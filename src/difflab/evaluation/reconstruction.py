"""Score an autoencoder's reconstructions of a held-out split: PSNR and SSIM against each input, and the
reconstruction FD (rFD) of the reconstructions' features against the split's own statistics."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..io.write_images import to_uint8
from ..metrics import Evaluator
from ..metrics.statistics import Stats
from ..progress import Progress


def ssim(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """SSIM per image of [-1, 1] images (Gaussian window 11, σ 1.5, on [0, 1]: Wang et al. 2004's settings)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    to_unit = lambda x: (x.clamp(-1, 1) + 1) / 2  # noqa: E731
    return structural_similarity_index_measure(
        to_unit(images), to_unit(reference), data_range=1.0, reduction="none"
    )


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of [-1, 1] images, on [0, 1] (peak 1); images clamped to [-1, 1] first."""
    mse = ((images.clamp(-1, 1) - reference) / 2).pow(2).flatten(1).mean(dim=1)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


@torch.no_grad()
def reconstruction_scores(
    net: nn.Module,
    batches: Iterable[torch.Tensor],
    n: int,
    evaluator: Evaluator,
    reference: Stats,
    device: torch.device,
) -> dict[str, float]:
    """{psnr, ssim, r<fd key>} of `net`'s reconstructions (decoded posterior means) of the n images in `batches`
    ([-1, 1] floats), the rFD against `reference`, the statistics of those same images."""
    acc, psnrs, ssims = evaluator.accumulator(), [], []
    with Progress("reconstructing and embedding", n, "images") as progress:
        for batch in batches:
            images = batch.to(device)
            recon = net.decode(net.encode(images).mean).float().clamp(-1, 1)
            psnrs.append(psnr(recon, images).cpu())
            ssims.append(ssim(recon, images).cpu())
            acc.update(evaluator.embed(to_uint8(recon), device)[0])
            progress.advance(len(batch))
    fd = evaluator.scores(acc.result(), reference)[evaluator.fd_key]
    return {
        "psnr": float(torch.cat(psnrs).mean()),
        "ssim": float(torch.cat(ssims).mean()),
        f"r{evaluator.fd_key}": float(fd),
    }
