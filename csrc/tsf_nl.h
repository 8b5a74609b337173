/* tsf_nl.h: walking netlink messages and attributes, libmnl style (internal to csrc/).
 *
 * The one iterator both .c files use.  Each level has a pair:
 *   ok(p, remaining)    - a whole header fits in `remaining` and its length field is sane
 *                         (at least a header, at most what remains); call it before reading
 *                         anything else at p;
 *   next(p, &remaining) - step over the (aligned) item; `remaining` shrinks and never goes
 *                         below zero, so p never passes the end of its container.
 * `remaining` is signed (long): a container shorter than a header simply fails ok().
 * Every multi-byte read goes through memcpy: payloads sit at unaligned offsets (the STATS
 * payload starts at 4 mod 8).  No allocation, no errno, no state.
 */
#ifndef TSF_NL_H
#define TSF_NL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tsf_abi.h"

static inline uint16_t tsf_rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t tsf_rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* Step `step` bytes, clipped to what remains. */
static inline const uint8_t *tsf_nl_step(const uint8_t *p, long step, long *remaining)
{
    if (step > *remaining)
        step = *remaining;
    *remaining -= step;
    return p + step;
}

/* ---- messages ------------------------------------------------------------------------ */
static inline uint32_t tsf_nlmsg_len(const uint8_t *msg) { return tsf_rd32(msg); }
static inline uint16_t tsf_nlmsg_type(const uint8_t *msg) { return tsf_rd16(msg + 4); }
static inline uint32_t tsf_nlmsg_seq(const uint8_t *msg) { return tsf_rd32(msg + 8); }
static inline uint32_t tsf_nlmsg_port(const uint8_t *msg) { return tsf_rd32(msg + 12); }

static inline int tsf_nlmsg_ok(const uint8_t *msg, long remaining)
{
    if (remaining < (long)TSF_NLMSG_HDRLEN)
        return 0;
    uint32_t len = tsf_nlmsg_len(msg);
    return len >= TSF_NLMSG_HDRLEN && (long)len <= remaining;
}

static inline const uint8_t *tsf_nlmsg_next(const uint8_t *msg, long *remaining)
{
    return tsf_nl_step(msg, (long)TSF_NLMSG_ALIGN(tsf_nlmsg_len(msg)), remaining);
}

/* A generic netlink message (already nlmsg_ok) long enough for its genlmsghdr. */
static inline int tsf_genl_ok(const uint8_t *msg)
{
    return tsf_nlmsg_len(msg) >= TSF_NLMSG_HDRLEN + TSF_GENL_HDRLEN;
}

static inline uint8_t tsf_genl_cmd(const uint8_t *msg) { return msg[TSF_NLMSG_HDRLEN]; }

/* The first attribute of a generic netlink message (tsf_genl_ok) and the bytes they span. */
static inline const uint8_t *tsf_genl_attrs(const uint8_t *msg, long *remaining)
{
    *remaining = (long)tsf_nlmsg_len(msg) - (long)(TSF_NLMSG_HDRLEN + TSF_GENL_HDRLEN);
    return msg + TSF_NLMSG_HDRLEN + TSF_GENL_HDRLEN;
}

/* ---- attributes ---------------------------------------------------------------------- */
static inline uint16_t tsf_attr_len(const uint8_t *attr) { return tsf_rd16(attr); }
static inline uint16_t tsf_attr_type(const uint8_t *attr) { return tsf_rd16(attr + 2) & TSF_NLA_TYPE_MASK; }
static inline const uint8_t *tsf_attr_payload(const uint8_t *attr) { return attr + TSF_NLA_HDRLEN; }
static inline long tsf_attr_payload_len(const uint8_t *attr)
{
    return (long)tsf_attr_len(attr) - (long)TSF_NLA_HDRLEN;
}

static inline int tsf_attr_ok(const uint8_t *attr, long remaining)
{
    if (remaining < (long)TSF_NLA_HDRLEN)
        return 0;
    uint16_t len = tsf_attr_len(attr);
    return len >= TSF_NLA_HDRLEN && (long)len <= remaining;
}

static inline const uint8_t *tsf_attr_next(const uint8_t *attr, long *remaining)
{
    return tsf_nl_step(attr, (long)TSF_NLA_ALIGN((uint32_t)tsf_attr_len(attr)), remaining);
}

/* The attributes nested in `attr` (tsf_attr_ok) and the bytes they span. */
static inline const uint8_t *tsf_attr_nested(const uint8_t *attr, long *remaining)
{
    *remaining = tsf_attr_payload_len(attr);
    return tsf_attr_payload(attr);
}

#endif
