"""`bench/sampling.py` and `bench/measure.py`: the sampling benchmark's logic on the CPU (its phases, FLOP counts
and the machine's matmul rate), not its speed."""

import json

import pytest
import torch

from nextscale.bench import bench_sampling, count_flops, matmul_rate
from nextscale.cli import main


def test_flop_counting_and_matmul_rate():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert count_flops(lambda: a @ b) == 2 * 64 * 32 * 16
    rate = matmul_rate(torch.device("cpu"), torch.float32, size=128, seconds=0.05)
    assert 0 < rate < float("inf")  # how fast is the benchmarks' business: a loaded machine may be very slow


@pytest.mark.slow
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


@pytest.mark.cpu_only
def test_cpu_attention_flops_are_counted():
    """torch's counter knows only the CUDA attention kernels; on CPU attention must not count as free."""
    from torch.utils.flop_counter import sdpa_flop_count

    q, k = torch.randn(2, 4, 8, 16, requires_grad=True), torch.randn(2, 4, 24, 16)
    forward = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k))
    assert forward == sdpa_flop_count(q.shape, k.shape, k.shape) > 0
    both = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k).sum().backward())
    assert both > 2 * forward
