"""--pretrain-arg / --eval-arg: an option they name replaces the stage's own, since the commands
refuse an option given twice."""

from __future__ import annotations

from mocobench.stages import with_extra


def test_an_extra_option_replaces_the_stages_own_in_either_spelling():
    argv = ["pretrain", "--method", "moco_v2", "--epochs=16", "--batch-size", "32", "--lr=0.06"]
    assert with_extra(argv, ["--epochs=1"]) == ["pretrain", "--method", "moco_v2", "--batch-size", "32",
                                                "--lr=0.06", "--epochs=1"]
    # a flag with its value apart, named as --key=value with the other spelling and case
    assert with_extra(argv, ["--Batch_Size=8"]) == ["pretrain", "--method", "moco_v2", "--epochs=16", "--lr=0.06",
                                                    "--Batch_Size=8"]
    # options it does not name stay, and nothing is added twice
    out = with_extra(argv, ["--seed=3", "--lr", "0.1"])
    assert out == ["pretrain", "--method", "moco_v2", "--epochs=16", "--batch-size", "32", "--seed=3", "--lr", "0.1"]
    assert with_extra(argv, []) == argv
