"""Process exit codes, distinct so systemd and scripts can tell failures apart.

Values follow gunicorn's arbiter (3 = worker boot error, 4 = app load error)
and sysexits.h (78 = configuration error).
"""

OK = 0
RUNTIME_ERROR = 1
WORKER_BOOT_ERROR = 3
APP_LOAD_ERROR = 4
SOCKET_ERROR = 5
CONFIG_ERROR = 78
