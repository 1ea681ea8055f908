"""Metric layer: EfficientNet-Lite0 classifies real images, FD/KID behave, the reference cache is reused."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.metrics import (
    Evaluator,
    ReferenceKey,
    Stats,
    compute_statistics,
    efficientnet_lite0,
    evaluate_features,
    frechet_distance,
    get_extractor,
    inception_score,
    kernel_distance,
    reference_statistics,
)
from difflab.metrics.efficientnet_lite0 import preprocess

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# ImageNet classes a CIFAR-10 image of that class may plausibly get in its top 5.
PLAUSIBLE = {
    "airplane": {404, 405, 895, 908},  # airliner, airship, warplane, wing
    "ship": {472, 484, 510, 554, 576, 625, 628, 693, 724, 780, 814, 833, 871, 913, 914},
    "truck": {555, 569, 573, 595, 656, 675, 705, 717, 734, 751, 757, 803, 864, 867},
    "automobile": {407, 436, 468, 511, 609, 627, 656, 661, 717, 751, 817, 479, 581, 705, 734, 757, 864, 675},
}


def _data_or_skip(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data not found at {path} (present in CI; see shared/data/README.md)")
    return path


def _cifar_images(per_class: int) -> dict[str, torch.Tensor]:
    """The first few training JPEGs of each class in PLAUSIBLE, as uint8 (N, 3, 32, 32)."""
    from PIL import Image

    found: dict[str, list[np.ndarray]] = {c: [] for c in PLAUSIBLE}
    with tarfile.open(_data_or_skip("cifar10-jpg.tar.gz")) as tar:
        for member in tar:
            parts = member.name.split("/")
            if (
                len(parts) == 3
                and parts[0] == "train"
                and parts[1] in found
                and len(found[parts[1]]) < per_class
            ):
                data = tar.extractfile(member).read()
                found[parts[1]].append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
            if all(len(v) == per_class for v in found.values()):
                break
    return {c: torch.from_numpy(np.stack(v)).permute(0, 3, 1, 2).contiguous() for c, v in found.items()}


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """numpy's eigvals (in the Fréchet distance) spins BLAS threads on a busy 2-core box: 4x slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


NOISE = (0.0, 30.0, 80.0)


@pytest.fixture(scope="module")
def mnist_stats() -> dict[str, Stats]:
    """EfficientNet-Lite0 statistics (at 32 px, ~30x cheaper than 224) of 200 MNIST test digits ("ref")
    and of 200 others with Gaussian pixel noise of each sigma in NOISE (keys "0.0", "30.0", "80.0")."""
    from torchvision.datasets import MNIST

    root = _data_or_skip("MNIST")
    digits = MNIST(root.parent, train=False, download=False).data[:400, None]
    extractor = get_extractor("efficientnet_lite0", input_size=32)
    stats = {"ref": compute_statistics(digits[:200].split(100), extractor, keep_features=200)}
    for sigma in NOISE:
        noisy = _add_noise(digits[200:], sigma)
        stats[str(sigma)] = compute_statistics(noisy.split(100), extractor, keep_features=200)
    return stats


def _add_noise(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noisy = images.float() + sigma * torch.randn(images.shape, generator=g)
    return noisy.round().clamp(0, 255).to(torch.uint8)


def test_efficientnet_lite0_classifies_real_images() -> None:
    model = efficientnet_lite0()  # loads with strict=True
    images = _cifar_images(per_class=5)
    hits = total = 0
    for cls, x in images.items():
        with torch.inference_mode():
            top5 = model(preprocess(x)).topk(5).indices
        hits += sum(bool(set(row.tolist()) & PLAUSIBLE[cls]) for row in top5)
        total += len(x)
    # 32x32 CIFAR images upscaled are hard: TF "SAME" padding and (x - 127) / 128 give ~65% on 160
    # images; symmetric padding gives 59%, ImageNet mean/std 50%, a broken network near 0%.
    assert hits / total >= 0.5, f"only {hits}/{total} images got a plausible top-5 class"


def test_features_shape_dtype_and_grayscale() -> None:
    extractor = get_extractor("efficientnet_lite0", input_size=32)
    gray = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    feats = extractor(gray)
    assert feats.shape == (3, 1280) and feats.dtype == torch.float64 and feats.device.type == "cpu"
    torch.testing.assert_close(feats, extractor(gray.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match="uint8"):
        extractor(gray.float())


def test_fd_self_zero_and_grows_with_noise(mnist_stats) -> None:
    ref = mnist_stats["ref"]
    assert abs(frechet_distance(ref, ref)) < 1e-3
    fds = [frechet_distance(mnist_stats[str(sigma)], ref) for sigma in NOISE]
    assert fds[0] < fds[1] < fds[2], fds
    assert fds[2] > 5 * fds[0], fds


def test_kid_of_two_halves_is_near_zero(mnist_stats) -> None:
    ref, same_half, noisy = mnist_stats["ref"], mnist_stats["0.0"], mnist_stats["80.0"]
    kid_same, _ = kernel_distance(same_half, ref, subsets=20)
    kid_noisy, _ = kernel_distance(noisy, ref, subsets=20)
    assert abs(kid_same) < 0.1 * kid_noisy, (kid_same, kid_noisy)
    metrics = evaluate_features(same_half, ref, kid_subsets=20)
    assert set(metrics) == {"fd_effl0", "kid_mean", "kid_std", "precision", "recall"}
    assert metrics["kid_mean"] == pytest.approx(kid_same)
    assert metrics["precision"] > 0.5 and metrics["recall"] > 0.5


@pytest.mark.parametrize("fewest", [2, 3, 4])
def test_precision_recall_of_too_few_images_are_left_out_with_a_warning(fewest, caplog) -> None:
    # Before, 2 or 3 images (evaluate.py n=3, a 3-sample FID callback at the end of training) ended in torch's
    # "kthvalue(): selected number k out of range" traceback: each image's 3rd neighbour needs 4 images.
    rng = np.random.default_rng(0)

    def stats(n: int) -> Stats:
        features = rng.normal(size=(n, 4))
        return Stats(features.mean(0), np.cov(features.T) + np.eye(4), n, "projection", features)

    with caplog.at_level("WARNING", logger="difflab"):
        metrics = evaluate_features(stats(fewest), stats(50), kid_subsets=2)
    if fewest > 3:
        assert {"precision", "recall"} <= set(metrics) and not caplog.records
        return
    assert set(metrics) == {"fd_projection", "kid_mean", "kid_std"}
    assert [r.getMessage() for r in caplog.records] == [
        "precision/recall left out: the radius of each image's 3 nearest neighbours needs more than 3 images on "
        f"each side (got {fewest} generated, 50 reference)"
    ]
    # A sample capped by metrics.keep_features: before, named as the count generated (3 of 12).
    caplog.clear()
    capped = dataclasses.replace(stats(fewest), n=12)
    with caplog.at_level("WARNING", logger="difflab"):
        evaluate_features(capped, stats(50), kid_subsets=2)
    assert (
        caplog.records[0]
        .getMessage()
        .endswith(
            f"(got {fewest} generated, 50 reference features kept of 12 and 50: raise metrics.keep_features)"
        )
    )


class _ProjectionExtractor:
    """A cheap deterministic stand-in extractor: a fixed random projection of the pixels."""

    name = "projection"
    dim = 8

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(1).double() / 255
        proj = torch.randn(
            flat.shape[1], self.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64
        )
        return flat @ proj


def test_streaming_statistics_match_numpy() -> None:
    images = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8)
    ext = _ProjectionExtractor()
    stats = compute_statistics(images.split(7), ext, keep_features=20)
    feats = ext(images).numpy()
    np.testing.assert_allclose(stats.mu, feats.mean(0), rtol=1e-10)
    np.testing.assert_allclose(stats.sigma, np.cov(feats, rowvar=False), rtol=1e-9, atol=1e-12)
    assert stats.n == 50 and stats.features.shape == (20, 8)
    # the capped sample is drawn from the whole stream, not just its head
    assert {tuple(r) for r in np.round(stats.features, 9)} <= {tuple(r) for r in np.round(feats, 9)}


def test_reference_cache_written_once_then_hit(tmp_path: Path, caplog) -> None:
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    calls = []

    def batches():
        calls.append(1)
        return images.split(16)

    key = ReferenceKey("toy", "train", 8, "projection")
    with caplog.at_level("INFO", logger="difflab"):
        stats1, hit1 = reference_statistics(key, batches, _ProjectionExtractor(), cache_dir=tmp_path)
        # said before the minutes a large split takes (a DDP run looked hung there), and only then
        said = [r.getMessage() for r in caplog.records]
        stats2, hit2 = reference_statistics(key, batches, _ProjectionExtractor(), cache_dir=tmp_path)
    assert said == [
        f"computing the reference statistics of toy train (all images; cached in "
        f"{tmp_path / 'toy-train-8px-projection-all.npz'} for later runs)"
    ]
    assert len(caplog.records) == 1
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["toy-train-8px-projection-all.npz"]
    np.testing.assert_array_equal(stats1.sigma, stats2.sigma)
    assert isinstance(stats2, Stats) and stats2.n == 40 and stats2.features.shape == (40, 8)


def test_a_cached_reference_gives_the_feature_sample_of_the_size_asked(tmp_path: Path) -> None:
    """Before, a reference cached by a run with metrics.keep_features=5 gave its 5 features to every later run
    (and a full one to a run asking for 5): KID and precision/recall changed with whichever run had cached it."""
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    key = ReferenceKey("toy", "train", 8, "projection")

    def asked(keep: int) -> tuple[Stats, bool]:
        return reference_statistics(key, lambda: images.split(16), _ProjectionExtractor(), tmp_path, keep)

    few, _ = asked(5)
    whole, hit = asked(30)
    assert not hit and (len(few.features), len(whole.features)) == (5, 30)
    assert asked(30)[1] and len(asked(30)[0].features) == 30
    assert len(asked(0)[0].features) == 30  # Fréchet distance alone: any cached sample serves
    again, hit = asked(5)
    assert not hit
    np.testing.assert_array_equal(again.features, few.features)


def test_an_unwritable_reference_cache_names_the_setting_to_change(tmp_path: Path) -> None:
    # Before: "give a writable its cache folder setting".
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the folder goes")
    key = ReferenceKey("toy", "train", 8, "projection")
    with pytest.raises(ValueError) as refused:
        reference_statistics(key, lambda: [], _ProjectionExtractor(), cache_dir=blocker)
    assert str(refused.value).endswith(": give a writable metrics.cache_dir (or $DIFFLAB_CACHE)")


def test_inception_without_weights_names_url_and_config_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no cached copy to fall back on
    try:
        get_extractor("inception")
    except FileNotFoundError as exc:
        message = str(exc)
    else:
        pytest.skip("InceptionV3 weights were downloadable here")
    assert "\n" not in message
    assert "https://github.com/toshas/torch-fidelity/releases/download/" in message
    assert "metrics.inception_weights=<path>" in message
    with pytest.raises(FileNotFoundError, match="metrics.inception_weights"):
        get_extractor("inception", weights_path=tmp_path / "missing.pth")


def test_inception_loads_local_weights_file(tmp_path: Path) -> None:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Untrained(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # keep the random init
            return None

    torch.save({}, tmp_path / "empty.pth")
    weights = tmp_path / "inception.pth"
    net = _Untrained(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(tmp_path / "empty.pth")
    )
    torch.save(net.state_dict(), weights)
    ext = get_extractor("inception", weights_path=weights)
    feats = ext(torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8))
    assert feats.shape == (2, 2048) and feats.dtype == torch.float64
    assert evaluate_features(*[Stats(np.zeros(2), np.eye(2), 2, ext.name)] * 2) == {"fid": pytest.approx(0.0)}


class _WritesAFile:
    """Unpickled, it would run code: it creates the file named (what a malicious weights file could do)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("content", ["code", "empty", "text"])
def test_inception_weights_are_read_as_data_and_a_bad_file_is_one_line(tmp_path: Path, content) -> None:
    """Before, torch-fidelity unpickled the file (weights_only=False): a file holding code ran it; an empty one
    gave 'EOFError: Ran out of input', a text one 'invalid literal for int() with base 10'."""
    weights, ran = tmp_path / "inception.pth", tmp_path / "code_ran"
    if content == "code":
        torch.save({"fc.weight": _WritesAFile(ran)}, weights)
    else:
        weights.write_text("" if content == "empty" else "garbage\n")
    with pytest.raises(ValueError) as error:
        get_extractor("inception", weights_path=weights)
    message = str(error.value)
    if content == "code":
        assert message.startswith(f"refused InceptionV3 weights {weights}: it holds Python objects, not only")
        assert re.search(r"only tensors \(GLOBAL \S+\); difflab never runs", message)
        # Not torch's ways to load it anyway.
        assert "can still be loaded" not in message and "safe_globals" not in message
    else:
        assert message.startswith(f"{weights} is not InceptionV3 weights difflab can read (")
    assert "\n" not in message and "metrics.inception_weights=<path>" in message
    assert not ran.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # only while the weights are read


def test_inception_score_rises_with_class_variety() -> None:
    """Lite0's ImageNet logits as an Inception Score: one picture repeated scores 1 (no variety);
    real pictures of several CIFAR-10 classes score clearly higher."""
    images = _cifar_images(per_class=4)
    varied = torch.cat(list(images.values()))
    same = varied[:1].expand(len(varied), -1, -1, -1)
    extractor = get_extractor("efficientnet_lite0")
    score_varied, _ = inception_score(extractor.embed(varied)[1], splits=2)
    score_same, _ = inception_score(extractor.embed(same)[1], splits=2)
    assert score_same == pytest.approx(1.0, abs=1e-3)
    assert score_varied > 2.0


def test_evaluator_cpu_threads_apply_to_the_feature_network_only() -> None:
    """A run training on one thread still extracts features on every core, then gets its one thread back."""
    seen: list[int] = []

    class CountingExtractor:
        def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
            seen.append(torch.get_num_threads())
            return torch.zeros(len(images), 4), None

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        evaluator = Evaluator(cpu_threads=2)
        evaluator._extractors["cpu"] = CountingExtractor()  # type: ignore[assignment]
        evaluator.embed(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
        assert seen == [2] and torch.get_num_threads() == 1
        unchanged = Evaluator()
        unchanged._extractors["cpu"] = CountingExtractor()  # type: ignore[assignment]
        unchanged.embed(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
        assert seen == [2, 1]
    finally:
        torch.set_num_threads(before)


def test_the_kept_feature_sample_is_the_same_whatever_the_batches_or_processes() -> None:
    # Before, each DDP rank drew its reservoir with its own generator (and kept keep/W rows): the FID callback's
    # KID under 2 processes was 0.4744 where one process and evaluate.py gave 0.5682 (helper report).
    from difflab.metrics.statistics import StatsAccumulator, merged_sample

    rows = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    whole = StatsAccumulator(3, "test", keep_features=10)
    whole.update(rows)
    batched = StatsAccumulator(3, "test", keep_features=10)
    for part in rows.split(7):
        batched.update(part)
    ranks = [StatsAccumulator(3, "test", keep_features=10) for _ in range(2)]
    for rank, acc in enumerate(
        ranks
    ):  # rank r generates samples r, r + 2, … in batches of 3, as the callback
        for share in torch.arange(rank, 50, 2).split(3):
            acc.update(rows[share], share)
    merged = merged_sample(
        *(torch.cat([getattr(acc, part) for acc in ranks]) for part in ("rows", "slots", "indices"))
    )
    assert len(whole.sample) == 10
    assert torch.equal(batched.sample, whole.sample) and torch.equal(merged, whole.sample)
    kept = {int(i) for i in whole.indices}
    assert (
        max(kept) >= 10
    )  # rows past the first ten replaced some of them: a sample of all 50, not the first 10
