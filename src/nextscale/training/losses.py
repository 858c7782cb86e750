"""Optional tokenizer losses: LPIPS (perceptual), a PatchGAN hinge loss, and VQGAN's adaptive weight."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NextscaleError
from ..files import read_torch_weights

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16 weights
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
LPIPS_FILE = "vgg.pth"  # the lpips package's learned channel weights (lpips/weights/v0.1/vgg.pth)


class PerceptualLoss(nn.Module):
    """LPIPS (VGG16): unit-normalised features of five VGG16 stages, squared differences weighted per channel by
    LPIPS's learned linear layers, averaged over space, summed over stages.

    `vgg_weights`: torchvision's `vgg16-397923af.pth` (default: torch hub's cache, downloaded when online).
    `lpips_weights`: the lpips package's `weights/v0.1/vgg.pth`; without it every channel weighs the same
    (a plain VGG feature distance, not LPIPS: said in the log).
    """

    LAYERS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    CHANNELS = (64, 128, 256, 512, 512)

    def __init__(self, vgg_weights: str | None = None, lpips_weights: str | None = None):
        super().__init__()
        from torchvision.models import vgg16

        features = vgg16().features[: self.LAYERS[-1] + 1]
        features.load_state_dict(self._vgg_state(vgg_weights))
        self.features = features.eval().requires_grad_(False)
        # LPIPS's input scaling, for images in [-1, 1]
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.learned = lpips_weights is not None
        lins = self._lpips_state(lpips_weights) if self.learned else [torch.ones(1, c, 1, 1) for c in self.CHANNELS]
        for i, w in enumerate(lins):
            self.register_buffer(f"lin{i}", w.float())

    def _vgg_state(self, path: str | None) -> dict:
        if path is None:
            cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
            if not cached.is_file():
                try:
                    torch.hub.load_state_dict_from_url(VGG16_URL, progress=False)
                except Exception:  # offline: name the file and where it goes
                    raise NextscaleError(
                        f"the perceptual loss needs VGG16 weights: put {VGG16_FILE} ({VGG16_URL}) "
                        f"in {cached.parent}, or pass --perceptual-weights FILE"
                    ) from None
            path = cached
        state = read_torch_weights(path)
        prefix = "features."
        features = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        kept = {k: v for k, v in features.items() if int(k.split(".")[0]) <= self.LAYERS[-1]}
        if len(kept) != 2 * 13:  # the 13 convolutions up to relu5_3, weight and bias each
            raise NextscaleError(f"{path} is not torchvision's VGG16 state dict ({VGG16_FILE})")
        return kept

    def _lpips_state(self, path: str) -> list[torch.Tensor]:
        state = read_torch_weights(path)
        try:
            lins = [state[f"lin{i}.model.1.weight"] for i in range(len(self.CHANNELS))]
        except KeyError:
            raise NextscaleError(f"{path} is not the lpips package's {LPIPS_FILE} (lin0.model.1.weight …)") from None
        if [w.shape[1] for w in lins] != list(self.CHANNELS):
            raise NextscaleError(f"{path}: its channel weights do not fit VGG16 ({LPIPS_FILE} of LPIPS 0.1 does)")
        return lins

    def _taps(self, img: torch.Tensor) -> list[torch.Tensor]:
        x, taps = (img - self.shift) / self.scale, []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.LAYERS:
                taps.append(x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return taps

    def forward(self, rec: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for i, (a, b) in enumerate(zip(self._taps(rec), self._taps(img))):
            total = total + ((a - b).square() * getattr(self, f"lin{i}")).sum(1).mean()
        return total


def adaptive_weight(reconstruction_loss, generator_loss, last_layer: torch.Tensor, cap: float = 1e4):
    """VQGAN's balance: ‖∇ reconstruction‖ / ‖∇ adversarial‖ at the decoder's last layer, detached. Under
    torchrun the gradients are averaged over ranks first: the weight of the global batch, as one process has."""
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    gen_grad = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)[0]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        both = torch.stack([rec_grad, gen_grad])
        torch.distributed.all_reduce(both)
        rec_grad, gen_grad = both.div_(torch.distributed.get_world_size()).unbind(0)
    return (rec_grad.norm() / (gen_grad.norm() + 1e-4)).clamp(0, cap).detach()


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
