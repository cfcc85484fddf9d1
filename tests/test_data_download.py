"""The download path, for real, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from jaxcnn import data

pytestmark = pytest.mark.realdata


class _Handler(http.server.BaseHTTPRequestHandler):
    """/good/F serves the file, /bad/F other bytes, /cut/F half the body then hangs up."""

    root: Path

    def do_GET(self):  # noqa: N802 - the name http.server calls
        mode, _, filename = self.path.strip("/").partition("/")
        source = self.root / filename
        if not source.is_file():
            self.send_error(404)
            return
        body = source.read_bytes()
        if mode == "bad":
            body = body[::-1]  # same size, different bytes
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if mode == "cut" else body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(shared_data):
    handler = type("Handler", (_Handler,), {"root": shared_data / "mnist"})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_download_success_then_cached(server, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # keep ~/.cache out of it
    ds = data.load("mnist", tmp_path, mirrors=[f"{server}/cut/", f"{server}/good/"])
    assert (len(ds.train), len(ds.test)) == (60_000, 10_000)
    assert {c.status for c in ds.info.files} == {"downloaded, verified"}
    names = sorted(p.name for p in _leftovers(tmp_path / "mnist"))
    assert names == sorted(f.filename for f in data.OFFICIAL_FILES["mnist"])  # no .part files
    again = data.load("mnist", tmp_path, download=False)
    assert {c.status for c in again.info.files} == {"verified"}


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(data.ChecksumError) as caught:
        data.load("mnist", tmp_path, mirrors=[f"{server}/bad/"])
    message = str(caught.value)
    first = data.OFFICIAL_FILES["mnist"][0]
    assert f"{server}/bad/{first.filename}" in message and first.sha256 in message
    assert "Nothing was saved" in message and "mirror" in message
    assert not (tmp_path / "mnist").exists()  # not even the folder it made
    # With several mirrors, the message says what each one did, not only the first.
    with pytest.raises(data.ChecksumError) as caught:
        data.load("mnist", tmp_path, mirrors=[f"{server}/bad/", "http://127.0.0.1:9/"])
    assert "Every URL tried" in str(caught.value) and "127.0.0.1:9" in str(caught.value)


def test_interrupted_download_leaves_nothing(server, tmp_path):
    with pytest.raises(data.DownloadError, match="interrupted after 4,956,211 of 9,912,422 bytes"):
        data.load("mnist", tmp_path / "new" / "data", mirrors=[f"{server}/cut/"])
    assert not (tmp_path / "new").exists()  # the folders it made are gone again


def test_a_bad_timeout_is_refused_before_any_folder_is_made(tmp_path):
    with pytest.raises(data.DataError, match="timeout must be a number of seconds > 0; got -1"):
        data.load("mnist", tmp_path / "new", timeout=-1)
    assert not (tmp_path / "new").exists()


def test_download_file_reports_every_mirror(server, tmp_path):
    official = data.OFFICIAL_FILES["mnist"][3]  # t10k labels, 4,542 bytes
    with pytest.raises(data.DownloadError) as caught:
        data.download_file(
            [f"{server}/good/missing.gz", "http://127.0.0.1:9/x"],
            tmp_path / "f.gz",
            sha256=official.sha256,
            quiet=True,
            timeout=5,
        )
    assert "HTTP Error 404" in str(caught.value) and "127.0.0.1:9/x" in str(caught.value)
    path = data.download_file(
        [f"{server}/good/{official.filename}"],
        tmp_path / "f.gz",
        sha256=official.sha256,
        size=official.size,
        quiet=True,
    )
    assert data.sha256_file(path) == official.sha256 and _leftovers(tmp_path) == [path]
