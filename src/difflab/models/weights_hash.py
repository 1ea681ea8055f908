"""A network named by its weights: the same weights give the same hash wherever they were loaded from (what a
latent cache or checkpoint records of its autoencoder, what an unfinished sample set records of its model)."""

from __future__ import annotations

import hashlib

import torch


def weights_hash(net: torch.nn.Module) -> str:
    """sha256 of the names, shapes, dtypes and bytes of `net`'s state, first 16 hex digits: the same weights give
    the same hash wherever they were loaded from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        flat = value.reshape(-1)  # a size-1 last dim may keep a stride other than 1, which view() refuses
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:16]
