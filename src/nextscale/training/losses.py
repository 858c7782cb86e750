"""Optional tokenizer losses: a VGG feature (perceptual) distance and a PatchGAN hinge loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NextscaleError


class PerceptualLoss(nn.Module):
    """LPIPS-style distance on unit-normalised VGG16 features (without LPIPS's learned channel weights).

    Needs torchvision's ImageNet VGG16 weights, downloaded on first use (or already in the torch hub cache).
    """

    LAYERS = (3, 8, 15, 22)  # relu1_2, relu2_2, relu3_3, relu4_3

    def __init__(self):
        super().__init__()
        from torchvision.models import VGG16_Weights, vgg16

        try:
            features = vgg16(weights=VGG16_Weights.IMAGENET1K_V1).features[: self.LAYERS[-1] + 1]
        except Exception as e:  # no network, no cache
            message = f"the perceptual loss needs torchvision's VGG16 weights, which failed to load: {e}"
            raise NextscaleError(message) from None
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _taps(self, img: torch.Tensor) -> list[torch.Tensor]:
        x, taps = ((img + 1) / 2 - self.mean) / self.std, []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.LAYERS:
                taps.append(F.normalize(x, dim=1))
        return taps

    def forward(self, rec: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        return sum((a - b).square().sum(1).mean() for a, b in zip(self._taps(rec), self._taps(img)))


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: one real/fake logit per image patch."""

    def __init__(self, in_channels: int = 3, width: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = width
        for _ in range(1, layers):
            mods += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.GroupNorm(8, ch * 2), nn.LeakyReLU(0.2)]
            ch *= 2
        mods.append(nn.Conv2d(ch, 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.net(img)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())
