"""The momentum-update benchmark runs, reports both forms, and finds them equal."""

from __future__ import annotations

import re

from benchmarks import momentum_update


def test_the_benchmark_prints_calls_time_and_equality(capsys):
    assert momentum_update.main(["--archs", "timm:test_resnet", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    got = re.search(r"timm:test_resnet\s+(\d+) parameters: official loop\s+(\d+) calls\s+([\d.]+) ms; "
                    r"ours\s+(\d+) calls\s+([\d.]+) ms; largest difference (\S+)", out)
    assert got, out
    params, loop_calls, ours_calls = int(got[1]), int(got[2]), int(got[4])
    assert params > 20 and loop_calls == 3 * params and ours_calls == 2   # mul_, add_, detach per parameter
    assert float(got[6]) == 0.0
