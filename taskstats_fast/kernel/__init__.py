"""The kernel-facing side: netlink sockets, queries, the exit stream and its registration,
namespaces, CPU lists and the delay-accounting switch.  Nothing here writes files or tables; it
reaches the C core only through ``taskstats_fast._native``."""
