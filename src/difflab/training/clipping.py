"""Gradient clipping under bf16-mixed with a fused optimizer, for every LightningModule difflab trains."""

from __future__ import annotations

import lightning as L
import torch


class ClipsFusedUnderBf16(L.LightningModule):
    """Clips the gradients itself under bf16-mixed. Lightning's mixed-precision plugin refuses to clip for a
    fused optimizer (fp16's loss scaler unscales inside a fused step), but bf16 has no scaler: its gradients are
    the real ones, and clipping them is exact."""

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        if gradient_clip_val and self.trainer.precision == "bf16-mixed":
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
