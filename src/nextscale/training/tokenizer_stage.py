"""Stage 1: the multi-scale VQ-VAE. Pixel (L1 + L2) loss, the multi-scale VQ + commitment loss, optional
perceptual and adversarial terms, and dead-code revival."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..data import stack_items
from ..seeding import derive_seed
from ..tokenizer import VQVAE
from ..tokenizer.layers import AttnBlock
from .checkpoint import ModuleAndOptimizer
from .common import check_training_device
from .config import TokenizerOptions
from .distributed import Distributed
from .feed import evaluation_batches, step_batches, sum_over_ranks
from .losses import PatchDiscriminator, PerceptualLoss, adaptive_weight, hinge_discriminator_loss
from .monitor import metric_name


class TokenizerStage:
    kind = "tokenizer"
    supports_fsdp = False  # the tokenizer fits one device; DDP replicates it

    def __init__(
        self,
        vae: VQVAE,
        train_data: Dataset,
        test_data: Dataset | None,
        config,
        options=None,
        device="cpu",
        dist: Distributed | None = None,
    ):
        check_training_device(torch.device(device), config.precision)
        self.model = self.net = vae
        self.train_data, self.test_data = train_data, test_data
        self.config, self.options, self.device = config, options or TokenizerOptions(), torch.device(device)
        self.dist = dist or Distributed()
        self.local = self.dist.local_batch(config.batch_size)
        self.tokens_per_step = vae.config.num_tokens
        o = self.options
        self.perceptual = None
        if o.perceptual_weight > 0:
            self.perceptual = PerceptualLoss(o.perceptual_weights, o.lpips_weights).to(device)
        self.discriminator = self.disc_optimizer = None
        if o.adversarial_weight > 0:
            torch.manual_seed(derive_seed(config.seed, 6))  # the same discriminator on every rank
            self.discriminator = PatchDiscriminator().to(device)
            self.disc_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=config.lr, betas=(0.5, 0.9))
            self.disc_state = ModuleAndOptimizer(self.discriminator, self.disc_optimizer)
        self._disc_inputs = None
        self.attention_blocks = [m for m in vae.modules() if isinstance(m, AttnBlock)]
        if o.trainable == "decoder":  # the tokens stay as they were: their encoder and codebook take no step
            vae.train_decoder_only()

    def batches(self, start: int, end: int):
        for img, _ in step_batches(self.train_data, self.config, self.local, start, end, self.device):
            yield img

    def train_step(self, img: torch.Tensor, step: int, generator: torch.Generator):
        o = self.options
        out = self.net(img, o.beta)
        rec = out.reconstruction.float()
        l1, l2 = (rec - img).abs().mean(), (rec - img).square().mean()
        reconstruction = o.l1_weight * l1 + o.l2_weight * l2
        metrics = {"l1": l1.detach(), "l2": l2.detach(), "vq": out.vq_loss.detach()}
        if self.perceptual is not None:
            perceptual = self.perceptual(rec, img)
            reconstruction = reconstruction + o.perceptual_weight * perceptual
            metrics["perceptual"] = perceptual.detach()
        loss = reconstruction + o.vq_weight * out.vq_loss
        self._disc_inputs = None
        if self.discriminator is not None and step >= o.adversarial_start:
            self.discriminator.requires_grad_(False)
            generator = -self.discriminator(rec).mean()
            self.discriminator.requires_grad_(True)
            weight = o.adversarial_weight
            if o.adaptive_weight:
                weight = weight * adaptive_weight(reconstruction, generator, self.model.decoder.conv_out.weight)
            loss = loss + weight * generator
            metrics["adversarial_weight"] = torch.as_tensor(weight, device=self.device).detach().float()
            self._disc_inputs = (img, rec.detach())
        return loss, metrics

    def after_backward(self, step: int) -> None:
        """Zeroes the attention key biases' gradients, then the discriminator's own step on this batch.

        A key bias shifts every score of a query alike, which the softmax ignores: its true gradient is zero,
        and what backward leaves is float noise that Adam would turn into steps of the full learning rate
        (and that differs with the world size). The discriminator's gradients are averaged over ranks by hand
        (it is not wrapped in DDP: it runs twice per step)."""
        for block in self.attention_blocks:
            if block.qkv.bias is not None and block.qkv.bias.grad is not None:
                block.qkv.bias.grad[block.channels : 2 * block.channels] = 0
        if self._disc_inputs is None:
            return
        real, fake = self._disc_inputs
        self.disc_optimizer.zero_grad(set_to_none=True)
        hinge_discriminator_loss(self.discriminator(real), self.discriminator(fake)).backward()
        if self.dist.enabled:
            for p in self.discriminator.parameters():
                torch.distributed.all_reduce(p.grad)
                p.grad.div_(self.dist.world)
        self.disc_optimizer.step()

    def after_step(self, step: int, generator: torch.Generator) -> None:
        o = self.options
        if o.revive_every and o.trainable == "all" and (step + 1) % o.revive_every == 0:
            self._revive_dead_codes(step, generator)

    @torch.no_grad()
    def _revive_dead_codes(self, step: int, generator: torch.Generator) -> None:
        """Moves codes no scale has used lately onto encoder outputs of a batch drawn from the step's generator
        (the same on every rank, so the replicas stay equal), and resets their stats.

        A code is dead when its EMA hit count, summed over scales, is below `revive_threshold` hits per step.
        """
        quantize = self.model.quantize
        dead = (quantize.ema_vocab_hit_SV.sum(0) < self.options.revive_threshold).nonzero().flatten()
        if dead.numel() == 0:
            return
        n = len(self.train_data)
        idx = torch.randint(n, (min(n, self.config.batch_size),), generator=generator)
        keys = [(int(i), derive_seed(self.config.seed, 7, step, j), 0) for j, i in enumerate(idx)]  # seeded crops
        img, _ = stack_items([self.train_data[key] for key in keys])
        f = self.model.encode(img.to(self.device)).float()
        pool = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
        pick = torch.randint(pool.shape[0], (dead.numel(),), generator=generator).to(self.device)
        quantize.embedding.weight[dead] = pool[pick]
        quantize.ema_vocab_hit_SV[:, dead] = quantize.ema_vocab_hit_SV.mean(1, keepdim=True)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Reconstruction PSNR on the test data (`eval_batches` global batches split over the ranks; `train_psnr`
        on the training data when there is no test data), and codebook usage per scale (from the training EMA)."""
        vae, cfg = self.model, self.config
        data = self.test_data if self.test_data is not None else self.train_data
        sums = torch.zeros(2)
        batches = evaluation_batches(
            data, self.options.eval_batches * cfg.batch_size, self.local.stop - self.local.start, cfg.seed, self.dist
        )
        for img, _ in batches:
            img = img.to(self.device)
            mse = (vae.reconstruct(img) - img).div(2).square().flatten(1).mean(1)  # in [0, 1] units
            sums += torch.stack([(10 * torch.log10(1 / mse.clamp_min(1e-10))).sum().cpu(), torch.tensor(len(img))])
        psnr_sum, count = sum_over_ranks(sums, self.dist, self.device).tolist()
        tokens_per_scale = [cfg.batch_size * pn * pn for pn in vae.patch_nums]
        usage = vae.quantize.usage(tokens_per_scale)
        psnr = metric_name("psnr", self.test_data, held_out="")
        metrics = {psnr: psnr_sum / count, "usage_mean": sum(usage) / len(usage)}
        metrics.update({f"usage_{pn}": u for pn, u in zip(vae.patch_nums, usage)})
        return metrics

    def extra_tensors(self) -> dict:
        if self.discriminator is None:
            return {}
        model_sd, optim_sd = self.disc_state.tensors()
        return {"discriminator": model_sd, "disc_optim": optim_sd}

    def load_extra_tensors(self, tensors: dict) -> None:
        if self.discriminator is not None:
            self.disc_state.load(tensors["discriminator"], tensors["disc_optim"])

    def extra_record(self) -> dict:
        fresh = self.discriminator is not None and self.disc_state.fresh
        return {"record_hit": self.model.quantize.record_hit, "disc_fresh": fresh}

    def load_extra_record(self, record: dict) -> None:
        self.model.quantize.record_hit = record.get("record_hit", 0)
        if record.get("disc_fresh") and self.discriminator is not None:
            self.disc_state.forget_steps()  # it had not stepped yet when saved
