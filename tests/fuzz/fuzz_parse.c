/* libFuzzer target for the C codec (tsf_codec.c): owned by the hardening work (issue 6).
 *
 * Built by tests/fuzz/run_fuzz.py with clang -fsanitize=fuzzer,address,undefined.  The copy
 * plan is the real one: run_fuzz.py writes the bytes of taskstats_fast._native.PLAN into
 * tsf_fuzz_plan.h (TSF_FUZZ_PLAN_BYTES) so the binary is self-contained and a crasher can be
 * replayed with `fuzz_parse FILE` alone.
 *
 * Each input goes, as one netlink buffer, through:
 *   - tsf_parse with ample output space (what taskstats_fast.parse allocates), both with
 *     family 0 and with the family id 31, and with no output space at all;
 *   - tsf_parse with tight space (1 and 2 records), resuming from `consumed` as the Python
 *     layer does, which must give the same records and notes as the ample pass;
 *   - tsf_parse_family and tsf_parse_cgroupstats;
 *   - tsf_build_cpumask / tsf_build_getfamily with the input as the string, into buffers of
 *     exactly the size they need, and tsf_build_get / tsf_build_cgroupstats with the input as
 *     ids into buffers of a size taken from its first byte.
 * Every output buffer is a heap block of exactly the size promised to the C code, so ASan sees
 * any write past it.  Besides memory errors the target aborts when a documented contract of
 * tsf_parse breaks (see check_* below): the fuzzer then finds logic errors too.
 */
#include "tsf_codec.h"
#include "tsf_fuzz_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_FAMILY 31
#define FUZZ_TIME_NS 0x1122334455667788ull
#define FUZZ_SHARD 0xabcdef01u
/* the smallest bytes one record can stand on: AGGR header + STATS header + a v4 payload */
#define MIN_RECORD_BYTES (4 + 4 + 272)

static struct tsf_plan plan;

#define REQUIRE(cond, ...)                                         \
    do {                                                           \
        if (!(cond)) {                                             \
            fprintf(stderr, "contract broken: %s: ", #cond);       \
            fprintf(stderr, __VA_ARGS__);                          \
            fprintf(stderr, "\n");                                 \
            abort();                                               \
        }                                                          \
    } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    _Static_assert(sizeof TSF_FUZZ_PLAN_BYTES == sizeof plan,
                   "tsf_fuzz_plan.h was generated for another struct tsf_plan");
    memcpy(&plan, TSF_FUZZ_PLAN_BYTES, sizeof plan);
    if (tsf_plan_check(&plan) != 0) {
        fprintf(stderr, "the embedded copy plan fails tsf_plan_check\n");
        abort();
    }
    return 0;
}

static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static int is_framing_fault(const struct tsf_note *n)
{
    return n->kind == TSF_NOTE_BAD && (n->code == TSF_E_MSG_SHORT || n->code == TSF_E_MSG_LEN);
}

/* Every record's metadata says something true about its payload. */
static void check_records(const uint8_t *records, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *r = records + (size_t)i * plan.record_size;
        uint16_t version = get16(r), slot = get16(r + plan.off_layout);
        uint8_t kind = r[plan.off_kind], flags = r[plan.off_flags];
        REQUIRE(kind == 1 || kind == 2, "record %u kind %u", i, kind);
        REQUIRE(slot <= plan.max_version && plan.version_size[slot], "record %u layout %u", i, slot);
        REQUIRE(get64(r + plan.off_time_ns) == FUZZ_TIME_NS && get32(r + plan.off_shard) == FUZZ_SHARD,
                "record %u stamps", i);
        if (flags & TSF_FLAG_NEWER_VERSION)
            REQUIRE(version > plan.max_version && slot == plan.max_version, "record %u newer v%u", i, version);
        else if (flags & TSF_FLAG_LAYOUT_INFERRED)
            REQUIRE(version == 0 && kind == 2, "record %u inferred v%u kind %u", i, version, kind);
        else
            REQUIRE(version == slot, "record %u version %u layout %u", i, version, slot);
        REQUIRE((flags & ~(TSF_FLAG_NEWER_VERSION | TSF_FLAG_LAYOUT_INFERRED)) == 0, "record %u flags", i);
    }
}

static void check_notes(const struct tsf_note *notes, uint32_t count, size_t len)
{
    for (uint32_t i = 0; i < count; i++) {
        const struct tsf_note *n = &notes[i];
        REQUIRE(n->kind >= TSF_NOTE_ACK && n->kind <= TSF_NOTE_BAD, "note %u kind %d", i, n->kind);
        REQUIRE(n->offset < len, "note %u offset %u of %zu", i, n->offset, len);
        if (n->kind == TSF_NOTE_BAD)
            REQUIRE(strcmp(tsf_strerror(n->code), "unknown error") != 0, "note %u code %d", i, n->code);
        /* a framing fault ends the walk, so it can only be the last note */
        if (is_framing_fault(n))
            REQUIRE(i + 1 == count, "framing note %u of %u", i, count);
    }
}

/* Resume from `consumed` with room for `cap` records at a time, as a stream reader does: the
 * same records and notes as one ample pass, unless a single message holds more than `cap`
 * records (then the parser says TSF_E_NOSPACE and keeps what fit, by design). */
static void check_resume(const uint8_t *data, size_t len, uint32_t cap, const uint8_t *want_records,
                         uint32_t want_count, const struct tsf_note *want_notes, uint32_t want_notes_count)
{
    /* room for every note of the ample pass plus one TSF_E_NOSPACE per message (>= 16 bytes) */
    size_t notes_cap = want_notes_count + len / 16 + 2;
    uint8_t *records = malloc((size_t)cap * plan.record_size);
    struct tsf_note *notes = malloc(notes_cap * sizeof *notes);
    size_t off = 0;
    uint32_t got = 0, got_notes = 0;
    int complete = 1;

    for (;;) {
        struct tsf_parse_result res;
        int rc = tsf_parse(&plan, 0, data + off, len - off, records, cap, notes, notes_cap,
                           FUZZ_TIME_NS, FUZZ_SHARD, &res);
        REQUIRE(rc >= 0 && (uint32_t)rc == res.records && res.records <= cap, "resume rc %d", rc);
        REQUIRE(res.notes <= notes_cap, "resume stored %u notes, ample pass had %u", res.notes,
                want_notes_count);
        for (uint32_t i = 0; i < res.notes; i++)
            if (notes[i].kind == TSF_NOTE_BAD && notes[i].code == TSF_E_NOSPACE)
                complete = 0;  /* a message larger than cap: records legitimately lost */
        if (!complete)
            break;
        REQUIRE(got + res.records <= want_count, "resume found more records than the ample pass");
        REQUIRE(memcmp(records, want_records + (size_t)got * plan.record_size,
                       (size_t)res.records * plan.record_size) == 0,
                "resume record bytes differ at record %u", got);
        REQUIRE(got_notes + res.notes <= want_notes_count, "resume found more notes");
        for (uint32_t i = 0; i < res.notes; i++) {
            const struct tsf_note *a = &notes[i], *b = &want_notes[got_notes + i];
            REQUIRE(a->kind == b->kind && a->code == b->code && a->seq == b->seq &&
                        a->offset + off == b->offset,
                    "resume note %u differs", got_notes + i);
        }
        got += res.records;
        got_notes += res.notes;
        off += res.consumed;
        int ended_by_fault = res.notes && is_framing_fault(&notes[res.notes - 1]);
        if (off >= len || ended_by_fault)
            break;
        /* stopped for space: before a message it could not finish, never at the start */
        REQUIRE(res.consumed > 0, "resume stuck at offset %zu", off);
    }
    if (complete)
        REQUIRE(got == want_count && got_notes == want_notes_count,
                "resume with cap %u: %u/%u records, %u/%u notes", cap, got, want_count, got_notes,
                want_notes_count);
    free(records);
    free(notes);
}

static void fuzz_parse(const uint8_t *data, size_t len)
{
    /* the space taskstats_fast.parse gives: never too small for the records of the input */
    size_t cap = len / MIN_RECORD_BYTES + 1;
    size_t notes_cap = len / 4 + 1;
    uint8_t *records = malloc(cap * plan.record_size);
    struct tsf_note *notes = malloc(notes_cap * sizeof *notes);
    struct tsf_parse_result res;

    int rc = tsf_parse(&plan, 0, data, len, records, cap, notes, notes_cap, FUZZ_TIME_NS, FUZZ_SHARD, &res);
    REQUIRE(rc >= 0 && (uint32_t)rc == res.records, "rc %d records %u", rc, res.records);
    REQUIRE(res.records < cap, "records %u fill the ample space %zu", res.records, cap);
    REQUIRE(res.notes <= notes_cap && res.bad <= res.notes, "notes %u bad %u", res.notes, res.bad);
    REQUIRE(res.consumed <= len, "consumed %u of %zu", res.consumed, len);
    /* with ample space the walk only stops early at a framing fault, which says where */
    if (res.consumed < len)
        REQUIRE(res.notes && is_framing_fault(&notes[res.notes - 1]) &&
                    notes[res.notes - 1].offset == res.consumed,
                "stopped at %u of %zu without a framing note", res.consumed, len);
    check_records(records, res.records);
    check_notes(notes, res.notes, len);
    uint32_t bad = 0;
    for (uint32_t i = 0; i < res.notes; i++)
        bad += notes[i].kind == TSF_NOTE_BAD;
    REQUIRE(bad == res.bad, "bad count %u vs %u notes", res.bad, bad);

    check_resume(data, len, 1, records, res.records, notes, res.notes);
    check_resume(data, len, 2, records, res.records, notes, res.notes);

    /* a family filter only ever removes records */
    struct tsf_parse_result fres;
    int frc = tsf_parse(&plan, FUZZ_FAMILY, data, len, records, cap, notes, notes_cap,
                        FUZZ_TIME_NS, FUZZ_SHARD, &fres);
    REQUIRE(frc >= 0 && fres.records <= res.records && fres.consumed == res.consumed,
            "family filter: %u records vs %u", fres.records, res.records);
    check_records(records, fres.records);

    /* no room at all: counts only, writes nothing */
    struct tsf_parse_result zres;
    REQUIRE(tsf_parse(&plan, 0, data, len, NULL, 0, NULL, 0, 0, 0, &zres) == 0 && zres.records == 0,
            "zero-capacity parse wrote records");
    free(records);
    free(notes);
}

static void fuzz_other_replies(const uint8_t *data, size_t len)
{
    struct tsf_family *fam = malloc(sizeof *fam);
    int rc = tsf_parse_family(data, len, fam);
    REQUIRE(rc == 1 || rc == 0 || rc == TSF_E_NO_REPLY || rc == TSF_E_MSG_SHORT || rc == TSF_E_MSG_LEN ||
                rc == TSF_E_ERR_SHORT || rc == TSF_E_GENL_SHORT || rc == TSF_E_ATTR_LEN,
            "tsf_parse_family rc %d", rc);
    REQUIRE(rc != 0 || fam->error > 0, "family error reply without an errno");
    free(fam);

    uint64_t *cg = malloc(8 * 5);
    int32_t *err = malloc(sizeof *err);
    rc = tsf_parse_cgroupstats(data, len, FUZZ_FAMILY, cg, err);
    REQUIRE(rc == 1 || rc == 0 || rc == TSF_E_NO_REPLY || rc == TSF_E_MSG_SHORT || rc == TSF_E_MSG_LEN ||
                rc == TSF_E_ERR_SHORT || rc == TSF_E_GENL_SHORT || rc == TSF_E_ATTR_LEN ||
                rc == TSF_E_CGROUP_SHORT,
            "tsf_parse_cgroupstats rc %d", rc);
    REQUIRE(rc != 0 || *err > 0, "cgroupstats error reply without an errno");
    free(cg);
    free(err);
}

/* The string builders with the input as the string, into exactly the space they need. */
static void fuzz_builders(const uint8_t *data, size_t len)
{
    if (len > 0xffff || memchr(data, 0, len))
        return;
    size_t need = (16 + 4 + 4 + len + 1 + 3) & ~(size_t)3;
    uint8_t *buf = malloc(need);
    long n = tsf_build_cpumask(buf, need, FUZZ_FAMILY, 7, (int)(len & 1), (const char *)data, len);
    if (n > 0)
        REQUIRE((size_t)n == need && get32(buf) == need, "cpumask request %ld bytes, expected %zu", n, need);
    REQUIRE(tsf_build_cpumask(buf, need - 1, FUZZ_FAMILY, 7, 1, (const char *)data, len) == TSF_E_NOSPACE ||
                len > 0xffff - 5,
            "cpumask builder wrote past its space");
    n = tsf_build_getfamily(buf, need, 1, (const char *)data, len);
    if (n > 0)
        REQUIRE((size_t)n == need, "getfamily request %ld bytes, expected %zu", n, need);
    free(buf);
}

/* GET requests for the input read as u32 ids, into a buffer that holds all or only some of them:
 * as many whole requests as fit, each a well-framed message the parser walks without a note. */
static void fuzz_get_requests(const uint8_t *data, size_t len)
{
    size_t n = len / 4;
    uint32_t *ids = malloc(n ? n * 4 : 1);
    memcpy(ids, data, n * 4);
    size_t cap = len ? (size_t)data[0] * 3 : 0;  /* from none to ~27 requests, rarely aligned */
    uint8_t *buf = malloc(cap ? cap : 1);
    long built = tsf_build_get(buf, cap, FUZZ_FAMILY, 100, len & 1 ? 2 : 1, ids, n, 0);
    size_t fit = cap / TSF_GET_REQUEST_SIZE < n ? cap / TSF_GET_REQUEST_SIZE : n;
    if (n && cap < TSF_GET_REQUEST_SIZE)
        REQUIRE(built == TSF_E_NOSPACE, "tsf_build_get rc %ld with %zu bytes", built, cap);
    else
        REQUIRE(built == (long)(fit * TSF_GET_REQUEST_SIZE), "tsf_build_get %ld bytes for %zu", built, fit);
    if (built > 0) {
        struct tsf_parse_result res;
        REQUIRE(tsf_parse(&plan, FUZZ_FAMILY, buf, (size_t)built, NULL, 0, NULL, 0, 0, 0, &res) == 0 &&
                    res.messages == fit && res.notes == 0 && res.consumed == (uint32_t)built,
                "built GET requests do not walk cleanly");
        for (size_t i = 0; i < fit; i++)
            REQUIRE(get32(buf + i * TSF_GET_REQUEST_SIZE + 24) == ids[i] &&
                        get32(buf + i * TSF_GET_REQUEST_SIZE + 8) == 100 + i,
                    "GET request %zu carries the wrong id or seq", i);
    }
    if (len >= 4) {
        long c = tsf_build_cgroupstats(buf, cap, FUZZ_FAMILY, 1, ids[0]);
        REQUIRE(c == (cap >= 28 ? 28 : TSF_E_NOSPACE), "tsf_build_cgroupstats rc %ld for %zu bytes", c, cap);
    }
    free(ids);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
#ifdef TSF_FUZZ_PLANTED_BUG
    /* tests/test_fuzz.py builds with this to prove a crash fails the run: a one-byte overread */
    if (len >= 4 && memcmp(data, "BUG!", 4) == 0)
        fprintf(stderr, "planted: %d\n", data[len]);
#endif
    fuzz_parse(data, len);
    fuzz_other_replies(data, len);
    fuzz_builders(data, len);
    fuzz_get_requests(data, len);
    return 0;
}
