"""Classifier-free guidance and condition dropout, checked against the exact denoiser of a labelled
Gaussian mixture: s = 1 samples each class's own component, s = 0 the whole mixture."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from analytic import LabelledMixtureDenoiser
from conftest import compose_config
from torch import nn
from torch.utils.data import DataLoader, Dataset

from difflab.diffusion import DDIMSampler, DDPMSampler, NoiseSchedule
from difflab.diffusion.conditioning import label_condition, random_drop, spread_labels
from difflab.diffusion.generate import generate
from difflab.diffusion.guidance import Guided
from difflab.generation import requested_conditions
from difflab.generation.conditions import class_conditions
from difflab.models import UNet
from difflab.run.common import fill_conditioning
from difflab.training import DiffusionModule

MEANS, STDS, WEIGHTS = [-1.5, 0.0, 1.5], [0.3, 0.5, 0.4], [0.5, 0.3, 0.2]
K, D = len(MEANS), 2
NO_CLIP = {"clip_x0": None}  # the mixture reaches beyond [-1, 1]


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule.from_name("linear")


def mixture(schedule: NoiseSchedule) -> LabelledMixtureDenoiser:
    return LabelledMixtureDenoiser(schedule, MEANS, STDS, WEIGHTS)


def sample_classes(schedule, sampler, per_class: int, guidance: float) -> tuple[torch.Tensor, list[int]]:
    """per_class samples of each class (sample i of class i·K // n), guided with scale `guidance`."""
    labels = spread_labels(range(K), per_class * K)
    model = Guided(mixture(schedule), {"labels": torch.tensor(labels)}, guidance)
    return sampler.sample(model, (len(labels), D), generator=torch.Generator().manual_seed(0)), labels


def nearest_component(x: torch.Tensor) -> torch.Tensor:
    """The mode each sample (N, D) is closest to, by its mean over dimensions."""
    return (x.mean(1, keepdim=True) - torch.tensor(MEANS)).abs().argmin(1)


def test_guidance_one_samples_each_class_from_its_own_component(schedule):
    x, labels = sample_classes(schedule, DDPMSampler(schedule, **NO_CLIP), 1000, guidance=1.0)
    labels = torch.tensor(labels)
    for k in range(K):
        mine = x[labels == k]  # 3,000 scalars: the mean's standard error is ≈ 0.01 of the std
        assert mine.mean().item() == pytest.approx(MEANS[k], abs=0.04)
        assert mine.std().item() == pytest.approx(STDS[k], rel=0.05)


def test_guidance_zero_samples_the_whole_mixture_whatever_the_label(schedule):
    x, labels = sample_classes(schedule, DDPMSampler(schedule, **NO_CLIP), 1000, guidance=0.0)
    labels = torch.tensor(labels)
    mean = sum(w * m for w, m in zip(WEIGHTS, MEANS, strict=True))
    assert x.mean().item() == pytest.approx(mean, abs=0.05)
    for k in range(K):
        # Requested class k or not, samples fall into each mode as often as its weight.
        shares = torch.bincount(nearest_component(x[labels == k]), minlength=K).float() / (labels == k).sum()
        assert shares.tolist() == pytest.approx(WEIGHTS, abs=0.05)


def test_stronger_guidance_puts_more_samples_in_their_class(schedule):
    """The analogue of conditioning accuracy: s = 0 lands in the requested mode at the mode's weight, s = 1
    almost always (the modes overlap a little), s = 3 more often still."""
    sampler = DDIMSampler(schedule, steps=50, **NO_CLIP)
    labels = spread_labels(range(K), 1200)
    accuracy = []
    for s in (0.0, 1.0, 3.0):
        # Through `generate`, as sample.py and evaluate.py call it: conditions tied to sample indices.
        x = generate(sampler, mixture(schedule), range(1200), (D,), 0, 600, label_condition(labels), s)
        accuracy.append((nearest_component(x) == torch.tensor(labels)).float().mean().item())
    assert accuracy[0] == pytest.approx(sum(w / K for w in WEIGHTS), abs=0.05)
    assert 0.9 < accuracy[1] < accuracy[2]


def branch_pair(net, x, t, labels):
    conditional = net(x, t, {"labels": labels})
    unconditional = net(x, t, {"labels": labels, "drop": torch.ones_like(labels, dtype=torch.bool)})
    return conditional, unconditional


@pytest.mark.parametrize("kind", ["analytic", "unet"])
def test_guided_at_one_and_zero_is_exactly_one_branch_and_in_between_one_batched_call(schedule, kind):
    torch.manual_seed(0)
    if kind == "analytic":
        net, x = mixture(schedule), torch.randn(6, D)
    else:
        net = UNet(
            in_channels=1,
            base_channels=8,
            channel_mults=(1, 2),
            attention_resolutions=(),
            image_size=8,
            num_groups=4,
            num_classes=K,
        ).eval()
        x = torch.randn(6, 1, 8, 8)
    t, labels = torch.randint(0, 1000, (6,)), torch.tensor([0, 1, 2, 2, 1, 0])
    with torch.no_grad():
        conditional, unconditional = branch_pair(net, x, t, labels)
        assert torch.equal(Guided(net, {"labels": labels}, 1.0)(x, t), conditional)
        assert torch.equal(Guided(net, {"labels": labels}, 0.0)(x, t), unconditional)
        assert torch.equal(unconditional, net(x, t))  # dropped labels = no labels at all
        if kind == "analytic":
            net.calls.clear()
        guided = Guided(net, {"labels": labels}, 3.0)(x, t)
    torch.testing.assert_close(guided, unconditional + 3.0 * (conditional - unconditional))
    if kind == "analytic":
        assert net.calls == [12]  # both branches in one forward of a doubled batch


def test_random_drop_drops_at_the_configured_rate():
    cond = {"labels": torch.zeros(200_000, dtype=torch.long)}
    g = torch.Generator().manual_seed(0)
    for p in (0.1, 0.5):
        share = random_drop(cond, p, g)["drop"].float().mean().item()
        assert share == pytest.approx(p, abs=0.005)
    assert random_drop(cond, 0.0) is cond  # nothing dropped, nothing added
    assert random_drop(cond, 1.0, g)["drop"].all()
    # An already dropped sample stays dropped.
    some = {"labels": torch.zeros(4, dtype=torch.long), "drop": torch.tensor([True, False, True, False])}
    assert random_drop(some, 0.0)["drop"].tolist() == [True, False, True, False]
    assert random_drop({"low_res": torch.zeros(3, 1, 2, 2)}, 0.5).keys() == {"low_res"}  # never dropped


class LabelledNoise(Dataset):
    def __len__(self) -> int:
        return 4096

    def __getitem__(self, i: int):
        return torch.zeros(1, 4, 4), {"labels": torch.tensor(i % K)}


class DropSpy(nn.Module):
    """A one-parameter denoiser that records which samples the training step dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x, t, cond=None):
        self.seen.append(cond.get("drop", torch.zeros(len(x), dtype=torch.bool)).clone())
        return self.scale * x


@pytest.mark.parametrize("prob", [0.0, 0.3])
def test_training_step_drops_labels_at_cond_drop_prob(schedule, prob):
    spy = DropSpy()
    module = DiffusionModule(
        spy, schedule, optimizer=lambda params: torch.optim.SGD(params, lr=0.0), cond_drop_prob=prob
    )
    trainer = L.Trainer(
        max_steps=16,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
    )
    trainer.fit(module, DataLoader(LabelledNoise(), batch_size=256))
    assert len(spy.seen) == 16  # 4,096 samples seen
    assert torch.cat(spy.seen).float().mean().item() == pytest.approx(prob, abs=0.02)


# Every condition a model cannot take is one line naming the problem.
CLASS_MODEL = SimpleNamespace(condition="labels", num_classes=10)
PLAIN_MODEL = SimpleNamespace(condition=None, num_classes=None)


@pytest.mark.parametrize(
    ("loaded", "overrides", "message"),
    [
        (
            CLASS_MODEL,
            {"labels": [3, 10]},
            "labels=[3, 10]: the model knows classes 0..9 (give one or a list)",
        ),
        (CLASS_MODEL, {"labels": -1}, "labels=-1: the model knows classes 0..9"),
        (CLASS_MODEL, {"labels": []}, "labels=[]: the model knows classes 0..9"),
        # Before, {3: 1} sampled class 3 (its key) and a set in whatever order it iterates.
        (
            CLASS_MODEL,
            {"labels": {3: 1}},
            "labels={3: 1} is not a label or a list of them (give labels=[3, 5])",
        ),
        (CLASS_MODEL, {"labels": {3, 5}}, "labels={3, 5} is not a label or a list of them"),
        (PLAIN_MODEL, {"labels": [1]}, "labels=[1] given, but m.ckpt holds an unconditional model"),
        (
            CLASS_MODEL,
            {"prompt": "a one"},
            "prompt='a one' given, but m.ckpt holds a class-conditional model (10 classes): give labels= instead",
        ),
        (
            PLAIN_MODEL,
            {"guidance": 3.0},
            "guidance=3.0 needs a conditional model or guide=<a weaker model>; m.ckpt is unconditional",
        ),
    ],
)
def test_a_condition_the_model_cannot_take_is_refused_in_one_line(loaded, overrides, message):
    with pytest.raises(ValueError) as error:
        requested_conditions(loaded, 8, "m.ckpt", **overrides)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_more_labels_or_prompts_than_results_are_refused_not_dropped():
    with pytest.raises(ValueError) as error:
        requested_conditions(CLASS_MODEL, 1, "m.ckpt", labels=[1, 2, 3])
    assert str(error.value) == (
        "labels=[1, 2, 3] asks for 3 classes but n=1: give n of at least 3 (n is spread over them)"
    )
    text_model = SimpleNamespace(condition="text", num_classes=None)
    with pytest.raises(ValueError) as error:
        requested_conditions(text_model, 2, "m.ckpt", prompt=["a 1", "a 2", "a 3"])
    assert str(error.value) == (
        "prompt=['a 1', 'a 2', 'a 3'] asks for 3 prompts but n=2: give n of at least 3 (n is spread over them)"
    )


def test_labels_as_numpy_or_torch_values_are_the_classes_they_hold():
    import numpy as np

    for labels in (np.array([1, 2]), torch.tensor([1, 2]), (np.int64(1), np.int64(2))):
        assert requested_conditions(CLASS_MODEL, 4, "m", labels=labels).labels == [1, 1, 2, 2], labels
    assert requested_conditions(CLASS_MODEL, 2, "m", labels=np.int64(3)).labels == [3, 3]
    with pytest.raises(ValueError, match="the model knows classes 0..9"):
        requested_conditions(CLASS_MODEL, 2, "m", labels=np.array([1.5]))


def test_labels_spread_over_the_results_in_blocks():
    conditions = requested_conditions(CLASS_MODEL, 6, "m", labels=[3, 7], guidance=2.0)
    assert conditions.labels == [3, 3, 3, 7, 7, 7] and conditions.nrow == 3
    assert class_conditions(range(10), 20).labels == [c for c in range(10) for _ in range(2)]


def test_num_classes_that_contradict_the_data_are_refused(tmp_path):
    cfg = compose_config("train", ["model.num_classes=5"], tmp_path)
    with pytest.raises(ValueError) as error:
        fill_conditioning(cfg)
    assert str(error.value) == (
        "model.num_classes=5 but data=digits has 10 classes; give model.num_classes=10, or data.condition=labels "
        "model.num_classes=null to take it from the data"
    )
    # Followed, the advice keeps the labels (review: model.num_classes=null alone trained an unconditional model).
    cfg = compose_config("train", ["data.condition=labels", "model.num_classes=null"], tmp_path)
    fill_conditioning(cfg)
    assert (cfg.data.condition, cfg.model.num_classes) == ("labels", 10)
    # Where a recipe sets both, the count alone is to change (before: "drop model.num_classes", which ~ refuses).
    cfg = compose_config("train", ["experiment=digits_cond_cpu", "model.num_classes=5"], tmp_path)
    with pytest.raises(ValueError, match=r"give model.num_classes=10, or model.num_classes=null to take it"):
        fill_conditioning(cfg)


@pytest.mark.parametrize("overrides", [["model.num_classes=10"], ["data.condition=labels"]])
def test_either_switch_makes_a_class_conditional_run(tmp_path, overrides):
    cfg = compose_config("train", overrides, tmp_path)
    fill_conditioning(cfg)
    assert (cfg.data.condition, cfg.model.num_classes) == ("labels", 10)


def test_labels_given_to_an_unconditional_unet_are_refused():
    net = UNet(
        in_channels=1,
        base_channels=8,
        channel_mults=(1,),
        attention_resolutions=(),
        image_size=4,
        num_groups=4,
    )
    with pytest.raises(
        ValueError, match="class labels were given, but this U-Net was built with num_classes=None"
    ):
        net(torch.zeros(1, 1, 4, 4), torch.tensor([5]), {"labels": torch.tensor([1])})


def test_a_guide_conditioned_otherwise_is_named_in_words():
    # Before: "(conditioning None/None classes vs labels/10)".
    from difflab.diffusion import NoiseSchedule
    from difflab.generation.autoguide import check_guide

    schedule = NoiseSchedule.from_name("linear", timesteps=10)
    common = {"sample_shape": (1, 8, 8), "prediction_type": "epsilon", "schedule": schedule, "config": {}}
    model = SimpleNamespace(condition="labels", num_classes=10, **common)
    guide = SimpleNamespace(condition=None, num_classes=None, **common)
    with pytest.raises(ValueError) as error:
        check_guide(model, guide, "main.ckpt", "guide.ckpt")
    assert str(error.value).endswith("(an unconditional model vs a class-conditional model (10 classes))"), (
        str(error.value)
    )
