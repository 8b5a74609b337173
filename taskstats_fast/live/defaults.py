"""The defaults of `serve`: its series caps, forgetting, interval and HTTP limits.

In a module that imports nothing, so that building the command line (which every subcommand's
start and --help does) names them without loading the exporter, the HTTP server and asyncio;
``exporter``, ``server`` and ``service`` take them from here.
"""

__all__ = ["DEFAULT_MAX_COMMANDS", "DEFAULT_MAX_CGROUPS", "DEFAULT_MAX_GROUPS", "DEFAULT_FORGET_AFTER",
           "DEFAULT_LISTEN", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_IDLE_TIMEOUT",
           "DEFAULT_INTERVAL"]

DEFAULT_MAX_COMMANDS = 200
DEFAULT_MAX_CGROUPS = 1000
DEFAULT_MAX_GROUPS = 1000
#: Seconds without a task after which a group's series leaves /metrics.
DEFAULT_FORGET_AFTER = 600.0
#: Loopback by default: command names and cgroup paths say what runs on the host, and a
#: Prometheus on the same host (or an SSH tunnel, or a reverse proxy) reaches it there.
DEFAULT_LISTEN = "127.0.0.1:9456"
#: Open connections at most; beyond, the longest-idle one is closed.  Well below the usual
#: 1024 open files, with room for the netlink sockets and files of the process.
DEFAULT_MAX_CONNECTIONS = 512
#: Seconds a connection may wait for its next complete request (or take to read a response):
#: longer than Prometheus's default scrape interval of 15 s, so its keep-alive connection stays.
DEFAULT_IDLE_TIMEOUT = 30.0
#: Seconds per accounting interval: a scrape sees counters at most this old.  Prometheus
#: scrapes every 15 s by default, so three intervals land between two scrapes.
DEFAULT_INTERVAL = 5.0
