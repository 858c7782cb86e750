"""`nextscale bench --train`: the training step's numbers in one process, and under torchrun (gloo on the CPU)
with DDP and FSDP2, where FSDP must hold less parameter + gradient + optimizer memory per rank."""

import json
import subprocess

import pytest

from nextscale.bench.training import bench_train_step, bench_training_matrix, matrix_table, train_command
from nextscale.cli import main
from tests.helpers import PROCESS_ENV, nextscale_command

pytestmark = pytest.mark.cpu_only

TINY = ["--preset", "tiny", "--device", "cpu", "--batch-size", "4", "--train-steps", "1", "--warmup", "1"]


@pytest.mark.slow
def test_one_process_reports_sane_numbers():
    (r,) = bench_train_step("tiny", batch_size=4, device="cpu", steps=2, warmup=1)
    assert (r["world"], r["mode"], r["rank"], r["local_batch"]) == (1, "single", 0, 4)
    assert r["tokens_per_step"] == 4 * 30  # scales 1, 2, 3, 4
    for key in ("tokens_per_s", "step_s", "flops", "floor_s", "matmul_gflops", "peak_memory_gib", "state_gib"):
        assert r[key] > 0, key
    assert r["tokens_per_s"] == pytest.approx(r["tokens_per_step"] / r["step_s"])
    assert r["ratio"] == pytest.approx(r["step_s"] / r["floor_s"]) and r["ratio"] > 1  # nothing beats the floor
    assert r["flops"] == r["local_flops"] and len(r["step_times_s"]) == 2
    # fp32 AdamW: the weights, their gradients and two moments (plus one step counter per tensor)
    state = r["state_gib"] * 2**30
    assert 16 * r["num_params"] <= state < 16 * r["num_params"] + 4096
    assert r["params_gib"] == r["grads_gib"] == pytest.approx(r["optimizer_gib"] / 2, rel=0.01)


@pytest.mark.parametrize("trainable", ["adaln,head", "lora:4"])
def test_frozen_parameters_hold_no_gradient_and_no_optimizer_state(trainable):
    (r,) = bench_train_step("tiny", batch_size=2, device="cpu", steps=1, warmup=0, trainable=trainable)
    assert r["trainable"] == trainable and 0 < r["trained_params"] < r["num_params"]
    assert r["grads_gib"] * 2**30 == 4 * r["trained_params"]  # fp32 gradients of what learns, nothing else
    assert 8 * r["trained_params"] <= r["optimizer_gib"] * 2**30 < 8 * r["trained_params"] + 4096


def test_fewer_scales_mean_fewer_tokens():
    (r,) = bench_train_step("tiny", batch_size=2, device="cpu", steps=1, warmup=0, patch_nums=(1, 2))
    assert r["tokens_per_step"] == 2 * 5 and r["patch_nums"] == [1, 2]


def test_a_depth_times_the_sweeps_size_on_the_presets_shapes():
    from nextscale.registry import architecture
    from nextscale.transformer import VAR, VARConfig

    (r,) = bench_train_step("tiny", batch_size=2, device="cpu", steps=1, warmup=0, depth=2, width_per_depth=16)
    _, preset = architecture("tiny")
    shapes = {k: getattr(preset, k) for k in ("vocab_size", "num_classes", "latent_channels", "patch_nums")}
    sized = VARConfig.from_depth(2, 16, **shapes)
    assert (sized.embed_dim, sized.num_heads) == (32, 2)
    assert r["model"].startswith("depth 2, width 32")
    assert r["num_params"] == sum(p.numel() for p in VAR(sized).parameters())


def torchrun(tmp_path, *extra: str) -> list[dict]:
    out = tmp_path / f"bench{'-'.join(extra)}.json"
    cmd = nextscale_command(["bench", "--train", *TINY, "--json", str(out), *extra], nproc=2)
    done = subprocess.run(cmd, env=PROCESS_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    mode = "fsdp" if "--fsdp" in extra else "ddp"
    assert f"| 2 | {mode} |" in done.stdout  # rank 0 prints the table, once
    assert done.stdout.count("| 2 |") == 1
    return json.loads(out.read_text())["ranks"]


@pytest.mark.distributed
def test_two_processes_fsdp_holds_less_state_per_rank_than_ddp(tmp_path):
    ddp, fsdp = torchrun(tmp_path), torchrun(tmp_path, "--fsdp")
    for records, mode in ((ddp, "ddp"), (fsdp, "fsdp")):
        assert [r["rank"] for r in records] == [0, 1]
        assert all(r["world"] == 2 and r["mode"] == mode and r["local_batch"] == 2 for r in records)
        assert all(r["tokens_per_s"] > 0 and r["peak_memory_gib"] > 0 and r["ratio"] > 0 for r in records)
        assert records[0]["flops"] == sum(r["local_flops"] for r in records)
    assert ddp[0]["num_params"] == fsdp[0]["num_params"]
    assert ddp[0]["flops"] == fsdp[0]["flops"]  # the same computation, however the weights are held
    assert ddp[0]["state_gib"] == ddp[1]["state_gib"] >= 16 * ddp[0]["num_params"] / 2**30  # a full copy each
    for d, f in zip(ddp, fsdp):
        assert f["state_gib"] < 0.6 * d["state_gib"]  # about half: each rank holds its shard
    table = matrix_table([ddp, fsdp])
    assert "| 2 | ddp |" in table and "| 2 | fsdp |" in table and "FSDP ÷ DDP" in table


def test_the_matrix_launches_torchrun_on_a_free_port():
    cmd = train_command(
        2,
        True,
        "x.json",
        preset="tiny",
        batch_size=4,
        device="cpu",
        precision=None,
        steps=1,
        warmup=0,
        patch_nums=(1, 2),
        trainable="head",
        depth=3,
        width_per_depth=16,
    )
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    assert "--fsdp" in cmd and "--bench-scales" in cmd and "1,2" in cmd
    given = " ".join(cmd)  # every setting reaches the processes it launches
    assert "--trainable head" in given and "--depth 3 --width-per-depth 16" in given
    alone = train_command(
        1, False, "x.json", preset="tiny", batch_size=4, device="cpu", precision=None, steps=1, warmup=0
    )
    assert alone[1:3] == ["-m", "nextscale"] and "--fsdp" not in alone


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--train", "--bench-scales", "4,2"], "--bench-scales"),
        (["--train", "--bench-scales", "1,x"], "--bench-scales"),
        (["--train", "--train-steps", "0"], "--train-steps"),
        (["--train", "--fsdp"], "torchrun"),
        (["--fsdp"], "--fsdp"),
        (["--bench-scales", "1,2"], "--bench-scales"),
        (["--train", "--train-matrix"], "--train-matrix"),
        (["--train", "--compile", "inductor"], "--compile"),
        (["--train-matrix", "--nprocs", "1,two"], "--nprocs"),
        (["--train-matrix", "--nprocs", "0"], "--nprocs"),
        (["--train-matrix", "--nprocs", "3", "--batch-size", "4"], "--batch-size"),
        (["--depth", "2"], "--depth"),
        (["--train", "--depth", "0"], "--depth"),
    ],
)
def test_bad_input_ends_in_one_line_and_exit_code_2(argv, flag, capsys):
    assert main(["bench", "--preset", "tiny", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err, err


def test_the_matrix_refuses_unknown_modes():
    with pytest.raises(ValueError, match="modes"):
        bench_training_matrix("tiny", nprocs=(2,), modes=("zero",))
