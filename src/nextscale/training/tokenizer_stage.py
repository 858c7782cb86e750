"""Stage 1: the multi-scale VQ-VAE. Pixel (L1 + L2) loss, the multi-scale VQ + commitment loss, optional
perceptual and adversarial terms, and dead-code revival."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from ..errors import NextscaleError
from ..runtime import check_finite
from ..tokenizer import VQVAE
from .common import autocast_context, batch_indices, check_training_device, param_groups
from .losses import PatchDiscriminator, PerceptualLoss, hinge_discriminator_loss


@dataclass
class TokenizerOptions:
    """The tokenizer's training settings (the architecture is `VQVAEConfig`)."""

    beta: float = 0.25  # commitment weight of the VQ loss (the reference's)
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    vq_weight: float = 1.0
    perceptual_weight: float = 0.0  # off by default: needs downloaded VGG weights
    adversarial_weight: float = 0.0  # off by default
    adversarial_start: int = 0  # step at which the discriminator's verdict enters the loss
    revive_every: int = 50  # steps between dead-code revivals; 0 disables
    revive_threshold: float = 0.05  # a code is dead when its EMA hits, summed over scales, fall below this
    eval_batches: int = 8

    def __post_init__(self):
        for name in ("beta", "l1_weight", "l2_weight", "vq_weight", "perceptual_weight", "adversarial_weight",
                     "revive_threshold"):  # fmt: skip
            check_finite(getattr(self, name), name.replace("_", "-"), 0.0)
        for name in ("adversarial_start", "revive_every"):
            if getattr(self, name) < 0:
                raise NextscaleError(f"{name.replace('_', '-')} must be ≥ 0, got {getattr(self, name)}")
        if self.eval_batches < 1:
            raise NextscaleError(f"eval_batches must be at least 1, got {self.eval_batches}")


def collate(dataset: Dataset, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[int(i)] for i in idx]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)


class TokenizerStage:
    def __init__(self, vae: VQVAE, train_data: Dataset, test_data: Dataset | None, config, options=None,
                 device="cpu"):  # fmt: skip
        check_training_device(torch.device(device), config.precision)
        self.model, self.train_data, self.test_data = vae.to(device), train_data, test_data
        self.config, self.options, self.device = config, options or TokenizerOptions(), torch.device(device)
        self.optimizer = torch.optim.AdamW(param_groups(vae, config.weight_decay), lr=config.lr, betas=config.betas)
        o = self.options
        self.perceptual = PerceptualLoss().to(device) if o.perceptual_weight > 0 else None
        self.discriminator = self.disc_optimizer = None
        if o.adversarial_weight > 0:
            self.discriminator = PatchDiscriminator().to(device)
            self.disc_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=config.lr, betas=(0.5, 0.9))

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        cfg, o = self.config, self.options
        img, _ = collate(self.train_data, batch_indices(step, len(self.train_data), cfg.batch_size, cfg.seed))
        img = img.to(self.device)
        with autocast_context(self.device, cfg.precision):
            out = self.model(img, o.beta)
            rec = out.reconstruction.float()
            l1, l2 = (rec - img).abs().mean(), (rec - img).square().mean()
            loss = o.l1_weight * l1 + o.l2_weight * l2 + o.vq_weight * out.vq_loss
            if self.perceptual is not None:
                loss = loss + o.perceptual_weight * self.perceptual(rec, img)
            adversarial = self.discriminator is not None and step >= o.adversarial_start
            if adversarial:
                loss = loss - o.adversarial_weight * self.discriminator(rec).mean()
        loss.backward()
        if adversarial:
            self._discriminator_step(img, rec.detach())
        if o.revive_every and (step + 1) % o.revive_every == 0:
            self._revive_dead_codes(generator)
        return {"loss": loss.item(), "l2": l2.item(), "vq": out.vq_loss.item()}

    def _discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        self.disc_optimizer.zero_grad(set_to_none=True)
        hinge_discriminator_loss(self.discriminator(real), self.discriminator(fake)).backward()
        self.disc_optimizer.step()

    @torch.no_grad()
    def _revive_dead_codes(self, generator: torch.Generator) -> None:
        """Moves codes no scale has used lately onto encoder outputs of a fresh batch, and resets their stats.

        A code is dead when its EMA hit count, summed over scales, is below `revive_threshold` hits per step.
        """
        quantize = self.model.quantize
        dead = (quantize.ema_vocab_hit_SV.sum(0) < self.options.revive_threshold).nonzero().flatten()
        if dead.numel() == 0:
            return
        n = len(self.train_data)
        idx = torch.randint(n, (min(n, self.config.batch_size),), generator=generator)
        img, _ = collate(self.train_data, idx)
        f = self.model.encode(img.to(self.device)).float()
        pool = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
        pick = torch.randint(pool.shape[0], (dead.numel(),), generator=generator).to(self.device)
        quantize.embedding.weight[dead] = pool[pick]
        quantize.ema_vocab_hit_SV[:, dead] = quantize.ema_vocab_hit_SV.mean(1, keepdim=True)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Reconstruction PSNR on the test data, and codebook usage per scale (from the training EMA)."""
        vae, data = self.model, self.test_data if self.test_data is not None else self.train_data
        psnr_sum, count = 0.0, 0
        n = min(len(data), self.options.eval_batches * self.config.batch_size)
        for start in range(0, n, self.config.batch_size):
            img, _ = collate(data, torch.arange(start, min(n, start + self.config.batch_size)))
            rec = vae.reconstruct(img.to(self.device))
            mse = (rec - img.to(self.device)).div(2).square().flatten(1).mean(1)  # in [0, 1] units
            psnr_sum += (10 * torch.log10(1 / mse.clamp_min(1e-10))).sum().item()
            count += img.shape[0]
        tokens_per_scale = [self.config.batch_size * pn * pn for pn in vae.patch_nums]
        usage = vae.quantize.usage(tokens_per_scale)
        metrics = {"psnr": psnr_sum / count, "usage_mean": sum(usage) / len(usage)}
        metrics.update({f"usage_{pn}": u for pn, u in zip(vae.patch_nums, usage)})
        return metrics

    def extra_state(self) -> dict:
        state = {"record_hit": self.model.quantize.record_hit}
        if self.discriminator is not None:
            state["discriminator"] = self.discriminator.state_dict()
            state["disc_optimizer"] = self.disc_optimizer.state_dict()
        return state

    def load_extra_state(self, state: dict) -> None:
        self.model.quantize.record_hit = state.get("record_hit", 0)
        if self.discriminator is not None and "discriminator" in state:
            self.discriminator.load_state_dict(state["discriminator"])
            self.disc_optimizer.load_state_dict(state["disc_optimizer"])
