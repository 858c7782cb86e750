"""`bench --orders` counts what each order costs: one pass per scale for VAR, one per token for raster order."""

import json

import pytest

from nextscale.bench.orders import bench_orders, pyramid, table
from nextscale.cli import main

pytestmark = pytest.mark.cpu_only


def test_pyramids_are_the_reference_schedules_up_to_the_latent():
    assert pyramid(8) == (1, 2, 3, 4, 5, 6, 8)
    assert pyramid(16) == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    assert pyramid(9) == (1, 2, 3, 4, 6, 9)


def test_both_orders_are_timed_and_counted_at_each_latent_and_batch():
    result = bench_orders("tiny", latents=(2, 4), batch_sizes=(1, 3), runs=1, warmup=0)
    rows = {(r["order"], r["latent"], r["batch_size"]): r for r in result["rows"]}
    assert len(rows) == 8
    for batch in (1, 3):
        assert rows["VAR", 2, batch]["forward_passes"] == 2 and rows["VAR", 4, batch]["forward_passes"] == 4
        assert rows["raster", 2, batch]["forward_passes"] == 4 and rows["raster", 4, batch]["forward_passes"] == 16
    for r in rows.values():
        assert r["gflop_per_image"] > 0 and r["seconds_per_image"] > 0 and r["decode_seconds_per_image"] > 0
    # the same blocks: the raster model differs from VAR only by its embeddings and positions
    assert abs(result["parameters"]["raster"] - result["parameters"]["VAR"]) < 0.2 * result["parameters"]["VAR"]
    # both orders end with the same decode of the same latent
    for latent in (2, 4):
        decode = rows["VAR", latent, 1]["decode_gflop_per_image"]
        assert (
            decode == rows["raster", latent, 1]["decode_gflop_per_image"] < rows["raster", latent, 1]["gflop_per_image"]
        )
    # FLOPs per image do not depend on the batch
    assert rows["raster", 4, 1]["gflop_per_image"] == pytest.approx(rows["raster", 4, 3]["gflop_per_image"])
    assert table(result).count("raster") >= 4
    assert result["cpu_steal"] is None or 0 <= result["cpu_steal"] <= 1


def test_the_command_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "orders.json"
    argv = ["bench", "--orders", "--preset", "tiny", "--device", "cpu", "--latents", "2", "--batch-sizes", "2"]
    assert main([*argv, "--depth", "1", "--width-per-depth", "16", "--runs", "1", "--json", str(out)]) == 0
    assert "raster÷VAR" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["depth"] == 1 and [r["order"] for r in record["rows"]] == ["VAR", "raster"]
