"""The app behind the pool of tests/test_rolling_restart.py and the container
files' tests: each answer says which server (``$ROLLING_SERVER``, set per
server by the test) and which worker made it.

- ``GET /who?S``  -> "<server> <pid>" after sleeping S seconds (default 0)
- ``POST /who?S`` -> "<server> <pid> <length> <sha256 hex>" of the body it read
- ``GET /orphan?S`` -> starts ``sleep S`` through a shell that exits at once,
  leaving the sleep an orphan (for the server run as PID 1); its pid
- anything else   -> "ok" (health probes)
"""

import hashlib
import os
import subprocess
import time

SERVER = os.environ.get("ROLLING_SERVER", "-")


def application(environ, start_response):
    if environ["PATH_INFO"] == "/who":
        body = environ["wsgi.input"].read() if environ["REQUEST_METHOD"] == "POST" else None
        time.sleep(float(environ.get("QUERY_STRING") or 0))
        text = "%s %d" % (SERVER, os.getpid())
        if body is not None:
            text += " %d %s" % (len(body), hashlib.sha256(body).hexdigest())
    elif environ["PATH_INFO"] == "/orphan":
        seconds = float(environ.get("QUERY_STRING") or 1)
        text = subprocess.run(["sh", "-c", "sleep %g >/dev/null 2>&1 & echo $!" % seconds],
                              capture_output=True, text=True, check=True).stdout.strip()
    else:
        text = "ok"
    data = text.encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(data)))])
    return [data]
