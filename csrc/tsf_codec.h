/* tsf_codec: parse and build TASKSTATS generic-netlink messages over caller-owned buffers.
 *
 * The codec knows bytes, not fields: where each struct version's payload lands in an output
 * record comes from a copy plan (struct tsf_plan) that the Python layer derives from its
 * layout table.  Nothing here allocates, touches errno or blocks.  Functions return a count
 * (>= 0) or a negative TSF_E_* code; tsf_strerror() names the codes.
 *
 * The region between the cffi markers is handed verbatim to cffi's cdef by csrc/build_ffi.py.
 */
#ifndef TSF_CODEC_H
#define TSF_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* cffi:begin */
#define TSF_MAX_VERSION_SLOTS 32  /* plan tables are indexed by struct version 0..31 */
#define TSF_MAX_SEGMENTS 64

/* Error codes (negative return values and the code of TSF_NOTE_BAD notes). */
#define TSF_E_NOSPACE       -1001  /* output buffer too small */
#define TSF_E_ARG           -1002  /* invalid argument */
#define TSF_E_PLAN          -1003  /* copy plan is inconsistent with the record size */
#define TSF_E_MSG_SHORT     -1010  /* fewer bytes left than a netlink header */
#define TSF_E_MSG_LEN       -1011  /* nlmsg_len below a header or past the end of the buffer */
#define TSF_E_GENL_SHORT    -1012  /* message too short for its generic netlink header */
#define TSF_E_ERR_SHORT     -1013  /* NLMSG_ERROR message too short for its error code */
#define TSF_E_ATTR_LEN      -1020  /* nla_len below a header or past the end of its container */
#define TSF_E_ID_SHORT      -1021  /* PID/TGID attribute shorter than 4 bytes */
#define TSF_E_NO_STATS      -1022  /* AGGR nest without a STATS attribute */
#define TSF_E_STATS_SHORT   -1023  /* STATS payload shorter than its struct version's size */
#define TSF_E_VERSION       -1024  /* struct version with no decodable layout (1-3, or 0 outside TGID) */
#define TSF_E_NO_LAYOUT     -1025  /* version-0 TGID record without a PID record before it */
#define TSF_E_CGROUP_SHORT  -1026  /* CGROUP_STATS attribute shorter than 5 x u64 */
#define TSF_E_NO_REPLY      -1027  /* the buffer holds no reply of the kind asked for */

/* Kinds of notes tsf_parse reports beside the records. */
#define TSF_NOTE_ACK   1   /* NLMSG_ERROR with error 0 */
#define TSF_NOTE_ERROR 2   /* NLMSG_ERROR from the kernel: code = positive errno */
#define TSF_NOTE_DONE  3   /* NLMSG_DONE */
#define TSF_NOTE_BAD   4   /* malformed input: code = TSF_E_*, offset = where */

/* Metadata flags written into each record. */
#define TSF_FLAG_NEWER_VERSION   1
#define TSF_FLAG_LAYOUT_INFERRED 2

#define TSF_GET_REQUEST_SIZE 28   /* one GET-by-pid/tgid request: nlmsghdr + genlmsghdr + u32 attr */

struct tsf_segment {
    uint32_t src;   /* offset in the kernel payload */
    uint32_t dst;   /* offset in the output record */
    uint32_t len;
};

struct tsf_plan {
    uint32_t record_size;         /* bytes of one output record (numpy itemsize) */
    uint32_t stats_size;          /* bytes of the newest known struct (the record's stats area) */
    uint16_t max_version;         /* newest known version; newer ones decode as its prefix */
    uint16_t nseg;
    uint32_t version_size[TSF_MAX_VERSION_SLOTS];  /* sizeof(struct taskstats); 0 = refused */
    uint16_t seg_first[TSF_MAX_VERSION_SLOTS];
    uint16_t seg_count[TSF_MAX_VERSION_SLOTS];
    struct tsf_segment seg[TSF_MAX_SEGMENTS];
    /* where the metadata lives inside a record */
    uint32_t off_time_ns, off_kind, off_flags, off_layout, off_id, off_seq, off_shard;
};

struct tsf_note {
    int32_t kind;     /* TSF_NOTE_* */
    int32_t code;     /* ERROR: positive errno; BAD: TSF_E_*; else 0 */
    uint32_t offset;  /* byte offset in the buffer: the message, or for BAD the faulty part */
    uint32_t seq;     /* sequence number (ERROR/ACK: of the request answered) */
};

struct tsf_parse_result {
    uint32_t records;   /* records written */
    uint32_t messages;  /* netlink messages walked */
    uint32_t consumed;  /* bytes parsed; < len only when the record space ran out */
    uint32_t notes;     /* notes produced (more than notes_cap means some were not stored) */
    uint32_t bad;       /* TSF_NOTE_BAD among them */
};

struct tsf_family {
    uint16_t id;
    uint16_t reserved;
    uint32_t version;
    uint32_t hdrsize;
    uint32_t maxattr;
    int32_t error;     /* positive errno if the kernel answered with NLMSG_ERROR */
};

/* Check a plan once, before using it: 0 or TSF_E_PLAN. */
int tsf_plan_check(const struct tsf_plan *plan);

/* Parse every netlink message in buf[0..len).  Each AGGR_PID/AGGR_TGID nest becomes one record
 * of plan->record_size bytes in records[] (zeroed, then the payload copied per the plan, then
 * metadata).  family: the TASKSTATS family id, or 0 to accept any generic netlink type.
 * time_ns and shard are stamped into every record.  Returns the record count or a negative
 * TSF_E_*; res (required) says how far it got. */
int tsf_parse(const struct tsf_plan *plan, uint16_t family,
              const uint8_t *buf, size_t len,
              uint8_t *records, size_t capacity,
              struct tsf_note *notes, size_t notes_cap,
              uint64_t time_ns, uint32_t shard,
              struct tsf_parse_result *res);

/* Requests.  Each returns the bytes written or a negative TSF_E_*. */
/* n GETs (attr = TASKSTATS_CMD_ATTR_PID or _TGID), seq, seq+1, ...; builds as many as fit. */
long tsf_build_get(uint8_t *buf, size_t cap, uint16_t family, uint32_t seq, uint16_t attr,
                   const uint32_t *ids, size_t n, uint16_t nlm_flags);
/* REGISTER (reg != 0) or DEREGISTER a cpulist string; asks for an ACK. */
long tsf_build_cpumask(uint8_t *buf, size_t cap, uint16_t family, uint32_t seq, int reg,
                       const char *mask, size_t masklen);
long tsf_build_cgroupstats(uint8_t *buf, size_t cap, uint16_t family, uint32_t seq, uint32_t fd);
long tsf_build_getfamily(uint8_t *buf, size_t cap, uint32_t seq, const char *name, size_t namelen);

/* Replies that are not taskstats records. */
/* 1 when a CTRL_CMD_NEWFAMILY reply was found (fam filled), 0 when the kernel sent an error
 * (fam->error set), or a negative TSF_E_*. */
int tsf_parse_family(const uint8_t *buf, size_t len, struct tsf_family *fam);
/* 1 when a CGROUPSTATS_CMD_NEW reply was found (out[5] filled); 0 with *error set to the
 * positive errno when the kernel refused; TSF_E_NO_REPLY when only an ACK or nothing came. */
int tsf_parse_cgroupstats(const uint8_t *buf, size_t len, uint16_t family,
                          uint64_t *out, int32_t *error);

const char *tsf_strerror(int code);
/* cffi:end */

#endif
