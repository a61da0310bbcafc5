"""The pretraining-throughput benchmark runs every method through the training loop's step and
prints a rate for each column, with the fast paths it was given."""

from __future__ import annotations

import re

from benchmarks import pretrain_throughput


def test_the_benchmark_prints_both_rates_for_every_method(capsys):
    pretrain_throughput.main(["--arch", "timm:test_resnet", "--img-size", "32", "--batch", "4", "--K", "16",
                              "--steps", "1", "--warmup", "1", "--device", "cpu", "--channels-last"])
    out = capsys.readouterr().out
    assert "'channels_last': True" in out and "'compile': 'off'" in out
    rows = re.findall(r"^(moco_v1|moco_v2|unimoco|smog)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert [r[0] for r in rows] == ["moco_v1", "moco_v2", "unimoco", "smog"], out
    assert all(float(fast) > 0 and float(plain) > 0 for _, fast, plain, _ in rows)
