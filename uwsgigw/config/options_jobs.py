"""The option-table rows of the master's background jobs: attached daemons
(process/daemons.py) and cron jobs (process/cron.py). Plain data, in the
Processes group; options.py makes them ``Option``s (kept apart only for that
file's length, as options_static.py)."""

from __future__ import annotations

from . import daemonspec

ROWS: list[dict] = [
    dict(name="attach-daemon", kind=daemonspec.ATTACH, default=[],
         help="run COMMAND (through /bin/sh -c, from "
              "chdir) beside the workers once they accept, with its output in the log, "
              "restarted when it exits (slower and slower if it keeps dying), restarted "
              "after a graceful reload so it runs the deployed code, stopped with the "
              "server (SIGTERM to its process group, SIGKILL after reload-mercy; processes "
              "it left, even setsid ones, are stopped too)",
         multi=True, metavar="COMMAND"),
    dict(name="attach-daemon2", kind=daemonspec.ATTACH2, default=[],
         help="attach-daemon with settings: "
              "cmd=COMMAND plus any of stopsignal=, reloadsignal= (sent on a graceful "
              "reload instead of a restart), touch=FILE;FILE (restart when touched), "
              "pidfile= (followed as in smart-attach-daemon), daemonize=1 (with pidfile: "
              "uwsgigw writes it), freq=, control=1 (its exit stops the server), stdin=1, "
              "chdir=, max_throttle=SECONDS, notifypid=1; signals as numbers or names",
         multi=True, metavar="KEY=VALUE,..."),
    dict(name="smart-attach-daemon", kind=daemonspec.SMART, default=[],
         help="run COMMAND, which forks itself "
              "and writes PIDFILE; the master follows that pid, restarts the command when "
              "it is gone (or FREQ seconds pass without a live pid in the file, default 10) "
              "and keeps it running across graceful reloads",
         multi=True, metavar="PIDFILE[,FREQ] COMMAND"),
    dict(name="smart-attach-daemon2", kind=daemonspec.SMART2, default=[],
         help="smart-attach-daemon for a "
              "command that does not fork itself: uwsgigw writes PIDFILE",
         multi=True, metavar="PIDFILE[,FREQ] COMMAND"),
    dict(name="daemons-honour-stdin", kind="bool", default=False,
         help="attached daemons inherit the master's "
              "stdin instead of /dev/null",
         ),
    dict(name="cron", kind="cron", default=[],
         help="run a shell command from the master, as uWSGI does: "
              "MINUTE HOUR DAY MONTH WEEKDAY COMMAND in local time, -1 (or *) for any, -N (or */N) "
              "for every N (the value is a multiple of N; no ranges or lists); day and weekday both given: either matches. "
              "/bin/sh -c COMMAND from chdir, in its own process group; its output goes to "
              "the log as [cron N] lines (N: its place among the cron, then unique-cron, then "
              "cron2 lines), its exit status is logged; a reload does not stop it",
         multi=True, metavar="MIN HOUR DAY MON WDAY CMD"),
    dict(name="unique-cron", kind="cron", default=[],
         help="like cron, but a run is skipped (and logged) while "
              "the previous run of the job is still going, also across a reload",
         multi=True, metavar="MIN HOUR DAY MON WDAY CMD"),
    dict(name="cron2", kind="cron2", default=[],
         help="a cron job as key=value,... COMMAND: minute, hour, day, "
              "month, week (default -1), unique=1, harakiri=SECONDS (0: none for this job); "
              "legion= is not supported",
         multi=True, metavar="KEY=VALUE,... CMD"),
    dict(name="cron-harakiri", kind="int", default=0,
         help="kill (SIGKILL, its process group) a cron run that "
              "takes longer than this many seconds, and log it (0: no limit)",
         metavar="SECONDS"),
]
