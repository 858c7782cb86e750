"""Stage 2: the VAR transformer, teacher-forced on the frozen tokenizer's token pyramid."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..data import stack_items
from ..errors import NextscaleError
from ..pretrained import short_fingerprint
from ..tokenizer import VQVAE
from ..transformer import VAR, RasterAR
from .common import check_training_device, newest_scale_weight, progressive_scale
from .config import VAROptions
from .distributed import Distributed
from .feed import evaluation_batches, evaluation_size, step_batches, sum_over_ranks
from .monitor import metric_name

ENCODE_BATCH = 256  # images per tokenizer call when a dataset is encoded once (tokenize uses the same)


class EncodedDataset(Dataset):
    """An in-memory image dataset (the digits, Fashion-MNIST) as (ids, label) records, as token shards give them,
    encoded where first read, ENCODE_BATCH images at a time, and kept: a run encodes only what it reads (an
    evaluation reads a few batches of a large test set; a finished run that is resumed reads nothing)."""

    in_memory = deterministic = True

    def __init__(self, data: Dataset, vae: VQVAE, device, batch_size: int = ENCODE_BATCH):
        self.source, self.vae, self.device, self.batch_size = data, vae, device, batch_size
        self.num_classes = getattr(data, "num_classes", None)
        self.chunks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.source)

    def chunk(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index not in self.chunks:
            start = index * self.batch_size
            x, y = stack_items([self.source[i] for i in range(start, min(len(self), start + self.batch_size))])
            self.chunks[index] = torch.cat(self.vae.img_to_idx(x.to(self.device), check=False), dim=1).cpu(), y
        return self.chunks[index]

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        ids, labels = self.chunk(i // self.batch_size)
        return ids[i % self.batch_size], int(labels[i % self.batch_size])


def encoded(data: Dataset | None, vae: VQVAE, device) -> Dataset | None:
    """In-memory, deterministic image data is encoded once; token shards and image folders stay as they are."""
    images = data is not None and not hasattr(data, "vocab_size")  # token shards carry their codebook's size
    if images and getattr(data, "in_memory", False) and getattr(data, "deterministic", False):
        return EncodedDataset(data, vae, device)
    return data


class VARStage:
    """Teacher forcing on token pyramids: from token shards (ids → the transformer's input on the device, per
    batch) or from images encoded per batch by the frozen tokenizer."""

    kind = VAR.model_type
    supports_fsdp = True

    def __init__(
        self,
        vae: VQVAE,
        var: VAR,
        train_data: Dataset,
        test_data: Dataset | None,
        config,
        options: VAROptions | None = None,
        device="cpu",
        dist: Distributed | None = None,
    ):
        for data in (train_data, test_data):
            check_classes(data, var)
            check_token_data(data, vae)
        self.device, self.dist = torch.device(device), dist or Distributed()
        check_training_device(self.device, config.precision)
        self.model = self.net = var
        self.vae = vae.to(device).eval().requires_grad_(False)
        self.train_data, self.test_data = encoded(train_data, self.vae, device), encoded(test_data, self.vae, device)
        self.config, self.options = config, options or VAROptions()
        self.local = self.dist.local_batch(config.batch_size)
        self.tokens_per_step = var.config.num_tokens
        self.drop_path = torch.linspace(0, self.options.drop_path_rate, var.config.depth)  # per block, as set_drop_path

    def _pyramid(self, x: torch.Tensor, labels: torch.Tensor):
        """(labels, transformer input, targets) from a batch of ids (token data) or images."""
        if x.dtype == torch.long:
            ids = [x[:, b:e] for b, e in self.model.begin_ends]
        else:
            ids = self.vae.img_to_idx(x, check=False)  # the datasets give [-1, 1] images
        return labels, self.vae.idx_to_var_input(ids), torch.cat(ids, dim=1)

    def batches(self, start: int, end: int):
        for x, labels in step_batches(self.train_data, self.config, self.local, start, end, self.device):
            yield self._pyramid(x, labels)

    def train_step(self, batch, step: int, generator: torch.Generator):
        cfg, o, model = self.config, self.options, self.model
        labels, x, target = batch
        # Label dropout and drop path for the whole global batch, then this rank's slice.
        B = cfg.batch_size
        drop = (torch.rand(B, generator=generator) < o.cond_drop_rate)[self.local]
        drop = drop.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else drop
        labels = torch.where(drop, model.num_classes, labels)
        keep = None
        if o.drop_path_rate > 0:
            u = torch.rand(model.config.depth, 2, B, generator=generator)[:, :, self.local]
            keep = u >= self.drop_path.view(-1, 1, 1)
            keep = keep.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else keep
        K = len(model.patch_nums)
        last = progressive_scale(step, cfg, K)
        ed = model.begin_ends[last][1]
        logits = self.net(labels, x[:, : ed - 1], path_keep=keep)
        V = logits.shape[-1]
        ce = F.cross_entropy(
            logits.float().reshape(-1, V),
            target[:, :ed].reshape(-1),
            reduction="none",
            label_smoothing=o.label_smoothing,
        ).view(-1, ed)
        # Every token weighs the same (so the large scales dominate, as in the reference); under the
        # progressive curriculum the newest scale's weight ramps up.
        weight = torch.ones(ed, device=ce.device)
        weight[model.begin_ends[last][0] : ed] = newest_scale_weight(step, cfg, K)
        loss = (ce * weight).sum(1).mean() / weight.sum()
        hit = top1_hits(logits.detach(), target[:, :ed])
        metrics = {"acc": hit.mean()}
        for (b, e), pn in zip(model.begin_ends[: last + 1], model.patch_nums):
            metrics[f"loss_{pn}"], metrics[f"acc_{pn}"] = ce[:, b:e].mean().detach(), hit[:, b:e].mean()
        return loss, metrics

    def after_backward(self, step: int) -> None:
        pass

    def after_step(self, step: int, generator: torch.Generator) -> None:
        pass

    def flops_key(self, step: int) -> int:
        """What a step's FLOPs depend on besides the model: the last scale the curriculum trains."""
        return progressive_scale(step, self.config, len(self.model.patch_nums))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Per-scale cross-entropy and token accuracy on the test data (no label dropout), over
        `eval_batches` global batches split over the ranks; `val_…`, or `train_…` on the training data when there
        is no test data."""
        data = self.test_data if self.test_data is not None else self.train_data
        L, cfg = self.model.config.num_tokens, self.config
        sums = torch.zeros(2, L)
        batches = evaluation_batches(
            data, self.options.eval_batches * cfg.batch_size, self.local.stop - self.local.start, cfg.seed, self.dist
        )
        for x, labels in batches:
            labels, x, target = self._pyramid(x.to(self.device), labels.to(self.device))
            logits = self.net(labels, x).float()
            sums[0] += F.cross_entropy(logits.transpose(1, 2), target, reduction="none").sum(0).cpu()
            sums[1] += top1_hits(logits, target).sum(0).cpu()
        loss_sum, hit_sum = sum_over_ranks(sums, self.dist, self.device)
        n = evaluation_size(data, self.options.eval_batches * cfg.batch_size, self.dist)
        metrics = {"loss": (loss_sum.sum() / (n * L)).item(), "acc": (hit_sum.sum() / (n * L)).item()}
        for (begin, end), pn in zip(self.model.begin_ends, self.model.patch_nums):
            metrics[f"loss_{pn}"] = (loss_sum[begin:end].sum() / (n * (end - begin))).item()
            metrics[f"acc_{pn}"] = (hit_sum[begin:end].sum() / (n * (end - begin))).item()
        return {metric_name(k, self.test_data): v for k, v in metrics.items()}

    def extra_tensors(self) -> dict:
        return {}

    def load_extra_tensors(self, tensors: dict) -> None:
        pass

    def extra_record(self) -> dict:
        return {}

    def load_extra_record(self, record: dict) -> None:
        pass


class RasterStage(VARStage):
    """Teacher forcing on one token map in raster order (`RasterAR`, a single-scale tokenizer): the input is the
    map's tokens but the last, the targets all of them; everything else is VAR's step."""

    kind = RasterAR.model_type

    def _pyramid(self, x: torch.Tensor, labels: torch.Tensor):
        ids = x if x.dtype == torch.long else self.vae.img_to_idx(x, check=False)[0]
        return labels, ids[:, :-1], ids


def top1_hits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1.0 where the target's logit is the largest, else 0.0 (teacher-forced top-1 accuracy). Against the max
    value rather than argmax, which is several times slower on CPUs, and at small model sizes was a tenth of the
    training step; only an exact tie with another logit counts differently (as a hit)."""
    return (logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) >= logits.amax(-1)).float()


def check_classes(data, var: VAR) -> None:
    """The model's classes are the data's: with more, some are never trained (and are drawn anyway); with fewer,
    labels fall out of range."""
    classes = getattr(data, "num_classes", None)
    if classes is not None and classes != var.num_classes:
        raise NextscaleError(
            f"the data has {classes} classes and the model {var.num_classes}: give the model the data's "
            f"(num_classes={classes})"
        )


def check_token_data(data, vae: VQVAE) -> None:
    """Token shards must come from this tokenizer: its codebook and scales, and its weights (by fingerprint)."""
    if data is None or not hasattr(data, "vocab_size"):
        return
    if data.vocab_size != vae.config.vocab_size or tuple(data.patch_nums) != tuple(vae.config.patch_nums):
        raise NextscaleError(
            f"{data.root} holds tokens of a tokenizer with {data.vocab_size} codes and scales "
            f"{tuple(data.patch_nums)}; the tokenizer has {vae.config.vocab_size} codes and scales "
            f"{tuple(vae.config.patch_nums)}"
        )
    if data.tokenizer is None:  # written before tokenizers were recorded: refusing would strand them
        warnings.warn(
            f"{data.root} does not record the tokenizer that made its tokens (an older nextscale wrote it): they "
            "cannot be checked against this tokenizer",
            stacklevel=2,
        )
    elif data.tokenizer != vae.tokens_fingerprint():
        raise NextscaleError(
            f"{data.root} holds tokens made by tokenizer {short_fingerprint(data.tokenizer)}, not by this one "
            f"({short_fingerprint(vae.tokens_fingerprint())}): tokenize the data with this tokenizer, or train with "
            "that one"
        )
