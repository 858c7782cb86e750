"""The sharded-output helper behind `nextscale tokenize` and `sample --per-class`: a folder is claimed with its
plan, resumed only with the same plan, and its missing shards are split over the processes."""

import json
import multiprocessing
from pathlib import Path

import pytest

from nextscale.distributed import Distributed
from nextscale.errors import NextscaleError
from nextscale.sharded import ShardedOutput

PLAN = {"seed": 1, "classes": [0, 1, 2], "shard_size": 4}


def output(folder, plan=PLAN, count=5, dist=None, **kwargs):
    return ShardedOutput(folder, plan, count, dist, record="run.json", contents="samples drawn", **kwargs)


def test_a_new_folder_records_its_plan_and_a_rerun_resumes_it(tmp_path):
    made = output(tmp_path / "new", plan_key="plan").claim(runs=[])
    assert made == {"plan": PLAN, "runs": []}
    assert json.loads((tmp_path / "new" / "run.json").read_text()) == made
    made["runs"].append("first")
    output(tmp_path / "new", plan_key="plan").save(made)
    assert output(tmp_path / "new", plan_key="plan").claim(runs=[])["runs"] == ["first"]  # kept, not reset
    assert output(tmp_path / "flat").claim() == PLAN  # without plan_key the record is the plan itself


def test_another_plan_is_refused_naming_the_keys_and_both_values(tmp_path):
    output(tmp_path).claim()
    with pytest.raises(NextscaleError, match=r"holds samples drawn with other settings \(seed: 1 there, 2 now\)"):
        output(tmp_path, {**PLAN, "seed": 2}).claim()
    other = {**PLAN, "seed": 2, "shard_size": 8}
    with pytest.raises(NextscaleError, match=r"\(seed, shard_size differ\) — seed 1 there, 2 now") as refused:
        output(tmp_path, other, place="--out").claim()
    assert "\n" not in str(refused.value) and "use a new --out" in str(refused.value)
    assert output(tmp_path, {k: PLAN[k] for k in ("seed", "classes")}).claim() == PLAN  # a key it lacks is new


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"runs": []}'])
def test_a_record_that_is_not_one_is_refused_in_one_line(tmp_path, text):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(NextscaleError, match="run.json is not a nextscale record") as refused:
        output(tmp_path, plan_key="plan").claim()
    assert "\n" not in str(refused.value)


def test_a_folder_of_other_files_is_refused_but_a_probe_is_not(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(NextscaleError, match="is not empty and holds no run.json"):
        output(tmp_path).claim()
    (tmp_path / "mine.txt").unlink()
    (tmp_path / ".nextscale-probe.abc").write_text("")  # another process proving the folder writable
    (tmp_path / ".run.json.x.tmp").write_text("")  # the record's temporary file, left by a killed run
    assert output(tmp_path).claim() == PLAN


def test_missing_shards_are_split_over_the_processes_and_written_whole(tmp_path):
    one = output(tmp_path, shards="shards")
    one.claim()
    for k in (1, 3):
        assert one.publish(k, ".txt", lambda tmp: Path(tmp).write_text("whole")) == one.path(k, ".txt")
    assert one.path(3, ".txt") == tmp_path / "shards" / "shard-00003.txt"
    missing = one.missing(lambda k: one.path(k, ".txt").is_file())
    assert missing == [0, 2, 4]
    shares = [output(tmp_path, dist=Distributed(rank=r, world=2)).share(missing) for r in (0, 1)]
    assert shares == [[0, 4], [2]]
    with pytest.raises(ZeroDivisionError):  # a crash mid-write
        one.publish(0, ".txt", lambda tmp: (Path(tmp).write_text("half"), 1 / 0))
    assert not one.path(0, ".txt").exists() and sorted(p.name for p in one.shard_dir.iterdir()) == [
        "shard-00001.txt",
        "shard-00003.txt",
    ]


def _claim_in_process(rank: int, folder: str, store: str, seed: int, results) -> None:
    import torch.distributed as tdist

    # A file store: the processes meet without a network port.
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        out = output(folder, {**PLAN, "seed": seed}, dist=Distributed(rank, 2, cpu_group=tdist.group.WORLD))

        def prepare() -> list[int]:
            out.claim()
            return out.missing(lambda k: k == 0)

        results.put((rank, out.share(out.on_main(prepare))))
    except NextscaleError as e:
        results.put((rank, str(e)))
    finally:
        tdist.destroy_process_group()


def run_two(folder, store, seed: int) -> dict:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_claim_in_process, args=(r, folder, store, seed, results)) for r in (0, 1)]
    for p in processes:
        p.start()
    got = dict(results.get(timeout=120) for _ in processes)
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    return got


@pytest.mark.cpu_only
@pytest.mark.distributed
def test_the_first_process_claims_and_every_process_gets_its_share_or_the_refusal(tmp_path):
    folder = tmp_path / "out"
    assert run_two(str(folder), str(tmp_path / "store1"), seed=1) == {0: [1, 3], 1: [2, 4]}
    assert json.loads((folder / "run.json").read_text()) == PLAN  # written once, by the first process
    refused = run_two(str(folder), str(tmp_path / "store2"), seed=2)
    assert refused[0] == refused[1] and "other settings (seed: 1 there, 2 now)" in refused[1]
