"""The zoo table and ``fetch``: loopback HTTP server and file:// URLs only, nothing from the internet."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from mocobench.checkpoints import CheckpointError, load_backbone
from mocobench.checkpoints.backbones import family
from mocobench.checkpoints.cli import fetch_main
from mocobench.checkpoints.fetch import HashMismatch, fetch
from mocobench.checkpoints.formats import FORMATS
from mocobench.checkpoints.zoo import ZooEntry, cached_path, load_zoo

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path, honouring ``Range: bytes=N-``; records the Range headers seen."""

    ranges: list = []

    def do_GET(self):
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        body = PAYLOAD[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    RangeHandler.ranges = []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def entry(url, **kw) -> ZooEntry:
    return ZooEntry(name="tiny", url=url, format="torchvision", arch="resnet18", method="test", **kw)


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_fetch_over_http_verifies_sha256(server, tmp_path):
    path = fetch(entry(f"{server}/tiny.pth", sha256=SHA), root=tmp_path)
    assert path == tmp_path / "tiny" / "tiny.pth" and path.read_bytes() == PAYLOAD
    assert RangeHandler.ranges == [None]
    assert fetch(entry(f"{server}/tiny.pth", sha256=SHA), root=tmp_path) == path  # cached: no request
    assert RangeHandler.ranges == [None]


def test_fetch_resumes_a_partial_download(server, tmp_path):
    e = entry(f"{server}/tiny.pth", sha256=SHA)
    part = cached_path(e, tmp_path).with_name("tiny.pth.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:300_000])
    path = fetch(e, root=tmp_path)
    assert RangeHandler.ranges == ["bytes=300000-"]
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_fetch_refuses_a_mismatch_and_deletes_nothing_else(server, tmp_path):
    keep = tmp_path / "tiny" / "other.pth"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"keep me")
    with pytest.raises(HashMismatch, match="sha256 mismatch"):
        fetch(entry(f"{server}/tiny.pth", sha256="0" * 64), root=tmp_path)
    assert not (tmp_path / "tiny" / "tiny.pth").exists()
    assert keep.read_bytes() == b"keep me"
    # torchvision's file-name prefix and md5 are checked too
    with pytest.raises(HashMismatch, match="sha256 prefix"):
        fetch(entry(f"{server}/tiny.pth", sha256_prefix="deadbeef"), root=tmp_path)
    with pytest.raises(HashMismatch, match="md5"):
        fetch(entry(f"{server}/tiny.pth", md5="b251726a"), root=tmp_path)
    ok = fetch(entry(f"{server}/tiny.pth", sha256_prefix=SHA[:8], md5=hashlib.md5(PAYLOAD).hexdigest()),
               root=tmp_path)
    assert ok.read_bytes() == PAYLOAD


def test_fetch_file_url_without_hash_warns_with_the_sha256(tmp_path, capsys):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    path = fetch(entry(src.as_uri()), root=tmp_path / "cache")
    assert path.read_bytes() == PAYLOAD
    err = capsys.readouterr().err
    assert "WARNING" in err and SHA in err


def test_fetch_cli_refuses_a_mirror_with_the_wrong_file(tmp_path, capsys):
    src = tmp_path / "not_moco.pth"
    src.write_bytes(PAYLOAD)
    code = fetch_main(["moco_v2_800ep", "--cache-dir", str(tmp_path / "cache"), "--url", src.as_uri()])
    assert code == 1
    assert "md5 mismatch" in capsys.readouterr().err
    assert not any((tmp_path / "cache").rglob("*.tar"))
    assert fetch_main(["--list"]) == 0
    assert fetch_main(["no_such_checkpoint"]) == 2


def test_zoo_table_is_complete_and_honest():
    zoo = load_zoo()
    required = {"moco_v1_200ep", "moco_v2_200ep", "moco_v2_800ep", "moco_v3_r50_1000ep",
                "moco_v3_vit_s_300ep", "dino_r50", "dino_vit_s16", "swav_800ep", "barlow_twins_r50",
                "torchvision_r50_supervised"}
    assert required <= set(zoo)
    formats = set(FORMATS) | {"torchvision", "timm"}
    for name, e in zoo.items():
        assert e.url.startswith("https://"), name
        assert e.format in formats, name
        family(e.arch)  # a known arch
        assert e.paper_row, name   # its numbers are in leaderboard/reported.csv (tests/leaderboard/test_paper_columns.py)
        for h, n in ((e.sha256, 64), (e.sha256_prefix, 8), (e.md5, 32)):
            assert h == "" or (len(h) in (8, n) and all(c in "0123456789abcdef" for c in h)), name
    # torchvision's hash prefix is the one in its file name
    tv = zoo["torchvision_r50_supervised"]
    assert tv.sha256_prefix and tv.sha256_prefix in tv.filename


def test_load_backbone_by_zoo_name_needs_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("MOCOBENCH_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="mocobench fetch moco_v2_800ep"):
        load_backbone("moco_v2_800ep")
    with pytest.raises(CheckpointError, match="not a checkpoint name"):
        load_backbone("no_such_zoo_name")
    from mocobench.checkpoints.load import resolve_name

    e = load_zoo()["moco_v2_800ep"]
    cached = cached_path(e)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_name("moco_v2_800ep") == (cached, e)


def test_a_fetched_file_named_by_its_path_keeps_its_zoo_identity(tmp_path, monkeypatch):
    """The pipeline names its reference checkpoints by their fetched file, not by their zoo name
    (mocobench/stages.py): the file is still the entry, so its records carry the entry's name, method,
    epochs and label fraction, which the leaderboard matches with the paper rows. A copy elsewhere is
    a file of its own."""
    import shutil

    import torch
    import torchvision

    from mocobench.checkpoints.load import describe

    monkeypatch.setenv("MOCOBENCH_CACHE", str(tmp_path / "cache"))
    e = load_zoo()["torchvision_r50_supervised"]
    cached = cached_path(e)
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet50().state_dict(), cached)
    fields = describe(str(cached)).record_fields()
    assert (fields["name"], fields["method"], fields["epochs"], fields["label_fraction"]) == (
        "torchvision_r50_supervised", "supervised", 90, 1.0)
    copy = tmp_path / "elsewhere" / cached.name
    copy.parent.mkdir()
    shutil.copy(cached, copy)
    fields = describe(str(copy)).record_fields()
    assert fields["name"] == "resnet50-0676ba61" and fields["method"] is None and fields["label_fraction"] is None
