"""Draws docs/fashion-decoder.png: Fashion-MNIST test garments (top row), their tokens decoded by the
fashion-tokenizer run's own decoder (middle) and by the built-in tokenizer's, after the fashion-decoder run
(bottom). The tokens are the same in both rows. Needs the installed data set and the first run's model:
`.venv/bin/python docs/fashion_decoder.py runs/fashion/tokenizer/model`."""

import sys

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from nextscale.data.fashion import fashion_split, fashion_to_images
from nextscale.weights import load_vae

PER_CLASS, CLASSES, SCALE = 2, 10, 3


@torch.no_grad()
def main(first_tokenizer: str, out: str = "docs/fashion-decoder.png") -> None:
    grey, labels = fashion_split("test")
    picked = np.concatenate([np.flatnonzero(labels == c)[:PER_CLASS] for c in range(CLASSES)])
    real = fashion_to_images(grey[picked])
    first, shipped = load_vae(first_tokenizer), load_vae("fashion")
    tokens = shipped.img_to_idx(real)
    assert all(torch.equal(a, b) for a, b in zip(tokens, first.img_to_idx(real)))  # one set of tokens, two decoders
    rows = [real, first.idx_to_img(tokens), shipped.idx_to_img(tokens)]
    images = torch.cat(rows).add(1).div(2).clamp(0, 1)
    picture = make_grid(images, nrow=len(picked), padding=2, pad_value=1.0)
    picture = Image.fromarray(picture.permute(1, 2, 0).mul(255).add(0.5).byte().numpy())
    picture.resize((picture.width * SCALE, picture.height * SCALE), Image.NEAREST).save(out)
    print(f"{out}: {len(picked)} test garments, the first decoder, the shipped one")


if __name__ == "__main__":
    main(*sys.argv[1:])
