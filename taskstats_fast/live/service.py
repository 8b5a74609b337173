"""``taskstats-fast serve`` as a library object: accounting intervals into the exporter, served.

``MetricsService`` wires three parts it does not implement: ``Accounting`` (intervals of
per-task deltas, exited tasks included), ``PrometheusExporter`` (the counters) and
``MetricsServer`` (HTTP).  The order of opening matters and is this class's job:

1. bind the HTTP port first (the constructor), so a port in use fails at once, before any
   netlink socket is registered with the kernel;
2. ``open()``: register the exit listener and open the query socket (what needs root), and
   start no thread;
3. ``run()``: start accounting (its reader thread and first look) and answer scrapes.

A caller that drops root does it between ``open()`` and ``run()``, while no other thread runs,
keeping CAP_NET_ADMIN: the kernel checks it at every TASKSTATS query of the live tasks.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Mapping, Optional, Union

from .defaults import DEFAULT_INTERVAL
from .exporter import (DEFAULT_FORGET_AFTER, DEFAULT_MAX_CGROUPS, DEFAULT_MAX_COMMANDS, DEFAULT_MAX_GROUPS,
                       ExporterCounts, Grouping, PrometheusExporter)
from .server import MetricsServer

__all__ = ["MetricsService", "DEFAULT_INTERVAL"]



class MetricsService:
    """Serve per-cgroup and per-command counters of every task at ``http://host:port/metrics``.

    ``max_*``, ``forget_after`` and ``grouping`` go to ``PrometheusExporter``;
    ``listener_options`` to ``ExitListener`` (cpus, shards, rcvbuf), ``http_options`` to
    ``MetricsServer`` (web, max_connections, idle_timeout).  Use as a context
    manager, or call ``open()`` / ``run(stop)`` / ``close()``.
    """

    def __init__(self, host: str, port: int, *, interval: float = DEFAULT_INTERVAL,
                 max_commands: int = DEFAULT_MAX_COMMANDS, max_cgroups: int = DEFAULT_MAX_CGROUPS,
                 max_groups: int = DEFAULT_MAX_GROUPS, forget_after: float = DEFAULT_FORGET_AFTER,
                 grouping: Optional[Grouping] = None, http_options: Optional[Mapping[str, Any]] = None,
                 **listener_options: Any):
        if not interval > 0:
            raise ValueError(f"the interval is in seconds and must be positive, not {interval!r}")
        self.interval = float(interval)
        self._listener_options: Dict[str, Any] = listener_options
        self._listener: Any = None
        self._connection: Any = None
        self._accounting: Any = None
        self.last_counts: Optional[ExporterCounts] = None
        self.exporter = PrometheusExporter(max_commands=max_commands, max_cgroups=max_cgroups,
                                           max_groups=max_groups, forget_after=forget_after, grouping=grouping,
                                           listener_counters=self._listener_counters)
        # binds now (see the module docstring); http_options: web config, connection cap, idle timeout
        self.server = MetricsServer(self.exporter, host, port, **(http_options or {}))

    @property
    def url(self) -> str:
        return self.server.url

    def _listener_counters(self) -> Any:
        return None if self._listener is None else self._listener.stats

    def open(self) -> "MetricsService":
        """Register the exit listener and open the query socket (needs root; starts no thread)."""
        from ..kernel.connection import Connection   # the exit stream brings asyncio: load on use
        from ..kernel.listener import ExitListener
        if self._listener is None:
            try:
                self._listener = ExitListener(**self._listener_options)
                self._connection = Connection(warn_delayacct=False)
            except BaseException:
                self.close()
                raise
        return self

    def run(self, stop: Union[threading.Event, Callable[[], bool], None] = None) -> int:
        """Start accounting, answer scrapes and add each interval to the counters until ``stop``
        is set (checked at each interval's end) or the accounting closes; returns the intervals
        counted."""
        from ..accounting.accounting import Accounting
        self.open()
        should_stop = stop.is_set if isinstance(stop, threading.Event) else (stop or (lambda: False))
        if self._accounting is None:
            self._accounting = Accounting(interval=self.interval, listener=self._listener,
                                          connection=self._connection).open()
        self.server.start()
        count = 0
        for interval in self._accounting:
            self.exporter.write(interval)
            count += 1
            if should_stop():
                break
        return count

    def close(self) -> None:
        """Stop answering, deregister the listener, close the sockets (idempotent).  ``last_counts``
        keeps the exporter's counts as the last scrape could see them, listener included."""
        if self._listener is not None or self.last_counts is None:
            self.last_counts = self.exporter.counts()
        self.server.close()
        if self._accounting is not None:
            self._accounting.close()
            self._accounting = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self.exporter.close()

    def __enter__(self) -> "MetricsService":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def describe(self) -> str:
        """One line on what is served, for the command line to print."""
        listener = self._listener
        cpus = f" from {len(listener.cpus)} CPUs" if listener is not None else ""
        return f"serving {self.url}: every task{cpus}, in intervals of {self.interval:g} s"
