"""Response head validation: nothing that could split a response is sent."""

import pytest

from uwsgigw.cycle.response import (FileWrapper, ResponseError, build_head, sendfile_fd,
                                    simple_response)


def test_head_is_http11_with_headers():
    head, count = build_head("200 OK", [("Content-Type", "text/plain"), ("X-A", "b")])
    assert head == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: b\r\n\r\n"
    assert count == 2


def test_head_without_headers():
    assert build_head("204 No Content", [])[0] == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_latin1_header_values_pass():
    head, _ = build_head("200 OK", [("X-Name", "caf\xe9")])
    assert b"X-Name: caf\xe9\r\n" in head


@pytest.mark.parametrize("status", ["200OK", "20 OK", "2000 OK", "abc OK", "200 OK\r\nX: y",
                                    "200 O\nK", "200 O\x00K", b"200 OK", None, "099 Low"])
def test_bad_status_is_refused(status):
    with pytest.raises(ResponseError) as info:
        build_head(status, [])
    assert "status" in str(info.value)


@pytest.mark.parametrize("headers,named", [
    ([("X-A", "ok"), ("Set-Cookie", "a=1\r\nX-Injected: 1")], "Set-Cookie"),
    ([("X-A", "line\nbreak")], "X-A"),
    ([("X-A", "nul\x00")], "X-A"),
    ([("X-A", "cr\r")], "X-A"),
    ([("Bad Name", "v")], "Bad Name"),
    ([("Bad:Name", "v")], "Bad:Name"),
    ([("", "v")], "''"),
    ([("X-\r\nA", "v")], "X-"),
    ([("X-Snow", "\u2603")], "X-Snow"),
    ([("X-A", 5)], "X-A"),
    ([(b"X-A", "v")], "b'X-A'"),
    ([("X-A",)], "header #0"),
])
def test_bad_headers_are_refused_and_named(headers, named):
    with pytest.raises(ResponseError) as info:
        build_head("200 OK", headers)
    assert named in str(info.value)


def test_simple_response_has_length():
    data = simple_response("413 Content Too Large", "too big\n")
    assert data.startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert b"Content-Length: 8\r\n" in data and data.endswith(b"\r\n\r\ntoo big\n")


def test_file_wrapper_iterates_and_closes(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100000)
    f = open(path, "rb")
    wrapper = FileWrapper(f, 4096)
    assert sendfile_fd(wrapper) == f.fileno()
    assert b"".join(wrapper) == b"x" * 100000
    wrapper.close()
    assert f.closed


def test_sendfile_only_for_regular_files():
    import io
    assert sendfile_fd(FileWrapper(io.BytesIO(b"abc"))) is None
