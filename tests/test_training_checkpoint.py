"""`training/checkpoint.py`: a run resumes from its newest complete checkpoint whatever the `latest` pointer says,
so a kill between publishing a checkpoint and moving the pointer strands nothing and loses no save interval."""

import pytest
import torch

from nextscale.data import DigitsDataset
from nextscale.errors import NextscaleError
from nextscale.registry import architecture
from nextscale.tokenizer import VQVAE
from nextscale.training import TrainConfig, train_var
from nextscale.training import checkpoint as ckpt
from nextscale.training.common import check_run_dir
from nextscale.training.export import export_checkpoint


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even `except Exception` handlers."""


@pytest.fixture(scope="module")
def digits8():
    return DigitsDataset("train", resolution=8), DigitsDataset("test", resolution=8)


def tiny_configs():
    vae_config, var_config = architecture("tiny")
    var_config.num_classes = 10
    return vae_config, var_config


def run_var(digits8, run_dir, resume=None, **overrides):
    vae_config, var_config = tiny_configs()
    torch.manual_seed(0)
    vae = VQVAE(vae_config)
    config = TrainConfig(
        **{"steps": 6, "batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "eval_every": 6, "save_every": 2, **overrides}
    )
    return train_var(var_config, vae, *digits8, config, run_dir, resume=resume, progress=False)[0]


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def whole(digits8, tmp_path_factory):
    return run_var(digits8, tmp_path_factory.mktemp("whole") / "run")


def killed_between_publish_and_pointer(digits8, run_dir, monkeypatch, at_step: int):
    """Trains until the checkpoint of `at_step` is published, then dies before `latest` moves to it."""
    real = ckpt.point_latest

    def point_or_die(run, target):
        if ckpt.checkpoint_step(target) == at_step:
            raise Killed
        real(run, target)

    monkeypatch.setattr(ckpt, "point_latest", point_or_die)
    with pytest.raises(Killed):
        run_var(digits8, run_dir)
    monkeypatch.undo()


@pytest.mark.slow
def test_a_kill_between_publish_and_pointer_loses_nothing(digits8, whole, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    killed_between_publish_and_pointer(digits8, run_dir, monkeypatch, at_step=4)
    assert (run_dir / "latest").read_text() == "ckpt-00000002\n"  # one checkpoint behind
    assert ckpt.latest_checkpoint(run_dir) == run_dir / "ckpt-00000004"
    assert ckpt.read_record(ckpt.latest_checkpoint(run_dir))["step"] == 4
    with pytest.raises(NextscaleError, match="already holds a run"):
        run_var(digits8, run_dir, resume=False)  # a fresh run still never writes over it
    resumed = run_var(digits8, run_dir, resume=True)
    assert same_weights(whole, resumed)
    assert (run_dir / "latest").read_text() == "ckpt-00000006\n"
    assert sorted(p.name for p in run_dir.glob("ckpt-*")) == ["ckpt-00000004", "ckpt-00000006"]


@pytest.mark.slow
def test_the_first_checkpoint_without_a_pointer_resumes(digits8, whole, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    killed_between_publish_and_pointer(digits8, run_dir, monkeypatch, at_step=2)
    assert not (run_dir / "latest").exists()
    assert check_run_dir(run_dir, resume=None) == run_dir / "ckpt-00000002"
    assert same_weights(whole, run_var(digits8, run_dir, resume=True))


@pytest.mark.parametrize("pointer", ["ckpt-00000002\n", "ckpt-00000000\n", "nonsense", None])
@pytest.mark.slow
def test_the_pointer_is_never_what_resume_reads(digits8, tmp_path, monkeypatch, pointer):
    """Stale, naming a pruned checkpoint, garbage or missing: export and resume take the newest complete one."""
    run_dir = tmp_path / "run"
    killed_between_publish_and_pointer(digits8, run_dir, monkeypatch, at_step=6)
    (run_dir / "latest").unlink(missing_ok=True)
    if pointer is not None:
        (run_dir / "latest").write_text(pointer)
    _, model, record = export_checkpoint(run_dir)
    assert record["step"] == 6 and check_run_dir(run_dir, resume=True) == run_dir / "ckpt-00000006"


@pytest.mark.slow
def test_an_incomplete_checkpoint_is_passed_over_and_pruned(digits8, tmp_path):
    run_dir = tmp_path / "run"
    run_var(digits8, run_dir, steps=4)
    (run_dir / "ckpt-00000004" / ".metadata").unlink()  # damaged by hand: not complete any more
    assert ckpt.latest_checkpoint(run_dir) == run_dir / "ckpt-00000002"
    run_var(digits8, run_dir, resume=True, steps=8)
    assert sorted(p.name for p in run_dir.glob("ckpt-*")) == ["ckpt-00000006", "ckpt-00000008"]


def test_a_folder_without_a_complete_checkpoint_is_refused_naming_what_it_holds(tmp_path):
    (tmp_path / "ckpt-00000010").mkdir()
    (tmp_path / "latest").write_text("ckpt-00000010\n")
    with pytest.raises(NextscaleError, match=r"holds no complete checkpoint to continue \(only ckpt-00000010, latest"):
        check_run_dir(tmp_path, resume=True)
    with pytest.raises(NextscaleError, match=r"holds ckpt-00000010, latest but no complete checkpoint"):
        check_run_dir(tmp_path, resume=None)
    with pytest.raises(NextscaleError, match="already holds a run"):
        check_run_dir(tmp_path, resume=False)
    assert check_run_dir(tmp_path / "new", resume=None) is None


def test_a_run_stopped_before_its_first_checkpoint_starts_again_with_resume(tmp_path):
    (tmp_path / "runs.jsonl").write_text('{"from_step": 0}\n')  # stopped before its first log record
    assert all(check_run_dir(tmp_path, resume) is None for resume in (True, None, False))
    (tmp_path / "log.jsonl").write_text('{"step": 7, "loss": 1.0}\n')
    assert check_run_dir(tmp_path, resume=True) is None and check_run_dir(tmp_path, resume=None) is None
    with pytest.raises(NextscaleError, match=r"stopped before its first checkpoint \(log.jsonl\): pass --resume to st"):
        check_run_dir(tmp_path, resume=False)
    (tmp_path / "ckpt-00000010").mkdir()  # a checkpoint's folder, even an incomplete one: never written over
    with pytest.raises(NextscaleError, match="holds no complete checkpoint to continue"):
        check_run_dir(tmp_path, resume=True)
