"""Sharded outputs: a folder that one run, or several in turn, fills shard by shard (token shards, per-class
samples), under torchrun split over the processes.

The folder records its plan (everything the shards depend on) when it is first claimed; a later run resumes
there only with the same plan, so that shards of other settings are never mixed in. The first process claims
the folder and finds the shards that are not whole; every process then draws its share of those, and each
file is published whole (temporary file, then rename), so a stopped run leaves no half-written shard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from .distributed import Distributed
from .errors import NextscaleError
from .files import atomic_write, atomic_write_text, ensure_writable_dir, first_line

PROBE = ".nextscale-probe."  # ensure_writable_dir's probe: another process's may be there for an instant


def on_main(dist: Distributed, work: Callable):
    """`work()` on the first process, its result (or its refusal) given to all: a refusal must stop every
    process, not leave the others waiting for one that has gone."""
    if not dist.enabled:
        return work()
    outcome = None
    if dist.is_main:
        try:
            outcome = ("done", work())
        except (NextscaleError, OSError) as e:
            outcome = ("refused", f"{e}")
    kind, value = dist.broadcast_object(outcome)
    if kind == "refused":
        raise NextscaleError(value)
    return value


class ShardedOutput:
    """`shard_count` shards in `folder` (or its sub-folder `shards`), planned by `plan` (a JSON-able dict).

    The plan is kept in the JSON file `record`: the whole file, or its key `plan_key` beside what the caller
    records there. `contents` ("tokens made") and `place` ("--out") word the refusals.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        plan: dict,
        shard_count: int,
        dist: Distributed | None = None,
        *,
        record: str,
        plan_key: str | None = None,
        shards: str = "",
        contents: str = "results made",
        place: str = "output directory",
    ):
        self.folder, self.plan, self.shard_count = Path(folder), plan, shard_count
        self.dist = dist or Distributed()
        self.record_path, self.plan_key, self.shard_dir = self.folder / record, plan_key, self.folder / shards
        self.contents, self.place = contents, place

    def claim(self, **fresh) -> dict:
        """The folder's record (call it on the first process): a new folder gets one (the plan, and `fresh` beside
        it under `plan_key`); an existing one must hold this plan. A folder with files and no record is refused."""
        ensure_writable_dir(self.folder, "output directory")  # one process probes: others would race this check
        path = self.record_path
        if not path.is_file():
            ours = (PROBE, f".{path.name}.")  # a probe, or a temporary record that a killed run left
            if any(not p.name.startswith(ours) for p in self.folder.iterdir()):
                raise NextscaleError(
                    f"{self.folder} is not empty and holds no {path.name}: use an empty or new {self.place}"
                )
            record = {self.plan_key: self.plan, **fresh} if self.plan_key else self.plan
            self.save(record)
            return record
        try:
            record = json.loads(path.read_text())
            saved = record[self.plan_key] if self.plan_key else record
            differ = [k for k in self.plan if saved.get(k) != self.plan[k]]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise NextscaleError(
                f"{path} is not a nextscale record ({first_line(e)}): use another {self.place}"
            ) from None
        if differ:
            first = differ[0]
            values = f"{_short(saved.get(first))} there, {_short(self.plan[first])} now"
            detail = f"({first}: {values})" if len(differ) == 1 else f"({', '.join(differ)} differ) — {first} {values}"
            raise NextscaleError(
                f"{self.folder} holds {self.contents} with other settings {detail}: use a new {self.place}, "
                "or the settings that made them"
            )
        return record

    def save(self, record: dict) -> None:
        atomic_write_text(self.record_path, json.dumps(record, indent=1) + "\n")

    def missing(self, whole: Callable[[int], bool]) -> list[int]:
        """The shards not on disk whole (`whole(k)`: the user's check): never written, or cut short by a crash."""
        return [k for k in range(self.shard_count) if not whole(k)]

    def share(self, shards: list[int]) -> list[int]:
        """This process's part of `shards` (every process gets the same list from the first)."""
        return shards[self.dist.rank :: self.dist.world]

    def on_main(self, work: Callable):
        return on_main(self.dist, work)

    def path(self, k: int, suffix: str) -> Path:
        return self.shard_dir / shard_name(k, suffix)

    def publish(self, k: int, suffix: str, write: Callable[[str], None]) -> Path:
        """Writes a file of shard `k` whole or not at all (`write(tmp_path)`, then a rename)."""
        return atomic_write(self.path(k, suffix), write)


def shard_name(k: int, suffix: str) -> str:
    return f"shard-{k:05d}{suffix}"


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "…"
