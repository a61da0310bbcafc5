"""Record files: concurrent writers never leave a half-written or lost record."""

from __future__ import annotations

import multiprocessing as mp
import uuid

from mocobench.core.records import load_records, new_record, write_record

WRITERS, PER_WRITER = 8, 100


def _writer(results: str, template: dict, index: int, barrier) -> None:
    barrier.wait()   # all writers start together
    for i in range(PER_WRITER):
        rec = dict(template, id=uuid.uuid4().hex[:12], seed=index * PER_WRITER + i)
        write_record(results, rec)


def test_concurrent_writers_leave_every_record_readable(tmp_path):
    template = new_record(checkpoint={"name": "moco_v2"}, task="knn", protocol="dino-knn",
                          dataset={"name": "imagenet", "splits": {"val": 1}}, metrics={"top1": 1.0},
                          config={}, run={}, seed=0, wall_time_s=0.0, device="cpu")
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), template, w, barrier)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records, problems = load_records(tmp_path)
    assert problems == []
    assert len(records) == WRITERS * PER_WRITER
    assert sorted(r["seed"] for r in records) == list(range(WRITERS * PER_WRITER))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporaries left
