"""``taskstats-fast serve``: the Prometheus exporter on HTTP until SIGTERM or Ctrl-C (exit 0).

Parsing and printing only; ``live.service.MetricsService`` does the work.
"""

from __future__ import annotations

import argparse
import signal
from typing import Any, Optional, Tuple

from .common import (EXIT_OK, add_command, add_privilege_options, check_privilege_options,
                     drop_privileges_as_asked, non_negative_int, positive_float, positive_int, say, UsageError)

__all__ = ["add_parser", "run"]


class _Stopped(Exception):
    """Raised by the SIGTERM/SIGINT/SIGHUP handler so a wait inside an interval ends at once."""


def _listen_address(text: str) -> Tuple[str, int]:
    from ..live.server import parse_listen
    try:
        return parse_listen(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(subparsers: Any) -> None:
    from ..live.defaults import (DEFAULT_FORGET_AFTER, DEFAULT_INTERVAL, DEFAULT_LISTEN, DEFAULT_MAX_CGROUPS,
                                 DEFAULT_MAX_COMMANDS, DEFAULT_MAX_GROUPS)
    from ..live.series import OTHER
    p = add_command(
        subparsers, "serve", help="serve per-cgroup and per-command counters to Prometheus (/metrics)",
        description="Count what every task uses (CPU, each delay class, I/O bytes, exits), tasks that "
                    "lived for a millisecond included, per cgroup and per command, and serve the "
                    "counters at http://HOST:PORT/metrics for Prometheus, until SIGTERM or Ctrl-C. "
                    "Needs root (the kernel's TASKSTATS interface); with --user it switches to that user "
                    "once its sockets are open, keeping CAP_NET_ADMIN alone (every query of the live "
                    "tasks needs it).",
        epilog=f"example:\n  taskstats-fast serve --listen {DEFAULT_LISTEN} --interval 5 --user nobody")
    p.add_argument("--listen", type=_listen_address, default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to serve on (default: {DEFAULT_LISTEN}, this host only: command "
                        "names and cgroup paths tell what runs here; :PORT serves every interface)")
    p.add_argument("--interval", type=positive_float, default=DEFAULT_INTERVAL, metavar="SECS",
                   help="seconds per accounting interval: how fresh the counters are at a scrape "
                        "(default: %(default)g)")
    p.add_argument("--max-commands", type=non_negative_int, default=DEFAULT_MAX_COMMANDS, metavar="N",
                   help=f"series for at most N command names, first come; later ones are counted in "
                        f"command=\"{OTHER}\" (default: %(default)s)")
    p.add_argument("--max-cgroups", type=non_negative_int, default=DEFAULT_MAX_CGROUPS, metavar="N",
                   help=f"series for at most N cgroups, first come; later ones are counted in "
                        f"cgroup=\"{OTHER}\" (default: %(default)s)")
    p.add_argument("--config", metavar="FILE",
                   help="group processes as process-exporter's config file does (process_names: name "
                        "templates, comm/exe/cmdline matchers, first match wins; plus cgroup path regexes): "
                        "taskstats_group_*{groupname=...}; needs pip install 'taskstats_fast[serve]'")
    p.add_argument("--max-groups", type=non_negative_int, default=DEFAULT_MAX_GROUPS, metavar="N",
                   help=f"series for at most N configured groups; later ones are counted in "
                        f"groupname=\"{OTHER}\" (default: %(default)s)")
    p.add_argument("--forget-after", type=positive_float, default=DEFAULT_FORGET_AFTER, metavar="SECS",
                   help="a command or group with no task for SECS seconds leaves /metrics (a removed cgroup "
                        "leaves at once), freeing its slot; if it comes back its counters start again "
                        "from 0, a reset Prometheus's rate() handles (default: %(default)g)")
    _add_http_options(p)
    add_privilege_options(p)
    p.set_defaults(run=run)


def _grouping(path: Optional[str]) -> Any:
    if path is None:
        return None
    from ..live.grouping import GroupConfigError, load_group_config
    try:
        return load_group_config(path)
    except GroupConfigError as e:
        raise UsageError(f"--config {path}: {e}") from None


def _add_http_options(p: argparse.ArgumentParser) -> None:
    from ..live.defaults import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS
    g = p.add_argument_group("HTTP")
    g.add_argument("--web-config", metavar="FILE",
                   help="TLS and basic-auth settings in the Prometheus exporter-toolkit format (the "
                        "--web.config.file of node_exporter): tls_server_config, basic_auth_users with "
                        "bcrypt hashes; needs pip install 'taskstats_fast[serve]'")
    g.add_argument("--max-connections", type=positive_int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                   help="open connections at most; one more closes the longest-idle one (default: %(default)s)")
    g.add_argument("--idle-timeout", type=positive_float, default=DEFAULT_IDLE_TIMEOUT, metavar="SECS",
                   help="close a connection that sends no complete request, or reads no response, for "
                        "SECS (default: %(default)g)")


def _http_options(args: argparse.Namespace) -> dict:
    from ..live.webconfig import WebConfigError, load_web_config
    options = {"max_connections": args.max_connections, "idle_timeout": args.idle_timeout}
    if args.web_config is not None:
        try:
            options["web"] = load_web_config(args.web_config)
        except WebConfigError as e:
            raise UsageError(f"--web-config {args.web_config}: {e}") from None
    return options


def run(args: argparse.Namespace) -> int:
    from ..live.service import MetricsService

    def on_signal(signum: int, frame: Any) -> None:
        for s in previous:     # a second signal must not cut the clean close short
            signal.signal(s, signal.SIG_IGN)
        raise _Stopped(signal.Signals(signum).name)

    check_privilege_options(args)
    grouping = _grouping(args.config)     # a bad --config stops here, before anything opens
    http_options = _http_options(args)     # so does a bad --web-config
    host, port = args.listen
    service = MetricsService(host, port, interval=args.interval, max_commands=args.max_commands,
                             max_cgroups=args.max_cgroups, max_groups=args.max_groups,
                             forget_after=args.forget_after, grouping=grouping, http_options=http_options)
    previous = {s: signal.signal(s, on_signal)
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}   # SIGHUP: session gone
    stopped_by = "the accounting closing"
    try:
        with service:
            say(service.describe())
            # the sockets are open: switch user, keeping what every live TASKSTATS query needs
            drop_privileges_as_asked(args, keep=("CAP_NET_ADMIN",))
            service.run()
    except _Stopped as e:
        stopped_by = str(e)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    stats = service.last_counts or service.exporter.counts()
    say(f"stopped by {stopped_by}: {stats.intervals:,} intervals, {stats.rows:,} task rows, "
        f"{stats.series:,} series, {stats.scrapes:,} scrapes served"
        + (f"; {stats.lost:,} exit messages lost" if stats.lost else ""))
    say(_http_summary(service.server.counts()))
    return EXIT_OK


def _http_summary(counts: Any) -> str:
    """What the HTTP side saw: connections and requests, then whatever clients did wrong."""
    problems = [f"{getattr(counts, name):,} {what}" for name, what in (
        ("timeouts", "idle timeouts"), ("evicted", "idle connections closed over the cap"),
        ("refused", "refused over the cap"), ("resets", "client resets"), ("bad_requests", "bad requests"),
        ("tls_failures", "failed TLS handshakes"), ("unauthorized", "refused passwords"),
        ("errors", "server errors")) if getattr(counts, name)]
    return (f"HTTP: {counts.connections:,} connections, {counts.requests:,} requests"
            + (f" ({', '.join(problems)})" if problems else ""))
