"""``mocobench eval linear|knn|semi`` end to end on a tiny ImageNet-layout folder."""

import pytest
from unreadable_images import colour_classes

from mocobench.core.records import load_records
from mocobench.transfer.cli import eval_main


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
    """``root/imagenet/{train,val}/c<k>/*.JPEG`` of 3 colour classes, one broken image, a 10 % list."""
    root = colour_classes(tmp_path_factory.mktemp("tiny"), {"train": 30, "val": 4})   # 9 of 91 listed: 10 %
    (root / "imagenet" / "train" / "n00" / "n00_broken.JPEG").write_bytes(b"\xff\xd8 truncated")
    names = [f"n0{c}_train{i}.JPEG" for c in range(3) for i in range(3)]
    (root / "imagenet" / "10percent.txt").write_text("\n".join(names) + "\n")
    return root


def run(task, tiny, results, *extra):
    args = [task, "--checkpoint", "random:resnet18", "--data", str(tiny), "--results", str(results),
            "--img-size", "32", "--workers", "0", *extra]
    assert eval_main(args) == 0
    recs, problems = load_records(results)
    assert not problems
    return recs


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_fast_linear_knn_and_cache_reuse(tiny_imagenet, tmp_path):
    cache = tmp_path / "cache"
    recs = run("linear", tiny_imagenet, tmp_path / "r1", "--protocol", "fast", "--cache-dir", str(cache))
    (rec,) = recs
    assert rec["task"] == "linear" and rec["protocol"] == "fast"
    assert rec["dataset"]["splits"] == {"train": 91, "val": 12}
    assert rec["dataset"]["unreadable"] == {"train": 1, "val": 0}
    assert rec["run"]["cache_hits"] == {"train": False, "val": False}
    assert rec["run"]["chosen_l2"] in rec["config"]["l2_grid"]
    assert 0 <= rec["metrics"]["top1"] <= 100 and rec["metrics"]["top5"] == 100.0  # 3 classes
    # same checkpoint and data: features come from the cache (kNN shares them)
    recs = run("knn", tiny_imagenet, tmp_path / "r2", "--cache-dir", str(cache))
    assert recs[0]["task"] == "knn" and recs[0]["run"]["cache_hits"] == {"train": True, "val": True}
    assert recs[0]["config"]["k"] == 20 and recs[0]["config"]["T"] == 0.07


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_paper_linear_and_semi_write_records(tiny_imagenet, tmp_path):
    (rec,) = run("linear", tiny_imagenet, tmp_path / "p", "--epochs", "1", "--batch-size=16")
    assert rec["protocol"] == "paper" and rec["config"]["lr"] == 30.0 and rec["config"]["epochs"] == 1
    assert rec["dataset"]["unreadable"]["train"] == 1
    (rec,) = run("semi", tiny_imagenet, tmp_path / "s", "--protocol", "tiny", "--labels", "10percent",
                 "--epochs", "1", "--label-pct", "10")
    assert rec["task"] == "semi-10pct" and rec["run"]["chosen_lr"] in rec["config"]["lr_grid"]
    assert set(rec["run"]["lr_grid_holdout_top1"]) == {"0.01", "0.05"}
    assert rec["dataset"]["splits"]["train_labelled"] == 9 and rec["run"]["n_holdout"] == 3


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_seeds_give_one_record_each_and_a_log_in_the_default_work_dir(tiny_imagenet, tmp_path):
    # the fast probe choosing between two L2 strengths on held-out images the seed draws
    recs = run("linear", tiny_imagenet, tmp_path / "results", "--protocol", "fast", "--l2-grid=1e-3,1e-1",
               "--seeds", "4", "0", "--no-cache")
    assert sorted(r["seed"] for r in recs) == [0, 4] and all(r["env"]["device"] == "cpu" for r in recs)
    logs = sorted((tmp_path / "work" / "linear").glob("random-resnet18-nosha-fast-*-s*/eval.log"))
    assert [p.parent.name[-2:] for p in logs] == ["s0", "s4"]
    assert all(r["run"]["work_dir"] in {str(p.parent) for p in logs} for r in recs)
    assert "record: " in logs[0].read_text()
    recs = run("knn", tiny_imagenet, tmp_path / "one", "--seed", "7", "--no-cache", "--work-dir",
               str(tmp_path / "mine"))
    assert [r["seed"] for r in recs] == [7] and len(list((tmp_path / "mine").glob("*-s7/eval.log"))) == 1


def test_several_seeds_of_a_protocol_that_does_not_depend_on_them_are_refused(tiny_imagenet, tmp_path, capsys):
    """kNN (and the fast probe with one L2 strength) give the same numbers for every seed: --seeds 0 1 2
    wrote three equal records, and the table showed "± 0.0 (3)", a spread that measures nothing."""
    base = ["--checkpoint", "random:resnet18", "--data", str(tiny_imagenet), "--results", str(tmp_path / "r")]
    assert eval_main(["knn", *base, "--seeds", "0", "1", "2"]) == 2
    err = capsys.readouterr().err
    assert "--seeds 0 1 2: the dino-knn protocol does not depend on its seed" in err and "give one --seed" in err
    assert eval_main(["linear", *base, "--protocol", "fast", "--l2-grid=1e-3", "--seeds", "0", "1"]) == 2
    assert "the fast protocol does not depend on its seed" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()   # refused before anything ran


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_the_record_keeps_the_protocol_as_given_and_states_the_lr_it_trained_at(tiny_imagenet, tmp_path):
    """MoCo v3's probe scales lr by batch / 256: the scaled lr took config.lr's place while
    lr_scale_by_batch stayed true, so the record's config, run again, scaled it a second time. The
    config keeps the lr as given; run.effective_lr is the one trained at; run.preset_changes names
    what differs from the preset."""
    (rec,) = run("linear", tiny_imagenet, tmp_path / "r", "--protocol", "mocov3-vit", "--epochs", "1",
                 "--batch-size=16", "--no-cache")
    assert rec["config"]["lr"] == 0.1 and rec["config"]["lr_scale_by_batch"] is True
    assert rec["config"]["batch_size"] == 16
    assert rec["run"]["effective_lr"] == pytest.approx(0.1 * 16 / 256)
    assert rec["run"]["preset_changes"] == {"epochs": {"preset": 90, "ran": 1},
                                            "batch_size": {"preset": 1024, "ran": 16},
                                            "img_size": {"preset": 224, "ran": 32}}   # workers: a run setting
    (rec,) = run("knn", tiny_imagenet, tmp_path / "k", "--no-cache")
    assert rec["run"]["preset_changes"] == {"img_size": {"preset": 224, "ran": 32}}


def test_bad_input_is_a_clear_error(tiny_imagenet, tmp_path, capsys):
    from mocobench.cli import main

    # missing data is a failed run (exit 1, the path named); a bad option is usage (exit 2)
    assert main(["eval", "knn", "--checkpoint", "random:resnet18", "--data", str(tmp_path),
                 "--results", str(tmp_path)]) == 1
    assert "expected" in capsys.readouterr().err
    assert eval_main(["linear", "--checkpoint", "random:resnet18", "--data", str(tiny_imagenet),
                      "--results", str(tmp_path), "--lrr=3"]) == 2
    assert "unknown option --lrr" in capsys.readouterr().err
    assert main(["eval", "semi", "--checkpoint", "random:resnet18", "--data", str(tiny_imagenet),
                 "--results", str(tmp_path), "--labels", "nope.txt"]) == 1
    assert "nope.txt" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_the_cache_tells_apart_the_branches_of_one_file(tiny_imagenet, tmp_path):
    """One file, a raw and an EMA branch: the file's sha256 is the same for both, and --branch ema
    was taken for the raw run already evaluated (the work folder's key), or served the raw branch's
    cached features (the cache key), and scored as them."""
    import torch
    from torchvision.models import resnet18

    torch.manual_seed(0)
    raw = resnet18().state_dict()
    torch.manual_seed(1)
    ema = resnet18().state_dict()
    ckpt = tmp_path / "ema.pth"
    torch.save({"state_dict": raw, "state_dict_ema": ema}, ckpt)
    cache = tmp_path / "cache"

    def knn(branch, results, *extra):
        args = ["knn", "--checkpoint", str(ckpt), "--branch", branch, "--data", str(tiny_imagenet),
                "--results", str(results), "--img-size", "32", "--workers", "0", *extra]
        assert eval_main(args) == 0
        (rec,) = load_records(results)[0]
        return rec

    first = knn("raw", tmp_path / "r1", "--cache-dir", str(cache))
    second = knn("ema", tmp_path / "r2", "--cache-dir", str(cache))
    alone = knn("ema", tmp_path / "r3", "--no-cache", "--work-dir", str(tmp_path / "w3"))
    assert second["checkpoint"]["branch"] == "EMA weights"
    assert second["run"]["cache_hits"] == {"train": False, "val": False}
    assert second["metrics"] == alone["metrics"] and first["metrics"] != alone["metrics"]
    assert first["checkpoint"]["sha256"] == second["checkpoint"]["sha256"]


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_an_unreadable_val_image_counts_as_wrong(tiny_imagenet, tmp_path):
    """Accuracy over the fixed val set: the same run with one more val image, unreadable, scores
    12/13 of the run without it (before: the same figure, over the 12 images read). And the data
    changed under the same path make another evaluation (before: "evaluated already", and the first
    run's record copied)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_imagenet, data)
    (rec,) = run("knn", data, tmp_path / "before", "--no-cache")
    (data / "imagenet" / "val" / "n01" / "n01_broken.JPEG").write_bytes(b"\xff\xd8 truncated")
    (broken,) = run("knn", data, tmp_path / "after", "--no-cache")
    assert broken["run"]["work_dir"] != rec["run"]["work_dir"]
    assert broken["dataset"]["unreadable"]["val"] == 1 and broken["dataset"]["splits"]["val"] == 13
    for k in ("top1", "top5"):
        assert broken["metrics"][k] == pytest.approx(rec["metrics"][k] * 12 / 13)
