"""A Flask app exercising the common request/response paths through nginx."""

from __future__ import annotations

import hashlib
import random

from flask import Flask, abort, jsonify, make_response, redirect, request

app = Flask(__name__)
application = app

BIG_SIZE = 10 * 1024 * 1024
_big: list[bytes] = []


def big_body() -> bytes:
    """10 MiB of deterministic, non-repeating bytes (tests recompute them)."""
    if not _big:
        _big.append(random.Random(20240601).randbytes(BIG_SIZE))
    return _big[0]


ENVIRON_KEYS = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING",
                "CONTENT_TYPE", "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT",
                "SERVER_PROTOCOL", "REMOTE_ADDR", "REQUEST_URI", "HTTPS",
                "REQUEST_SCHEME", "HTTP_HOST", "HTTP_X_A", "HTTP_COOKIE",
                "wsgi.url_scheme", "wsgi.multiprocess", "wsgi.multithread",
                "wsgi.run_once", "wsgi.input_terminated")


@app.route("/")
def index():
    return "Hello from Flask on uwsgigw"


@app.route("/query")
def query():
    return jsonify({k: request.args.getlist(k) for k in request.args})


@app.route("/form", methods=["POST"])
def form():
    return jsonify({k: request.form.getlist(k) for k in request.form})


@app.route("/json", methods=["GET", "POST"])
def json_view():
    if request.method == "POST":
        data = request.get_json()
        return jsonify({"received": data, "type": type(data).__name__})
    return jsonify({"hello": "world", "n": 42, "unicode": "h\u00e9llo \u2603"})


@app.route("/upload", methods=["POST"])
def upload():
    f = request.files["file"]
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = f.stream.read(1 << 20)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    return jsonify({"filename": f.filename, "size": size, "sha256": digest.hexdigest(),
                    "note": request.form.get("note")})


@app.route("/set-cookie")
def set_cookie():
    resp = make_response("cookies set")
    resp.set_cookie("flavour", "chocolate")
    resp.set_cookie("session", "abc123", httponly=True)
    return resp


@app.route("/cookies")
def cookies():
    return jsonify(dict(request.cookies))


@app.route("/redirect")
def go():
    return redirect("/landing")


@app.route("/landing")
def landing():
    return "landed"


@app.route("/missing")
def missing():
    abort(404)


@app.route("/error")
def error():
    raise RuntimeError("flask test error (expected)")


@app.route("/big")
def big():
    resp = make_response(big_body())
    resp.headers["Content-Type"] = "application/octet-stream"
    return resp


@app.route("/environ", methods=["GET", "POST"])
def environ():
    env = request.environ
    return jsonify({k: env[k] for k in ENVIRON_KEYS if k in env})
