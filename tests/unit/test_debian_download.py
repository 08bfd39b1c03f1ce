"""The mirror's files are bounded and stay on the mirror (before their sha256 is checked)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import InputError
from builder.host import debian_index


def test_a_file_larger_than_its_kind_holds_is_refused_and_removed(tmp_path: Path) -> None:
    source = tmp_path / "InRelease"
    source.write_bytes(b"x" * 4096)
    dest = tmp_path / "got"
    with pytest.raises(InputError, match="more than 1000 bytes"):
        debian_index.download(source.as_uri(), dest, limit=1000)
    assert not dest.exists()
    assert debian_index.download(source.as_uri(), dest, limit=4096)  # exactly the limit: taken


class _Redirect(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        port = self.server.server_address[1]
        target = {"/off": f"http://localhost:{port}/file", "/on": "/file"}.get(self.path)
        if target is not None:
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Redirect)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_redirect_off_the_mirror_is_refused(server: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="redirected off the mirror"):
        debian_index.download(f"{server}/off", tmp_path / "a")
    assert debian_index.download(f"{server}/on", tmp_path / "b")  # on the mirror: followed
    assert (tmp_path / "b").read_bytes() == b"ok"


def test_a_paragraph_after_a_blank_line_of_several_spaces_is_its_own() -> None:
    text = (
        "Package: other\nVersion: 1\nChecksums-Sha256:\n x\n  \t \n"
        "Version: 2.0-1\nPackage: libglib2.0-dev\n\n"
        "Package: libglib2.0-dev\nVersion: 2.1-1\n"
    )
    assert debian_index.binary_versions(text, frozenset({"libglib2.0-dev"})) == {
        "libglib2.0-dev": "2.1-1"
    }
    found = list(debian_index._paragraphs(text, {"libglib2.0-dev"}))
    assert [p["Version"] for p in found] == ["2.0-1", "2.1-1"]
