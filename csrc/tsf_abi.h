/* Kernel ABI numbers for netlink, generic netlink and TASKSTATS/CGROUPSTATS.
 *
 * Written out here on purpose: the build host's <linux/taskstats.h> may be older than the
 * running kernel (these machines ship the v13 header while the kernel sends v16).  The
 * struct taskstats layout itself is not here: it is data, owned by taskstats_fast/layout.py
 * and handed to the C core as a copy plan (struct tsf_plan).
 */
#ifndef TSF_ABI_H
#define TSF_ABI_H

/* The numbers the Python side needs too: handed to cffi (csrc/build_ffi.py), so they are written
 * here once.  Only plain integer constants may stand in this region. */
/* cffi:begin */
/* sockets (linux/netlink.h, asm-generic/socket.h, linux/sock_diag.h) */
#define TSF_NETLINK_GENERIC   16
#define TSF_SO_RCVBUFFORCE    33
#define TSF_SO_MEMINFO        55
#define TSF_SK_MEMINFO_RMEM_ALLOC 0
#define TSF_SK_MEMINFO_DROPS  8
#define TSF_SK_MEMINFO_VARS   9
/* request attributes of TASKSTATS_CMD_GET (linux/taskstats.h) */
#define TSF_TASKSTATS_CMD_ATTR_PID                1
#define TSF_TASKSTATS_CMD_ATTR_TGID               2
#define TSF_TASKSTATS_CMD_ATTR_REGISTER_CPUMASK   3
#define TSF_TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK 4
/* cffi:end */

/* netlink (linux/netlink.h) */
#define TSF_NLMSG_HDRLEN      16u
#define TSF_NLMSG_ALIGN(n)    (((n) + 3u) & ~3u)
#define TSF_NLMSG_NOOP        1
#define TSF_NLMSG_ERROR       2
#define TSF_NLMSG_DONE        3
#define TSF_NLMSG_OVERRUN     4
#define TSF_NLMSG_MIN_TYPE    0x10
#define TSF_NLM_F_REQUEST     0x01
#define TSF_NLM_F_ACK         0x04

/* attributes (linux/netlink.h) */
#define TSF_NLA_HDRLEN        4u
#define TSF_NLA_ALIGN(n)      (((n) + 3u) & ~3u)
#define TSF_NLA_TYPE_MASK     0x3fff  /* strips NLA_F_NESTED and NLA_F_NET_BYTEORDER */

/* generic netlink (linux/genetlink.h) */
#define TSF_GENL_HDRLEN       4u
#define TSF_GENL_ID_CTRL      0x10
#define TSF_CTRL_CMD_NEWFAMILY 1
#define TSF_CTRL_CMD_GETFAMILY 3
#define TSF_CTRL_ATTR_FAMILY_ID   1
#define TSF_CTRL_ATTR_FAMILY_NAME 2
#define TSF_CTRL_ATTR_VERSION     3
#define TSF_CTRL_ATTR_HDRSIZE     4
#define TSF_CTRL_ATTR_MAXATTR     5

/* TASKSTATS (linux/taskstats.h) */
#define TSF_TASKSTATS_GENL_VERSION 1
#define TSF_TASKSTATS_CMD_GET      1
#define TSF_TASKSTATS_CMD_NEW      2
#define TSF_TASKSTATS_TYPE_PID       1
#define TSF_TASKSTATS_TYPE_TGID      2
#define TSF_TASKSTATS_TYPE_STATS     3
#define TSF_TASKSTATS_TYPE_AGGR_PID  4
#define TSF_TASKSTATS_TYPE_AGGR_TGID 5
#define TSF_TASKSTATS_TYPE_NULL      6

/* CGROUPSTATS (linux/cgroupstats.h) */
#define TSF_CGROUPSTATS_CMD_GET         4
#define TSF_CGROUPSTATS_CMD_NEW         5
#define TSF_CGROUPSTATS_TYPE_CGROUP_STATS 1
#define TSF_CGROUPSTATS_CMD_ATTR_FD     1
#define TSF_CGROUPSTATS_NFIELDS         5   /* nr_sleeping, nr_running, nr_stopped,
                                               nr_uninterruptible, nr_io_wait: u64 each */

#endif
