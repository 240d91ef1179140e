"""uWSGI options that uwsgigw does not support, with what to do instead.

Names come from uWSGI 2.0's option tables (``core/uwsgi.c`` and the python,
http, gevent and logging plugins) and from the 135 keys of the real-world INI
corpus (``../shared/ini-corpus/OPTIONS.md``). Knowing them lets uwsgigw tell
"a uWSGI option we do not run" (a warning with advice, even under ``strict``,
because the file is valid uWSGI) from "not an option at all" (a typo: a
warning with the closest name, an error under ``strict``).

Each group is (advice, names); a name ending in ``!`` takes no value on the
command line (uWSGI's ``no_argument``), so ``--static-gzip-all`` does not
swallow the next word.
"""

from __future__ import annotations

from dataclasses import dataclass

# Options that decide what is served: when one of these is all that is left,
# there is no socket uwsgigw serves and start-up explains why (settings.py).
# (http, http-socket and http11-socket are options: options.py.)
LISTENERS = frozenset("""
    https https-socket fastcgi-socket
    fastcgi-nph-socket scgi-socket scgi-nph-socket raw-socket suwsgi-socket
    ssl-socket puwsgi-socket zerg shared-socket undeferred-shared-socket
""".split())

_GROUPS: list[tuple[str, str]] = [
    ("nginx speaks HTTP and TLS to clients; use socket = ADDRESS here and "
     "uwsgi_pass ADDRESS in nginx (or http-socket = ADDRESS and proxy_pass)", """
        https https-socket fastcgi-socket
        fastcgi-nph-socket scgi-socket scgi-nph-socket raw-socket suwsgi-socket
        ssl-socket puwsgi-socket shared-socket undeferred-shared-socket
        http-socket-modifier1 http-socket-modifier2 https-socket-modifier1
        https-socket-modifier2 http-modifier1 http-modifier2 http-to http-to-https
        http-auto-gzip http-var
        http-server-name-as-http-host! http-connect-timeout
        fastcgi-modifier1 fastcgi-modifier2
        scgi-modifier1 scgi-modifier2 raw-modifier1 raw-modifier2
        sni sni-dir sni-regexp ssl-verbose! https-export-cert!
    """),
    ("set client timeouts in nginx (uwsgi_read_timeout, uwsgi_send_timeout); "
     "uwsgigw's own is socket-timeout", """
        https-timeout http-session-timeout
    """),
    ("serve these from nginx with a location block (location /static/ { alias "
     "/path/to/static/; }); uwsgigw's static-map family covers the rest", """
        check-static-docroot! collect-header pull-header
    """),
    ("run it as its own systemd unit (or supervisor program)", """
        attach-daemon attach-daemon2 attach-control-daemon smart-attach-daemon
        smart-attach-daemon2 legion-attach-daemon legion-smart-attach-daemon
        legion-smart-attach-daemon2 daemons-honour-stdin! worker-exec worker-exec2
    """),
    ("use a systemd timer (or cron) that runs the command", """
        cron cron2 unique-cron legion-cron cron-legion unique-legion-cron
        unique-cron-legion cron-harakiri signal-timer timer signal-rbtimer rbtimer
    """),
    ("run commands from the systemd unit (ExecStartPre=/ExecStartPost=) or your "
     "deploy script; SIGTERM already stops uwsgigw gracefully", """
        hook-asap hook-pre-jail hook-post-jail hook-in-jail hook-as-root
        hook-as-user hook-as-user-atexit hook-pre-app hook-post-app hook-post-fork
        hook-accepting hook-accepting1 hook-accepting-once hook-accepting1-once
        hook-master-start hook-touch hook-emperor-start hook-emperor-stop
        hook-emperor-reload hook-emperor-lost hook-as-vassal hook-as-emperor
        hook-as-mule hook-as-gateway after-request-hook after-request-call
        exec-asap exec-pre-jail exec-post-jail exec-in-jail exec-as-root
        exec-as-user exec-as-user-atexit exec-pre-app exec-post-app
        exec-as-vassal exec-as-emperor call-asap call-pre-jail call-post-jail
        call-in-jail call-as-root call-as-user call-as-user-atexit call-pre-app
        call-post-app file-write
    """),
    ("uwsgigw logs to stderr, logto or daemonize; route and rotate with "
     "journald or logrotate", """
        logger req-logger logger-req log-route log-req-route log-encoder
        log-req-encoder log-drain log-filter log-master! log-master-bufsize
        log-master-stream! log-master-req-stream! threaded-logger! logdate
        log-date log-prefix logformat-strftime! log-format-strftime! log-maxsize
        log-backupname log-reopen! log-truncate! logto2 log-syslog log-socket
        log-micros! log-zero! log-big log-sendfile log-ioerror
        log-x-forwarded-for! logfile-chown! logfile-chmod touch-logrotate
        touch-logreopen log-alarm alarm-log not-log-alarm
    """),
    ("reload with SIGHUP (uwsgigw --reload PIDFILE) from your deploy script or "
     "a systemd .path unit", """
        touch-reload touch-workers-reload touch-chain-reload touch-mules-reload
        touch-spoolers-reload touch-exec touch-signal fs-reload fs-brutal-reload
        fs-signal py-autoreload py-auto-reload python-autoreload
        python-auto-reload py-auto-reload-ignore reload-on-exception!
        reload-on-exception-type reload-on-exception-value
        reload-on-exception-repr reload-on-fd brutal-reload-on-fd
    """),
    ("uwsgigw runs a fixed pool of processes; set processes = N (SIGTTIN and "
     "SIGTTOU add or remove one at run time)", """
        cheaper cheaper-initial cheaper-algo cheaper-step cheaper-overload
        cheaper-rss-limit-soft cheaper-rss-limit-hard cheaper-busyness-max
        cheaper-busyness-min cheaper-busyness-multiplier
        cheaper-busyness-penalty cheaper-busyness-verbose!
        cheaper-busyness-backlog-alert cheaper-busyness-backlog-multiplier
        cheaper-busyness-backlog-step cheaper-busyness-backlog-nonzero
        cheap! idle die-on-idle! vassal-sos vassal-sos-backlog
    """),
    ("recycle workers with max-requests, reload-on-rss or reload-on-as", """
        max-worker-lifetime max-worker-lifetime-delta min-worker-lifetime
        evil-reload-on-rss evil-reload-on-as mem-collector-freq
        reload-on-exception-limit
    """),
    ("uwsgigw runs synchronous workers; use threads = N (or an ASGI server "
     "for an async app)", """
        gevent gevent-early-monkey-patch! gevent-monkey-patch!
        gevent-wait-for-hub! async ugreen! ugreen-stacksize greenlet! asyncio
        tornado loop coroae
    """),
    ("process titles are left as they are; nothing to do", """
        auto-procname! procname-prefix procname-prefix-spaced procname-append
        procname procname-master
    """),
    ("import it from your WSGI module", """
        import pyimport py-import python-import shared-import shared-pyimport
        shared-py-import shared-python-import pymodule-alias post-pymodule-alias
        eval
    """),
    ("write a wsgi.py that calls paste.deploy.loadapp('config:/path/app.ini') "
     "and point module = at it", """
        paste paste-logger! ini-paste ini-paste-logged pecan
    """),
    ("set it in the systemd unit (UMask=, LimitNOFILE=, LimitAS=, Nice=, "
     "CPUAffinity=, sandboxing options) instead", """
        umask max-fd limit-as limit-nproc prio cpu-affinity cgroup cgroup-opt
        chroot pivot-root unshare unshare2 namespace ns namespace-net ns-net
        jail jailed! refork! cap never-swap! ksm
    """),
    ("use a task queue (Celery, RQ, ...) run as its own systemd unit", """
        spooler spooler-external spooler-ordered! spooler-chdir
        spooler-processes spooler-quiet! spooler-max-tasks spooler-harakiri
        spooler-frequency spooler-freq spooler-import spooler-pyimport mule
        mules farm mule-harakiri mule-msg-size signal
    """),
    ("use your framework's cache (Redis, memcached)", """
        cache cache2 cache-blocksize cache-store cache-store-sync
        cache-no-expire! cache-expire-freq cache-report-freed-items!
        cache-udp-server cache-udp-node cache-sync check-cache
        load-file-in-cache add-cache-item sharedarea queue queue-blocksize
        queue-store queue-store-sync
    """),
    ("do it in nginx (add_header, rewrite, return, error_page) or in the app",
     """
        add-header rem-header del-header route route-host route-uri route-qs
        route-remote-addr route-user-agent route-remote-user route-referer
        route-label route-if route-if-not route-run final-route
        final-route-status error-route error-route-status response-route
        error-page-403 error-page-404 error-page-500 vhost! vhost-host!
        manage-script-name-prefix
    """),
    ("nginx upstream blocks replace uWSGI's subscription and emperor systems; "
     "use one systemd unit (or template unit) per app", """
        subscribe-to subscribe st subscribe2 subscribe-freq
        subscription-tolerance unsubscribe-on-graceful-reload! emperor
        emperor-tyrant! vassals-inherit vassals-include vassal-set vassals-set
        heartbeat zerg-server zerg-fallback! legion legion-mcast legion-node
        bonjour-register avahi-register
    """),
    ("uwsgigw's stats socket serves plain JSON in the uwsgitop schema", """
        stats-minified! stats-min! stats-push stats-no-cores!
        stats-no-metrics! enable-metrics! metric metric-threshold metrics-dir
        carbon alarm alarm-backlog snmp
    """),
    ("convert the file to INI (uwsgigw reads INI only)", """
        yaml yml json js xml xmlconfig sqlite3 ldap config
    """),
    ("write the pid with pidfile =, chdir with chdir =, daemonize with "
     "daemonize =", """
        pidfile2 safe-pidfile safe-pidfile2 daemonize2 chdir2
    """),
    ("uwsgigw has no such switch; remove the line", """
        ignore-sigpipe! ignore-write-errors! disable-write-exception!
        write-errors-tolerance write-errors-exception-only! honour-stdin!
        no-orphans! master-as-root! no-default-app! catch-exceptions!
        thread-stacksize threads-stacksize thread-stack-size threads-stack-size
        close-on-exec! close-on-exec2! abstract-socket! freebind! reuse-port!
        so-keepalive! tcp-nodelay! map-socket max-vars max-apps reaper!
        cgi-mode! skip-zero! skip-atexit! no-threads-wait! exit-on-reload!
        force-gateway! backtrace-depth check-interval forkbomb-delay
        binary-path py-programname py-program-name pyargv optimize no-site!
        py-tracebacker reload-os-env! wsgi-env-behaviour wsgi-env-behavior
        py-call-osafterfork! wsgi-disable-file-wrapper! wsgi-strict!
        wsgi-accept-buffer! start_response-nodelay! py-executable
        py-sys-executable harakiri-graceful-timeout harakiri-graceful-signal
        harakiri-queue-threshold harakiri-no-arh! no-harakiri-arh!
        no-harakiri-after-req-hook! socket-send-timeout so-send-timeout
        socket-sndbuf socket-rcvbuf shutdown-sockets! tcp-fast-open
        declare-option declare-option2 mode profiler upload-progress
        body-read-warning chunked-input-limit chunked-input-timeout
        response-headers-limit websockets-ping-freq websockets-pong-tolerance
        add-gid no-initgroups! immediate-uid immediate-gid
        flock flock-wait flock2 flock-wait2 lock-engine locks ftok
        persistent-ipcsem! weight auto-weight no-server! command-mode!
        no-defer-accept! envdir early-envdir unenv blacklist whitelist
        end-blacklist! end-whitelist! print iprint exit dlopen autoload!
        allowed-modifiers remap-modifier master-fifo notify-socket
        wait-for-interface wait-for-fs wait-for-file wait-for-dir
        wait-for-socket wait-for-mountpoint safe-fd fd-safe dump-options!
        show-config! version! help! usage! get inject-before inject-after
        fallback-config python-worker-override
    """),
]


@dataclass(frozen=True)
class Unsupported:
    """A uWSGI option uwsgigw does not run, and what to do instead."""

    name: str
    advice: str
    takes_value: bool = True

    @property
    def listener(self) -> bool:
        return self.name in LISTENERS


def _build() -> dict[str, Unsupported]:
    table: dict[str, Unsupported] = {}
    for advice, names in _GROUPS:
        for word in names.split():
            name = word.rstrip("!")
            table[name] = Unsupported(name, advice, takes_value=not word.endswith("!"))
    return table


UNSUPPORTED: dict[str, Unsupported] = _build()


def groups() -> list[tuple[str, list[str]]]:
    """(advice, sorted names) for the settings reference."""
    return [(advice, sorted(word.rstrip("!") for word in names.split()))
            for advice, names in _GROUPS]
