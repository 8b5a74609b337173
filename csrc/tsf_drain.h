/* tsf_drain: wait on netlink sockets, receive datagrams in batches (recvmmsg) into a
 * caller-owned arena and decode them straight into caller-owned records.
 *
 * Used by the exit-stream listener (many sockets, one per CPU or shard) and by bulk queries
 * (one socket).  No allocation; the Python layer owns every buffer and every socket.  Per-socket
 * counters live in struct tsf_source so loss is accounted where it happens:
 *   - overruns: ENOBUFS from recv (the kernel dropped datagrams for this socket),
 *   - drops:    the kernel's own count of dropped datagrams (SO_MEMINFO SK_MEMINFO_DROPS),
 *   - seq_lost: gaps in nlmsg_seq of exit messages (one socket per CPU makes it per-CPU exact),
 *   - truncated: datagrams larger than an arena slot (MSG_TRUNC; their records are lost).
 */
#ifndef TSF_DRAIN_H
#define TSF_DRAIN_H

#include "tsf_codec.h"

/* cffi:begin */
struct tsf_source {
    /* set by the caller */
    int32_t fd;
    uint32_t shard;          /* stamped into every record from this socket */
    uint32_t track_seq;      /* 1: exit stream of one CPU, count nlmsg_seq gaps */
    /* sequence state */
    uint32_t seq_valid;
    uint32_t next_seq;
    uint32_t reserved;
    /* counters, only ever increased */
    uint64_t datagrams;
    uint64_t bytes;
    uint64_t records;
    uint64_t seq_lost;       /* events missing between consecutive seqs */
    uint64_t seq_backwards;  /* seq went back (task migrated CPUs mid-send); not a loss */
    uint64_t overruns;       /* ENOBUFS reported by recv */
    uint64_t drops;          /* kernel's drop counter for the socket, last read */
    uint64_t truncated;      /* datagrams cut by MSG_TRUNC */
    uint64_t bad;            /* malformed parts (TSF_NOTE_BAD) */
    uint64_t kernel_errors;  /* NLMSG_ERROR notes with a non-zero errno */
    int32_t error;           /* fatal errno of the last call on this socket, else 0 */
    int32_t reserved2;
};

struct tsf_drain_args {
    uint8_t *arena;          /* nslots * slot_size bytes: recvmmsg lands datagrams here */
    uint32_t slot_size;      /* >= 8192: a PID+TGID exit datagram is 1172..1428 bytes */
    uint32_t nslots;
    uint8_t *records;        /* capacity records of plan->record_size bytes */
    uint32_t capacity;
    uint32_t notes_cap;
    struct tsf_note *notes;  /* notes_cap notes (kernel errors/ACKs, malformed parts) */
    int32_t timeout_ms;      /* wait for the first datagram: -1 forever, 0 never */
    uint16_t family;
    uint16_t reserved;
    uint64_t min_records;    /* keep waiting (within timeout) until this many records or notes */
};

struct tsf_drain_result {
    uint32_t records;
    uint32_t notes;          /* may exceed notes_cap: the rest were counted, not stored */
    uint32_t datagrams;
    uint32_t timed_out;      /* 1 if the wait ended by timeout */
    int32_t interrupted;     /* 1 if poll was interrupted by a signal (EINTR) */
    int32_t error;           /* errno of a fatal error (poll failure), else 0 */
};

/* Receive and decode from every readable socket in src[0..nsrc) until the record space is
 * nearly full, no socket has data left, or (when nothing has arrived yet) the timeout passes.
 * Returns the records written (also in res->records) or a negative TSF_E_*. */
int tsf_drain(const struct tsf_plan *plan, struct tsf_source *src, size_t nsrc,
              const struct tsf_drain_args *args, struct tsf_drain_result *res);

/* Refresh src->drops from the kernel (SO_MEMINFO); 0 or a negative errno. */
int tsf_source_read_drops(struct tsf_source *src);
/* cffi:end */

#endif
