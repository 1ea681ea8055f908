"""Does a text-to-image digits model draw the digit a prompt asks for, also for phrasings it never saw?

Samples n images per prompt from a checkpoint (DDIM, classifier-free guidance at each scale given) and
classifies them with a logistic regression on the pixels of scikit-learn's digits, trained on the split the model
trained on; prints a markdown table of the share of samples showing the asked digit, and the classifier's
accuracy on the held-out digits beside it.

    python benchmarks/text_prompts.py --ckpt <run>/checkpoints/last.ckpt [--n 100] [--guidance 1 3]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from difflab.checkpoint import load_model
from difflab.data import ImageDataModule
from difflab.data.captions import DIGIT_WORDS, template_captions
from difflab.diffusion import DDIMSampler
from difflab.diffusion.generate import generate
from difflab.io.write_images import to_uint8
from difflab.text import embed_texts

# (prompt, digit it asks for); the first two are training templates, the rest phrasings never trained on.
PROMPTS = [
    ("a handwritten digit seven", 7),
    ("the number 3", 3),
    ("digit 7", 7),
    ("a seven", 7),
    ("handwritten number three", 3),
    ("the digit 4", 4),
    ("number nine", 9),
    ("a two", 2),
    ("zero", 0),
    ("8", 8),
]


def pixels(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(N, 64) ink in [0, 1] and labels, from model tensors in [-1, 1]."""
    items = [dataset[i] for i in range(len(dataset))]
    x = torch.stack([image for image, _ in items])
    return (to_uint8(x).flatten(1).float() / 255).numpy(), np.array([label for _, label in items])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--n", type=int, default=100, help="samples per prompt")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    loaded = load_model(args.ckpt)
    # The classifier reads 8×8 pixels: a latent model's samples would need decoding, and other sizes another one.
    if loaded.latents is not None or tuple(loaded.sample_shape) != (1, 8, 8):
        raise SystemExit(
            f"{args.ckpt}: this benchmark scores text models of 1×8×8 pixel digits (digits_text_cpu)"
        )
    data = loaded.config["data"]
    digits = ImageDataModule(
        "digits", image_size=8, val_fraction=data["val_fraction"], split_seed=data["split_seed"]
    )
    x_train, y_train = pixels(digits.dataset_for("train"))
    x_val, y_val = pixels(digits.dataset_for("val"))
    classifier = LogisticRegression(max_iter=5000).fit(x_train, y_train)
    held_out = classifier.score(x_val, y_val)

    texts = [prompt for prompt, _ in PROMPTS]
    table = embed_texts(texts, data["text_encoder"], data["text_encoder_version"], int(data["max_tokens"]))
    # sampling_net and its schedule: an edm or flow model's ε-face (its raw net predicts another target).
    sampler = DDIMSampler(loaded.schedule, steps=args.steps, prediction_type=loaded.prediction_type)
    trained = set(template_captions("digits", DIGIT_WORDS))
    header = " | ".join(f"s={s:g}" for s in args.guidance)
    print(f"classifier accuracy on the {len(y_val)} held-out real digits: {held_out:.1%}\n")
    print(f"| prompt | asks for | seen in training | {header} |")
    print("|---|---|---|" + "---|" * len(args.guidance))
    for row, (prompt, digit) in enumerate(PROMPTS):
        shares = []
        for scale in args.guidance:
            images = generate(
                sampler, loaded.sampling_net, range(args.n), loaded.sample_shape, args.seed, 100,
                table.cond_for([row] * args.n), scale,
            )  # fmt: skip
            predicted = classifier.predict((to_uint8(images).flatten(1).float() / 255).numpy())
            shares.append(f"{np.mean(predicted == digit):.0%}")
        seen = "yes" if prompt in trained else "no"
        print(f"| {prompt} | {digit} | {seen} | " + " | ".join(shares) + " |")


if __name__ == "__main__":
    main()
