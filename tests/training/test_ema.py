"""The EMA callback's average is the textbook one: first update copies, then a ← a + (1 − d_n)(w − a) per
optimizer step with the warm-up decay d_n = min(decay, (1 + n) / (10 + n))."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from difflab.training import EMA
from difflab.training.ema import warmup_decay


class Recorder(L.LightningModule):
    """A linear regression that records its weights after every optimizer step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)
        self.register_buffer("scale", torch.ones(2))
        self.history: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.layer(x) * self.scale - y) ** 2).mean()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.trainer.global_step > len(self.history):  # an optimizer step was taken
            self.history.append(
                torch.cat([p.detach().flatten() for p in self.parameters()] + [self.scale.clone()])
            )

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_ema_matches_the_warmup_average_of_the_weights_after_each_optimizer_step(accumulate, tmp_path):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 3), torch.randn(32, 2))
    module, ema = Recorder(), EMA(decay=0.9, warmup=True)
    trainer = L.Trainer(
        max_steps=6,
        accumulate_grad_batches=accumulate,
        callbacks=[ema],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    assert len(module.history) == 6  # one record per optimizer step

    expected = module.history[0].clone()
    for n, weights in enumerate(module.history[1:], start=1):
        expected += (1 - warmup_decay(0.9, n, True)) * (weights - expected)
    average = ema.averaged_module()
    got = torch.cat([p.detach().flatten() for p in average.parameters()] + [average.scale])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(got, module.history[-1])  # it is an average, not the last weights
