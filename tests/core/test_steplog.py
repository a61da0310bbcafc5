"""One JSON-lines step log for every resumable loop: the history before the resume point, once."""

from __future__ import annotations

import json

from mocobench.core.io import StepLog


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_keeps_each_step_before_the_start_once_with_its_events(tmp_path):
    path = tmp_path / "log.jsonl"
    log = StepLog(path, key="step")
    log.append({"event": "start", "step": 0})
    for step in (1, 2, 3):
        log.append({"step": step, "loss": float(step)})
    log.append({"event": "checkpoint", "step": 3})
    for step in (4, 5):                           # ran after the checkpoint, then killed
        log.append({"step": step, "loss": 9.0})
    log.append({"event": "checkpoint", "step": 5})
    with open(path, "a") as f:
        f.write('{"step": 6, "lo')                # a line cut by the kill
    assert log.resume(4) == [0]                   # step 0 has no row: the loop logs steps done
    assert _rows(path) == [{"event": "start", "step": 0}, {"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0},
                           {"step": 3, "loss": 3.0}, {"event": "checkpoint", "step": 3}]
    log.append({"event": "start", "step": 3})
    log.append({"step": 4, "loss": 4.0})
    assert [r.get("loss") for r in _rows(path)][-2:] == [None, 4.0]


def test_rows_written_twice_by_an_older_writer_count_once_and_the_first_wins(tmp_path):
    path = tmp_path / "losses.jsonl"
    path.write_text("".join(json.dumps({"iteration": i, "loss": v}) + "\n" for i, v in [(0, 1.0), (1, 2.0), (1, 7.0)]))
    assert StepLog(path).resume(3) == [2]
    assert _rows(path) == [{"iteration": 0, "loss": 1.0}, {"iteration": 1, "loss": 2.0}]


def test_a_fresh_start_empties_the_log(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n')
    assert StepLog(path, key="step").resume(0) == []
    assert path.read_text() == ""
