/* tsf_codec.c: the netlink/TASKSTATS parser and request builders (see tsf_codec.h).
 *
 * Every walk over messages and attributes goes through the ok/next pairs of tsf_nl.h.
 */
#include "tsf_codec.h"
#include "tsf_nl.h"

#include <string.h>

/* ---- writes at any alignment ------------------------------------------------------------ */
static void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void wr64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* The positive errno of an NLMSG_ERROR code.  INT32_MIN has no positive int32 (negating it is
 * undefined behaviour): no kernel sends it, so it reads as INT32_MAX, still "some error". */
static int32_t errno_of(int32_t err)
{
    if (err == INT32_MIN)
        return INT32_MAX;
    return err < 0 ? -err : err;
}

/* ---- error strings --------------------------------------------------------------------- */
const char *tsf_strerror(int code)
{
    switch (code) {
    case TSF_E_NOSPACE: return "output buffer too small";
    case TSF_E_ARG: return "invalid argument";
    case TSF_E_PLAN: return "copy plan does not fit the record size (layout table and C core disagree)";
    case TSF_E_MSG_SHORT: return "truncated netlink message: fewer bytes left than a 16-byte header";
    case TSF_E_MSG_LEN: return "bad nlmsg_len: smaller than a header or past the end of the buffer";
    case TSF_E_GENL_SHORT: return "netlink message too short for its generic netlink header";
    case TSF_E_ERR_SHORT: return "NLMSG_ERROR message too short for its error code";
    case TSF_E_ATTR_LEN: return "bad nla_len: smaller than an attribute header or past the end of its container";
    case TSF_E_ID_SHORT: return "PID/TGID attribute shorter than 4 bytes";
    case TSF_E_NO_STATS: return "AGGR_PID/AGGR_TGID nest without a STATS attribute";
    case TSF_E_STATS_SHORT: return "STATS payload shorter than its struct version's size (truncated record)";
    case TSF_E_VERSION: return "struct taskstats version has no decodable layout (versions 1-3 are refused; 0 is only valid in TGID exit records)";
    case TSF_E_NO_LAYOUT: return "version-0 TGID record without a PID record before it in the same message";
    case TSF_E_CGROUP_SHORT: return "CGROUP_STATS attribute shorter than 5 x u64";
    case TSF_E_NO_REPLY: return "no reply of the expected kind in the buffer";
    default: return "unknown error";
    }
}

/* ---- plan ------------------------------------------------------------------------------ */
int tsf_plan_check(const struct tsf_plan *plan)
{
    if (!plan || plan->nseg > TSF_MAX_SEGMENTS || plan->max_version >= TSF_MAX_VERSION_SLOTS ||
        plan->stats_size > plan->record_size || plan->version_size[plan->max_version] != plan->stats_size)
        return TSF_E_PLAN;
    for (unsigned v = 0; v < TSF_MAX_VERSION_SLOTS; v++) {
        if (!plan->version_size[v])
            continue;
        if (plan->version_size[v] > plan->stats_size ||
            (uint32_t)plan->seg_first[v] + plan->seg_count[v] > plan->nseg)
            return TSF_E_PLAN;
        for (unsigned i = plan->seg_first[v]; i < (unsigned)plan->seg_first[v] + plan->seg_count[v]; i++) {
            const struct tsf_segment *s = &plan->seg[i];
            if ((uint64_t)s->src + s->len > plan->version_size[v] ||
                (uint64_t)s->dst + s->len > plan->stats_size)
                return TSF_E_PLAN;
        }
    }
    const uint32_t meta[][2] = {
        {plan->off_time_ns, 8}, {plan->off_kind, 1}, {plan->off_flags, 1}, {plan->off_layout, 2},
        {plan->off_id, 4}, {plan->off_seq, 4}, {plan->off_shard, 4},
    };
    for (size_t i = 0; i < sizeof meta / sizeof meta[0]; i++)
        if (meta[i][0] < plan->stats_size || (uint64_t)meta[i][0] + meta[i][1] > plan->record_size)
            return TSF_E_PLAN;
    return 0;
}

/* ---- parser ---------------------------------------------------------------------------- */
struct parse_state {
    const struct tsf_plan *plan;
    const uint8_t *buf;
    uint8_t *records;
    size_t capacity;
    struct tsf_note *notes;
    size_t notes_cap;
    uint64_t time_ns;
    uint32_t shard;
    struct tsf_parse_result *res;
};

static void note(struct parse_state *st, int32_t kind, int32_t code, const uint8_t *where, uint32_t seq)
{
    if (st->res->notes < st->notes_cap) {
        struct tsf_note *n = &st->notes[st->res->notes];
        n->kind = kind;
        n->code = code;
        n->offset = (uint32_t)(where - st->buf);
        n->seq = seq;
    }
    st->res->notes++;
    if (kind == TSF_NOTE_BAD)
        st->res->bad++;
}

/* Which plan slot decodes a payload that says `version`; 0 plus *code when none does. */
static unsigned layout_for(const struct tsf_plan *plan, uint16_t version, uint8_t kind,
                           unsigned msg_pid_layout, uint8_t *flags, int *code)
{
    if (version > plan->max_version) {
        *flags |= TSF_FLAG_NEWER_VERSION;
        return plan->max_version;
    }
    if (version == 0 && kind == TSF_TASKSTATS_TYPE_TGID) {
        if (!msg_pid_layout) {
            *code = TSF_E_NO_LAYOUT;
            return 0;
        }
        *flags |= TSF_FLAG_LAYOUT_INFERRED;
        return msg_pid_layout;
    }
    if (!plan->version_size[version]) {
        *code = TSF_E_VERSION;
        return 0;
    }
    return version;
}

/* One AGGR_PID/AGGR_TGID nest -> one record.  Returns the plan slot used (> 0), 0 when the
 * nest was reported as bad, or TSF_E_NOSPACE when the record space is full. */
static int parse_aggr(struct parse_state *st, const uint8_t *nest, uint8_t kind, uint32_t seq,
                      unsigned msg_pid_layout)
{
    long remaining;
    const uint8_t *p = tsf_attr_nested(nest, &remaining);
    const uint8_t *stats = NULL, *id_attr = NULL;

    for (; remaining > 0; p = tsf_attr_next(p, &remaining)) {
        if (!tsf_attr_ok(p, remaining)) {
            note(st, TSF_NOTE_BAD, TSF_E_ATTR_LEN, p, seq);
            return 0;
        }
        uint16_t type = tsf_attr_type(p);
        if (type == TSF_TASKSTATS_TYPE_STATS)
            stats = p;
        else if (type == TSF_TASKSTATS_TYPE_PID || type == TSF_TASKSTATS_TYPE_TGID)
            id_attr = p;
        /* TYPE_NULL padding and unknown attributes are skipped */
    }
    if (!stats) {
        note(st, TSF_NOTE_BAD, TSF_E_NO_STATS, nest, seq);
        return 0;
    }
    if (id_attr && tsf_attr_payload_len(id_attr) < 4) {
        note(st, TSF_NOTE_BAD, TSF_E_ID_SHORT, id_attr, seq);
        return 0;
    }
    long plen = tsf_attr_payload_len(stats);
    const uint8_t *payload = tsf_attr_payload(stats);
    if (plen < 2) {
        note(st, TSF_NOTE_BAD, TSF_E_STATS_SHORT, stats, seq);
        return 0;
    }
    const struct tsf_plan *plan = st->plan;
    uint16_t version = tsf_rd16(payload);
    uint8_t flags = 0;
    int code = 0;
    unsigned slot = layout_for(plan, version, kind, msg_pid_layout, &flags, &code);
    if (!slot) {
        note(st, TSF_NOTE_BAD, code, stats, seq);
        return 0;
    }
    if (plen < (long)plan->version_size[slot]) {
        note(st, TSF_NOTE_BAD, TSF_E_STATS_SHORT, stats, seq);
        return 0;
    }
    if (st->res->records >= st->capacity)
        return TSF_E_NOSPACE;

    uint8_t *rec = st->records + (size_t)st->res->records * plan->record_size;
    unsigned first = plan->seg_first[slot], nseg = plan->seg_count[slot];
    const struct tsf_segment *s = &plan->seg[first];
    if (nseg == 1 && s->src == 0 && s->dst == 0) {
        /* every version but 15 is a prefix of the newest: copy it, zero only the rest */
        memcpy(rec, payload, s->len);
        memset(rec + s->len, 0, plan->record_size - s->len);
    } else {
        memset(rec, 0, plan->record_size);
        for (unsigned i = 0; i < nseg; i++)
            memcpy(rec + s[i].dst, payload + s[i].src, s[i].len);
    }
    wr64(rec + plan->off_time_ns, st->time_ns);
    rec[plan->off_kind] = kind;
    rec[plan->off_flags] = flags;
    wr16(rec + plan->off_layout, (uint16_t)slot);
    wr32(rec + plan->off_id, id_attr ? tsf_rd32(tsf_attr_payload(id_attr)) : 0);
    wr32(rec + plan->off_seq, seq);
    wr32(rec + plan->off_shard, st->shard);
    st->res->records++;
    return (int)slot;
}

/* The attributes of one TASKSTATS_CMD_NEW message.  Returns 0, or TSF_E_NOSPACE. */
static int parse_taskstats_msg(struct parse_state *st, const uint8_t *msg, uint32_t seq)
{
    long remaining;
    const uint8_t *p = tsf_genl_attrs(msg, &remaining);
    unsigned pid_layout = 0;  /* layout of the last PID record: version-0 TGID records borrow it */

    for (; remaining > 0; p = tsf_attr_next(p, &remaining)) {
        if (!tsf_attr_ok(p, remaining)) {
            note(st, TSF_NOTE_BAD, TSF_E_ATTR_LEN, p, seq);
            return 0;  /* the rest of this message cannot be trusted; the next one can */
        }
        uint16_t type = tsf_attr_type(p);
        if (type == TSF_TASKSTATS_TYPE_AGGR_PID || type == TSF_TASKSTATS_TYPE_AGGR_TGID) {
            uint8_t kind = type == TSF_TASKSTATS_TYPE_AGGR_PID ? TSF_TASKSTATS_TYPE_PID : TSF_TASKSTATS_TYPE_TGID;
            int slot = parse_aggr(st, p, kind, seq, pid_layout);
            if (slot == TSF_E_NOSPACE)
                return TSF_E_NOSPACE;
            if (slot > 0 && kind == TSF_TASKSTATS_TYPE_PID)
                pid_layout = (unsigned)slot;
        }
    }
    return 0;
}

int tsf_parse(const struct tsf_plan *plan, uint16_t family,
              const uint8_t *buf, size_t len,
              uint8_t *records, size_t capacity,
              struct tsf_note *notes, size_t notes_cap,
              uint64_t time_ns, uint32_t shard,
              struct tsf_parse_result *res)
{
    if (!res)
        return TSF_E_ARG;
    memset(res, 0, sizeof *res);
    if (!plan || (!buf && len) || (!records && capacity) || (!notes && notes_cap) || len > UINT32_MAX)
        return TSF_E_ARG;

    struct parse_state st = {plan, buf, records, capacity, notes, notes_cap, time_ns, shard, res};
    const uint8_t *p = buf;
    long remaining = (long)len;

    for (; remaining > 0; p = tsf_nlmsg_next(p, &remaining)) {
        if (!tsf_nlmsg_ok(p, remaining)) {
            note(&st, TSF_NOTE_BAD, remaining < (long)TSF_NLMSG_HDRLEN ? TSF_E_MSG_SHORT : TSF_E_MSG_LEN, p, 0);
            break;  /* without a trustworthy length there is no next message */
        }
        uint32_t msglen = tsf_nlmsg_len(p);
        uint16_t type = tsf_nlmsg_type(p);
        uint32_t seq = tsf_nlmsg_seq(p);
        uint32_t records_before = res->records, notes_before = res->notes, bad_before = res->bad;
        res->messages++;

        if (type == TSF_NLMSG_ERROR) {
            if (msglen < TSF_NLMSG_HDRLEN + 4) {
                note(&st, TSF_NOTE_BAD, TSF_E_ERR_SHORT, p, seq);
            } else {
                int32_t err;
                memcpy(&err, p + TSF_NLMSG_HDRLEN, 4);
                /* the kernel echoes the request's header: its seq names the request answered */
                uint32_t req_seq = msglen >= 2 * TSF_NLMSG_HDRLEN + 4 ? tsf_nlmsg_seq(p + TSF_NLMSG_HDRLEN + 4) : seq;
                if (err == 0)
                    note(&st, TSF_NOTE_ACK, 0, p, req_seq);
                else
                    note(&st, TSF_NOTE_ERROR, errno_of(err), p, req_seq);
            }
        } else if (type == TSF_NLMSG_DONE) {
            note(&st, TSF_NOTE_DONE, 0, p, seq);
        } else if (type >= TSF_NLMSG_MIN_TYPE && (family == 0 || type == family)) {
            if (!tsf_genl_ok(p)) {
                note(&st, TSF_NOTE_BAD, TSF_E_GENL_SHORT, p, seq);
            } else if (tsf_genl_cmd(p) == TSF_TASKSTATS_CMD_NEW &&
                       (family != 0 || type != TSF_GENL_ID_CTRL)) {
                if (parse_taskstats_msg(&st, p, seq) == TSF_E_NOSPACE) {
                    if (records_before == 0) {
                        /* the message alone overflows the space: keep what fit, say so */
                        note(&st, TSF_NOTE_BAD, TSF_E_NOSPACE, p, seq);
                    } else {
                        /* undo the partial message; the caller continues from `consumed` */
                        res->records = records_before;
                        res->notes = notes_before;
                        res->bad = bad_before;
                        res->messages--;
                        break;
                    }
                }
            }
            /* other commands (cgroupstats, control replies) have their own parsers */
        }
        /* NOOP, OVERRUN and other families' messages are skipped */
    }
    res->consumed = (uint32_t)(p - buf);
    return (int)res->records;
}

/* ---- builders -------------------------------------------------------------------------- */
static size_t put_nlmsghdr(uint8_t *p, uint32_t len, uint16_t type, uint16_t flags, uint32_t seq)
{
    wr32(p, len);
    wr16(p + 4, type);
    wr16(p + 6, flags);
    wr32(p + 8, seq);
    wr32(p + 12, 0);  /* port id: the kernel fills in ours */
    return TSF_NLMSG_HDRLEN;
}

static size_t put_genlhdr(uint8_t *p, uint8_t cmd, uint8_t version)
{
    p[0] = cmd;
    p[1] = version;
    wr16(p + 2, 0);
    return TSF_GENL_HDRLEN;
}

/* Attribute header plus payload, zero padded to 4 bytes; returns the aligned size. */
static size_t put_attr(uint8_t *p, uint16_t type, const void *data, size_t len)
{
    wr16(p, (uint16_t)(TSF_NLA_HDRLEN + len));
    wr16(p + 2, type);
    memcpy(p + TSF_NLA_HDRLEN, data, len);
    size_t total = TSF_NLA_ALIGN(TSF_NLA_HDRLEN + (uint32_t)len);
    memset(p + TSF_NLA_HDRLEN + len, 0, total - TSF_NLA_HDRLEN - len);
    return total;
}

long tsf_build_get(uint8_t *buf, size_t cap, uint16_t family, uint32_t seq, uint16_t attr,
                   const uint32_t *ids, size_t n, uint16_t nlm_flags)
{
    if (!buf || (!ids && n) || (attr != TSF_TASKSTATS_CMD_ATTR_PID && attr != TSF_TASKSTATS_CMD_ATTR_TGID))
        return TSF_E_ARG;
    if (n && cap < TSF_GET_REQUEST_SIZE)
        return TSF_E_NOSPACE;
    size_t fit = cap / TSF_GET_REQUEST_SIZE;
    if (n > fit)
        n = fit;
    uint8_t *p = buf;
    for (size_t i = 0; i < n; i++) {
        p += put_nlmsghdr(p, TSF_GET_REQUEST_SIZE, family, (uint16_t)(TSF_NLM_F_REQUEST | nlm_flags),
                          seq + (uint32_t)i);
        p += put_genlhdr(p, TSF_TASKSTATS_CMD_GET, TSF_TASKSTATS_GENL_VERSION);
        p += put_attr(p, attr, &ids[i], 4);
    }
    return (long)(p - buf);
}

/* nlmsghdr + genlmsghdr + one attribute; the message length is written last. */
static long build_one_attr(uint8_t *buf, size_t cap, uint16_t type, uint16_t flags, uint32_t seq,
                           uint8_t cmd, uint8_t version, uint16_t attr, const void *data, size_t len,
                           int nul_terminate)
{
    size_t payload = len + (nul_terminate ? 1 : 0);
    if (!buf || (!data && len) || payload > 0xffff - TSF_NLA_HDRLEN)
        return TSF_E_ARG;
    size_t total = TSF_NLMSG_HDRLEN + TSF_GENL_HDRLEN + TSF_NLA_ALIGN(TSF_NLA_HDRLEN + (uint32_t)payload);
    if (cap < total)
        return TSF_E_NOSPACE;
    uint8_t *p = buf;
    p += put_nlmsghdr(p, (uint32_t)total, type, flags, seq);
    p += put_genlhdr(p, cmd, version);
    wr16(p, (uint16_t)(TSF_NLA_HDRLEN + payload));
    wr16(p + 2, attr);
    memcpy(p + TSF_NLA_HDRLEN, data, len);
    memset(p + TSF_NLA_HDRLEN + len, 0, total - (size_t)(p - buf) - TSF_NLA_HDRLEN - len);
    return (long)total;
}

long tsf_build_cpumask(uint8_t *buf, size_t cap, uint16_t family, uint32_t seq, int reg,
                       const char *mask, size_t masklen)
{
    if (!mask || memchr(mask, 0, masklen))
        return TSF_E_ARG;
    return build_one_attr(buf, cap, family, TSF_NLM_F_REQUEST | TSF_NLM_F_ACK, seq,
                          TSF_TASKSTATS_CMD_GET, TSF_TASKSTATS_GENL_VERSION,
                          reg ? TSF_TASKSTATS_CMD_ATTR_REGISTER_CPUMASK : TSF_TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK,
                          mask, masklen, 1);
}

long tsf_build_cgroupstats(uint8_t *buf, size_t cap, uint16_t family, uint32_t seq, uint32_t fd)
{
    /* always with an ACK: an invalid fd gets no reply at all otherwise */
    return build_one_attr(buf, cap, family, TSF_NLM_F_REQUEST | TSF_NLM_F_ACK, seq,
                          TSF_CGROUPSTATS_CMD_GET, TSF_TASKSTATS_GENL_VERSION,
                          TSF_CGROUPSTATS_CMD_ATTR_FD, &fd, 4, 0);
}

long tsf_build_getfamily(uint8_t *buf, size_t cap, uint32_t seq, const char *name, size_t namelen)
{
    if (!name || memchr(name, 0, namelen))
        return TSF_E_ARG;
    return build_one_attr(buf, cap, TSF_GENL_ID_CTRL, TSF_NLM_F_REQUEST, seq,
                          TSF_CTRL_CMD_GETFAMILY, 1, TSF_CTRL_ATTR_FAMILY_NAME, name, namelen, 1);
}

/* ---- non-record replies ---------------------------------------------------------------- */
/* Finds the first message of `type` (or an NLMSG_ERROR) in buf.  Returns its offset, -1 if
 * none, or a TSF_E_* when the framing is broken. */
static long find_reply(const uint8_t *buf, size_t len, uint16_t type, uint8_t cmd, int32_t *error)
{
    const uint8_t *p = buf;
    long remaining = (long)len;
    *error = 0;
    for (; remaining > 0; p = tsf_nlmsg_next(p, &remaining)) {
        if (!tsf_nlmsg_ok(p, remaining))
            return remaining < (long)TSF_NLMSG_HDRLEN ? TSF_E_MSG_SHORT : TSF_E_MSG_LEN;
        uint16_t t = tsf_nlmsg_type(p);
        if (t == TSF_NLMSG_ERROR) {
            if (tsf_nlmsg_len(p) < TSF_NLMSG_HDRLEN + 4)
                return TSF_E_ERR_SHORT;
            int32_t err;
            memcpy(&err, p + TSF_NLMSG_HDRLEN, 4);
            if (err != 0) {
                *error = errno_of(err);
                return p - buf;
            }
        } else if (t == type) {
            if (!tsf_genl_ok(p))
                return TSF_E_GENL_SHORT;
            if (tsf_genl_cmd(p) == cmd)
                return p - buf;
        }
    }
    return -1;
}

int tsf_parse_family(const uint8_t *buf, size_t len, struct tsf_family *fam)
{
    if (!buf || !fam || len > UINT32_MAX)
        return TSF_E_ARG;
    memset(fam, 0, sizeof *fam);
    long at = find_reply(buf, len, TSF_GENL_ID_CTRL, TSF_CTRL_CMD_NEWFAMILY, &fam->error);
    if (at < -1)
        return (int)at;
    if (at == -1)
        return TSF_E_NO_REPLY;
    if (fam->error)
        return 0;
    long remaining;
    const uint8_t *p = tsf_genl_attrs(buf + at, &remaining);
    int have_id = 0;
    for (; remaining > 0; p = tsf_attr_next(p, &remaining)) {
        if (!tsf_attr_ok(p, remaining))
            return TSF_E_ATTR_LEN;
        uint16_t type = tsf_attr_type(p);
        long plen = tsf_attr_payload_len(p);
        if (type == TSF_CTRL_ATTR_FAMILY_ID && plen >= 2) {
            fam->id = tsf_rd16(tsf_attr_payload(p));
            have_id = 1;
        } else if (type == TSF_CTRL_ATTR_VERSION && plen >= 4) {
            fam->version = tsf_rd32(tsf_attr_payload(p));
        } else if (type == TSF_CTRL_ATTR_HDRSIZE && plen >= 4) {
            fam->hdrsize = tsf_rd32(tsf_attr_payload(p));
        } else if (type == TSF_CTRL_ATTR_MAXATTR && plen >= 4) {
            fam->maxattr = tsf_rd32(tsf_attr_payload(p));
        }
    }
    return have_id ? 1 : TSF_E_NO_REPLY;
}

int tsf_parse_cgroupstats(const uint8_t *buf, size_t len, uint16_t family, uint64_t *out, int32_t *error)
{
    if (!buf || !out || !error || len > UINT32_MAX)
        return TSF_E_ARG;
    long at = find_reply(buf, len, family, TSF_CGROUPSTATS_CMD_NEW, error);
    if (at < -1)
        return (int)at;
    if (at == -1)
        return TSF_E_NO_REPLY;
    if (*error)
        return 0;
    long remaining;
    const uint8_t *p = tsf_genl_attrs(buf + at, &remaining);
    for (; remaining > 0; p = tsf_attr_next(p, &remaining)) {
        if (!tsf_attr_ok(p, remaining))
            return TSF_E_ATTR_LEN;
        if (tsf_attr_type(p) == TSF_CGROUPSTATS_TYPE_CGROUP_STATS) {
            if (tsf_attr_payload_len(p) < (long)(8 * TSF_CGROUPSTATS_NFIELDS))
                return TSF_E_CGROUP_SHORT;
            memcpy(out, tsf_attr_payload(p), 8 * TSF_CGROUPSTATS_NFIELDS);
            return 1;
        }
    }
    return TSF_E_NO_REPLY;
}
