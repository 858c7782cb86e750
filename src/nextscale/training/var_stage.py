"""Stage 2: the VAR transformer, teacher-forced on the frozen tokenizer's token pyramid."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import NextscaleError
from ..runtime import check_finite
from ..tokenizer import VQVAE
from ..transformer import VAR
from .common import autocast_context, batch_indices, check_training_device, param_groups
from .tokenizer_stage import collate


@dataclass
class VAROptions:
    """The transformer's training settings (the architecture is `VARConfig`); defaults are the reference's."""

    cond_drop_rate: float = 0.1  # label dropout, so that the model also learns the unconditional branch
    drop_path_rate: float = 0.0  # stochastic depth at the last block (the reference: 0.1 · depth / 24)
    label_smoothing: float = 0.0
    init_adaln: float = 0.5  # the AdaLN scales and shifts start at this × the generic init
    init_adaln_gamma: float = 1e-5  # the residual gates start near zero (the reference's recipes: 1e-3 … 5e-6)
    init_head: float = 0.02
    init_std: float = -1.0  # < 0: sqrt(1 / (3 C))
    eval_batches: int = 8

    def __post_init__(self):
        check_finite(self.cond_drop_rate, "cond-drop-rate", 0.0, 1.0, open_high=True)
        check_finite(self.drop_path_rate, "drop-path-rate", 0.0, 1.0, open_high=True)
        check_finite(self.label_smoothing, "label-smoothing", 0.0, 1.0, open_high=True)
        for name in ("init_adaln", "init_adaln_gamma", "init_head", "init_std"):
            check_finite(getattr(self, name), name)
        if self.eval_batches < 1:
            raise NextscaleError(f"eval_batches must be at least 1, got {self.eval_batches}")

    def init_kwargs(self) -> dict:
        return dict(init_adaln=self.init_adaln, init_adaln_gamma=self.init_adaln_gamma, init_head=self.init_head,
                    init_std=self.init_std)  # fmt: skip


class TokenCache:
    """Token pyramids of a deterministic dataset, computed once: (N, L) targets and (N, L−1, Cvae) inputs."""

    def __init__(self, vae: VQVAE, data: Dataset, device, batch_size: int = 256):
        targets, inputs, labels = [], [], []
        for start in range(0, len(data), batch_size):
            img, y = collate(data, torch.arange(start, min(len(data), start + batch_size)))
            idx = vae.img_to_idx(img.to(device), check=False)  # the datasets give [-1, 1] images
            targets.append(torch.cat(idx, dim=1))
            inputs.append(vae.idx_to_var_input(idx))
            labels.append(y.to(device))
        self.targets, self.inputs, self.labels = torch.cat(targets), torch.cat(inputs), torch.cat(labels)

    def batch(self, idx: torch.Tensor):
        idx = idx.to(self.targets.device)
        return self.labels[idx], self.inputs[idx], self.targets[idx]


class VARStage:
    def __init__(self, var: VAR, vae: VQVAE, train_data: Dataset, test_data: Dataset | None, config,
                 options: VAROptions | None = None, device="cpu"):  # fmt: skip
        classes = getattr(train_data, "num_classes", None)
        if classes is not None and classes > var.num_classes:
            raise NextscaleError(f"the data has {classes} classes but the model only {var.num_classes}")
        self.device = torch.device(device)
        check_training_device(self.device, config.precision)
        self.model, self.vae = var.to(device), vae.to(device).eval().requires_grad_(False)
        self.train_data, self.test_data = train_data, test_data
        self.config, self.options = config, options or VAROptions()
        fused = self.device.type == "cuda"
        groups = param_groups(var, config.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused)
        self.train_cache = TokenCache(vae, train_data, device) if getattr(train_data, "deterministic", False) else None
        self.test_cache = TokenCache(vae, test_data, device) if test_data is not None else None

    def _tokens(self, data: Dataset, cache: TokenCache | None, idx: torch.Tensor):
        if cache is not None:
            return cache.batch(idx)
        img, labels = collate(data, idx)
        tokens = self.vae.img_to_idx(img.to(self.device), check=False)
        return labels.to(self.device), self.vae.idx_to_var_input(tokens), torch.cat(tokens, dim=1)

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        cfg = self.config
        idx = batch_indices(step, len(self.train_data), cfg.batch_size, cfg.seed)
        labels, x, target = self._tokens(self.train_data, self.train_cache, idx)
        with autocast_context(self.device, cfg.precision):
            logits = self.model(labels, x, cond_drop_rate=self.options.cond_drop_rate, generator=generator)
        V = logits.shape[-1]
        # A plain token mean: every token weighs the same, so the large scales dominate (as in the reference).
        loss = F.cross_entropy(
            logits.float().view(-1, V), target.view(-1), label_smoothing=self.options.label_smoothing
        )
        loss.backward()
        acc = (logits.argmax(-1) == target).float().mean()
        return {"loss": loss.item(), "acc": acc.item()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Per-scale cross-entropy and token accuracy on the test data (no label dropout)."""
        data = self.test_data if self.test_data is not None else self.train_data
        cache = self.test_cache if self.test_data is not None else self.train_cache
        L, bs = self.model.config.num_tokens, self.config.batch_size
        loss_sum, hit_sum, n = torch.zeros(L), torch.zeros(L), 0
        for start in range(0, min(len(data), self.options.eval_batches * bs), bs):
            labels, x, target = self._tokens(data, cache, torch.arange(start, min(len(data), start + bs)))
            logits = self.model(labels, x).float()
            loss_sum += F.cross_entropy(logits.transpose(1, 2), target, reduction="none").sum(0).cpu()
            hit_sum += (logits.argmax(-1) == target).float().sum(0).cpu()
            n += labels.shape[0]
        metrics = {"val_loss": (loss_sum.sum() / (n * L)).item(), "val_acc": (hit_sum.sum() / (n * L)).item()}
        for (begin, end), pn in zip(self.model.begin_ends, self.model.patch_nums):
            metrics[f"val_loss_{pn}"] = (loss_sum[begin:end].sum() / (n * (end - begin))).item()
            metrics[f"val_acc_{pn}"] = (hit_sum[begin:end].sum() / (n * (end - begin))).item()
        return metrics

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass
