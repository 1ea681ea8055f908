"""Write scikit-learn's 8x8 digits as a captioned image folder: a text-to-image dataset whose captions come from
files (metadata.jsonl) and whose images keep their classes (one subfolder per digit), so that a model trained
on it with data.captions=files gets a conditioning accuracy (README "Text-to-image").

Layout: <out>/train/<digit>/<i>.png and <out>/val/<digit>/<i>.png (the digits datamodule's own split:
val_fraction 0.05, split_seed 0), and <out>/{train,val}/metadata.jsonl. Each image gets its own caption, a
phrasing (none of them a training template of digits_text_cpu) with the stroke weight measured on that image:
"a thin handwritten seven", "the numeral 7 in thick strokes", … 80 distinct captions in all.

    python benchmarks/captioned_digits.py --out /tmp/captioned_digits
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from difflab.data.captions import DIGIT_WORDS
from difflab.data.sources import open_splits

PHRASINGS = (
    "a {weight} handwritten {word}",
    "{word}, drawn with a {weight} pen",
    "the numeral {digit} in {weight} strokes",
    "a scanned {word} with {weight} lines",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="a new or empty folder")
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"error: {args.out} is not empty")
    splits = open_splits("digits", None, 0.05, 0)
    train = [splits.train[i] for i in range(len(splits.train))]
    # Stroke weight: more ink than the median of the image's class is "thick".
    ink = [np.asarray(image, dtype=np.float64).sum() for image, _ in train]
    median = {
        c: np.median([v for v, (_, label) in zip(ink, train, strict=True) if label == c]) for c in range(10)
    }
    index = 0
    for name, dataset in (("train", train), ("val", [splits.val[i] for i in range(len(splits.val))])):
        lines = []
        for image, label in dataset:
            weight = "thick" if np.asarray(image, dtype=np.float64).sum() > median[label] else "thin"
            phrasing = PHRASINGS[index % len(PHRASINGS)]
            text = phrasing.format(weight=weight, word=DIGIT_WORDS[label], digit=label)
            path = args.out / name / str(label) / f"{index:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
            lines.append(json.dumps({"file_name": f"{label}/{index:04d}.png", "text": text}))
            index += 1
        (args.out / name / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        print(f"{name}: {len(dataset)} images")


if __name__ == "__main__":
    main()
