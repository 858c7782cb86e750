"""The speed paths (bf16 autocast, torch.compile, the benchmark) on CPU: their logic, not their speed."""

import json
import os
import subprocess
import sys

import pytest
import torch

from nextscale.bench import bench_sampling, count_flops, matmul_rate
from nextscale.cli import main
from nextscale.sampling import fhat_to_images, sample


def test_scale_callback_sees_every_scale(tiny_models):
    vae, var = tiny_models
    seen, fhats = [], []
    out = sample(vae, var, [0], seed=0, on_scale=lambda si, f_hat: (seen.append(si), fhats.append(f_hat.clone())))
    assert seen == list(range(len(var.patch_nums)))
    # f̂ grows scale by scale, and the last one is what the final image decodes from
    assert all(not torch.equal(a, b) for a, b in zip(fhats, fhats[1:]))
    assert torch.equal(fhat_to_images(vae, fhats[-1]), out.images)


def test_flop_counting_and_matmul_rate():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert count_flops(lambda: a @ b) == 2 * 64 * 32 * 16
    assert matmul_rate(torch.device("cpu"), torch.float32, size=128, seconds=0.05) > 1e8


def test_bench_reports_every_phase(tmp_path, capsys):
    result = bench_sampling("tiny", batch_size=2, runs=1, warmup=1, train_batch_size=2)
    names = [p.name for p in result.phases]
    assert names == ["transformer steps", "decode", "whole sample"]
    whole = result.phases[-1]
    assert whole.flops == result.phases[0].flops + result.phases[1].flops > 0
    assert whole.seconds > 0 and whole.ratio > 0 and len(result.per_scale_seconds) == 4
    assert result.training["tokens_per_second"] > 0 and result.training["ratio"] > 0
    assert (
        main(
            [
                "bench",
                "--preset",
                "tiny",
                "--batch-size",
                "2",
                "--runs",
                "1",
                "--device",
                "cpu",
                "--json",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    assert "whole sample" in capsys.readouterr().out
    assert json.loads((tmp_path / "b.json").read_text())["phases"][2]["ratio"] > 0


def test_compiled_step_covers_a_ten_scale_pyramid(capfd):
    """Ten scales mean ten graphs: more than dynamo's default recompile limit of 8."""
    from nextscale.tokenizer import VQVAE, VQVAEConfig
    from nextscale.transformer import VAR, VARConfig

    pn = tuple(range(1, 11))
    vae = VQVAE(
        VQVAEConfig(
            vocab_size=16,
            z_channels=4,
            ch=8,
            ch_mult=(1,),
            num_res_blocks=1,
            using_sa=False,
            using_mid_sa=False,
            norm_groups=4,
            patch_nums=pn,
        )
    ).eval()
    var = VAR(
        VARConfig(depth=1, embed_dim=16, num_heads=2, num_classes=3, vocab_size=16, latent_channels=4, patch_nums=pn)
    ).eval()
    plain = sample(vae, var, [0, 1], seed=0)
    compiled = sample(vae, var, [0, 1], seed=0, compile="eager")
    assert all(torch.equal(a, b) for a, b in zip(plain.tokens, compiled.tokens))
    assert "recompile_limit" not in capfd.readouterr().err


@pytest.mark.cpu_only
def test_cpu_attention_flops_are_counted():
    """torch's counter knows only the CUDA attention kernels; on CPU attention must not count as free."""
    from torch.utils.flop_counter import sdpa_flop_count

    q, k = torch.randn(2, 4, 8, 16, requires_grad=True), torch.randn(2, 4, 24, 16)
    forward = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k))
    assert forward == sdpa_flop_count(q.shape, k.shape, k.shape) > 0
    both = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k).sum().backward())
    assert both > 2 * forward


def numbers_printed_by(script: str) -> list[int]:
    """Runs `script` in a fresh interpreter: memory settings and peaks are per process."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return [int(word) for word in out.split()]


FAULTS_SCRIPT = """
import resource, torch
from nextscale.runtime import freed_memory_reused, reuse_freed_memory
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(64 * 2**20 // 4)  # 64 MiB: above glibc's mmap threshold, touched by the fill
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
default = faults()
with freed_memory_reused():
    faults()
    scoped = min(faults() for _ in range(3))
after = faults()  # the scope has ended: large blocks are unmapped again
available = reuse_freed_memory() and reuse_freed_memory()
print(int(available), default, scoped, after, min(faults() for _ in range(3)))  # first rounds may grow the heap
"""


@pytest.mark.cpu_only
def test_reuse_freed_memory_stops_page_faults_on_large_blocks():
    available, default, scoped, after, reused = numbers_printed_by(FAULTS_SCRIPT)
    if not available:
        pytest.skip("this C library has no mallopt (not glibc): freed memory cannot be kept for reuse")
    assert default >= 5 * 32  # at least every 2 MiB (huge) page of every block faulted; 16,000 with 4 KiB pages
    assert reused < default / 20 and scoped < default / 20
    assert after > 10 * max(scoped, 1)  # after the block, the kept memory went back: touching it faults again


@pytest.mark.cpu_only
@pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="no /proc/self/clear_refs to reset the peak"
)
def test_peak_memory_is_measured_from_the_reset():
    script = """
import torch
from nextscale.bench import peak_memory_bytes, reset_peak_memory
cpu = torch.device("cpu")
block = torch.ones(512 * 2**20 // 4)
del block
before = peak_memory_bytes(cpu)
reset_peak_memory(cpu)
low = peak_memory_bytes(cpu)  # the 512 MiB block was unmapped when freed: not in the new peak
block = torch.ones(256 * 2**20 // 4)
print(before, low, peak_memory_bytes(cpu))
"""
    before, low, high = numbers_printed_by(script)
    assert before >= low + 400 * 2**20 and high >= low + 200 * 2**20


def test_sampling_loop_never_reads_a_tensor_back_to_the_host(tiny_models, monkeypatch):
    """On a GPU each read-back would stall the loop until the device catches up."""
    vae, var = tiny_models

    def refuse(self, *args, **kwargs):
        raise AssertionError("the sampler read a tensor back to the host")

    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    out = sample(vae, var, [0, 1], seed=0, cfg=2.0, top_k=8, top_p=0.9, more_smooth=True)
    monkeypatch.undo()
    assert out.images.shape[0] == 2
