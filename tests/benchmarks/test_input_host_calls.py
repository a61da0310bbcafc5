"""The host-call benchmark of the device input path runs and reports its figures."""

from __future__ import annotations

import re

from benchmarks import input_host_calls


def test_the_benchmark_prints_calls_and_time(capsys):
    assert input_host_calls.main(["--batch", "6", "--size", "32", "--methods", "moco_v2"]) == 0
    out = capsys.readouterr().out
    got = re.search(r"moco_v2\s+2 views:\s+(\d+) top-level host calls,\s+(\d+) calls in all,\s+([\d.]+) ms per batch; "
                    r"draws and jitter plan ([\d.]+) ms", out)
    assert got, out
    top, every, ms, draws = int(got[1]), int(got[2]), float(got[3]), float(got[4])
    assert 50 < top <= 300 and every > top and ms > 0 and draws > 0
