"""fetch() against a loopback HTTP server: good files, forged files, dead mirrors."""

import functools
import hashlib
import http.server
import socket
import threading

import pytest

from parallel_backprop.data import fetch
from parallel_backprop.errors import DataError

GOOD = b"the real data file\n" * 1000
BAD = b"a tampered data file\n" * 1000
MD5 = "md5:" + hashlib.md5(GOOD).hexdigest()
SHA256 = "sha256:" + hashlib.sha256(GOOD).hexdigest()


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serves good/data.bin and bad/data.bin; yields (base URL, list of requested paths)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    root = tmp_path / "www"
    for name, content in (("good", GOOD), ("bad", BAD)):
        (root / name).mkdir(parents=True)
        (root / name / "data.bin").write_bytes(content)
    requests = []

    class Recording(Handler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Recording, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/data.bin"


@pytest.mark.parametrize("known_hash", [MD5, SHA256], ids=["md5", "sha256"])
def test_good_file_lands_and_verifies(server, tmp_path, known_hash):
    base, requests = server
    dest = tmp_path / "cache" / "sub"  # created on demand
    path = fetch("data.bin", [f"{base}/good/data.bin"], known_hash, dest, progress=False)
    assert path == dest / "data.bin" and path.read_bytes() == GOOD
    assert [p.name for p in dest.iterdir()] == ["data.bin"]
    # Second call: the verified file is reused, no request made.
    assert fetch("data.bin", [f"{base}/good/data.bin"], known_hash, dest, progress=False) == path
    assert requests == ["/good/data.bin"]


def test_checksum_mismatch_leaves_no_file_and_moves_on(server, tmp_path):
    base, requests = server
    dest = tmp_path / "cache"
    path = fetch("data.bin", [f"{base}/bad/data.bin", f"{base}/good/data.bin"], MD5, dest,
                 progress=False)
    assert requests == ["/bad/data.bin", "/good/data.bin"]
    assert path.read_bytes() == GOOD
    assert [p.name for p in dest.iterdir()] == ["data.bin"]


def test_all_mirrors_forged_leaves_nothing(server, tmp_path):
    base, _ = server
    dest = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        fetch("data.bin", [f"{base}/bad/data.bin"], MD5, dest, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("data.bin: download failed from 1 mirror(s)")
    assert "checksum mismatch" in message and f"download it yourself into {dest}" in message
    assert list(dest.iterdir()) == []


def test_unreachable_mirror_is_skipped(server, tmp_path):
    base, requests = server
    dead = closed_port_url()
    path = fetch("data.bin", [dead, f"{base}/good/data.bin"], MD5, tmp_path, progress=False)
    assert path.read_bytes() == GOOD and requests == ["/good/data.bin"]


def test_every_mirror_failing_names_file_mirrors_and_last_error(server, tmp_path):
    base, _ = server
    dead = closed_port_url()
    missing = f"{base}/nowhere/data.bin"
    with pytest.raises(DataError) as info:
        fetch("data.bin", [dead, f"{base}/bad/data.bin", missing], MD5, tmp_path / "c",
              progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert "from 3 mirror(s)" in message and dead in message and missing in message
    assert f"last error: {missing}: HTTP 404" in message
    assert "or pass --data-dir" in message
    assert list((tmp_path / "c").iterdir()) == []


def test_refused_connection_is_summarised(tmp_path):
    with pytest.raises(DataError, match=r"last error: .*Connection refused"):
        fetch("data.bin", [closed_port_url()], MD5, tmp_path, progress=False)


def test_stale_file_with_wrong_checksum_is_replaced_or_removed(server, tmp_path):
    base, requests = server
    (tmp_path / "data.bin").write_bytes(BAD)
    path = fetch("data.bin", [f"{base}/good/data.bin"], MD5, tmp_path, progress=False)
    assert path.read_bytes() == GOOD and requests == ["/good/data.bin"]
    (tmp_path / "data.bin").write_bytes(BAD)
    with pytest.raises(DataError):
        fetch("data.bin", [closed_port_url()], MD5, tmp_path, progress=False)
    assert not (tmp_path / "data.bin").exists()


def test_malformed_checksum_and_no_mirrors(tmp_path):
    with pytest.raises(DataError, match="not of the form 'md5:<hex>'"):
        fetch("data.bin", ["http://127.0.0.1:9/x"], "crc32:abcd", tmp_path, progress=False)
    with pytest.raises(DataError, match="no download address"):
        fetch("data.bin", [], MD5, tmp_path, progress=False)
