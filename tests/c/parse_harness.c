/* Drives the C codec over input files under AddressSanitizer + UBSan (tests/test_sanitizers.py).
 *
 *   parse_harness PLAN_FILE INPUT...
 *
 * PLAN_FILE holds the bytes of the struct tsf_plan that taskstats_fast builds from its layout
 * table.  Each input is copied into a heap buffer of exactly its size, so any read past its end
 * trips ASan, then parsed with ample, tight and zero output space, and through the family and
 * cgroupstats parsers.  Prints one line per input: records, notes, consumed.
 */
#include "tsf_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n ? (size_t)n : 1);
    if (buf && n && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Every builder into heap buffers of each size from 0 to a little past what it needs. */
static void exercise_builders(void)
{
    uint32_t ids[3] = {1, 2, 3};
    for (size_t cap = 0; cap <= 3 * TSF_GET_REQUEST_SIZE + 1; cap++) {
        unsigned char *buf = malloc(cap ? cap : 1);
        tsf_build_get(buf, cap, 31, 1, 1, ids, 3, 0);
        tsf_build_cpumask(buf, cap, 31, 1, 1, "0-3,8", 5);
        tsf_build_cgroupstats(buf, cap, 31, 1, 7);
        tsf_build_getfamily(buf, cap, 1, "TASKSTATS", 9);
        free(buf);
    }
}

int main(int argc, char **argv)
{
    exercise_builders();
    if (argc < 2) {
        fprintf(stderr, "usage: %s PLAN_FILE INPUT...\n", argv[0]);
        return 2;
    }
    size_t plan_len;
    struct tsf_plan *plan = (struct tsf_plan *)slurp(argv[1], &plan_len);
    if (!plan || plan_len != sizeof *plan || tsf_plan_check(plan) != 0) {
        fprintf(stderr, "bad plan file\n");
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        size_t len;
        unsigned char *in = slurp(argv[i], &len);
        if (!in) {
            fprintf(stderr, "cannot read %s\n", argv[i]);
            return 2;
        }
        size_t cap = len / 280 + 1, notes_cap = len / 4 + 1;
        unsigned char *records = malloc(cap * plan->record_size);
        struct tsf_note *notes = malloc(notes_cap * sizeof *notes);
        struct tsf_parse_result res;
        int n = tsf_parse(plan, 0, in, len, records, cap, notes, notes_cap, 1, 2, &res);
        printf("%s records=%d notes=%u bad=%u consumed=%u\n", argv[i], n, res.notes, res.bad, res.consumed);
        /* tight output space: one record, and none; tight notes */
        tsf_parse(plan, 31, in, len, records, 1, notes, 1, 0, 0, &res);
        tsf_parse(plan, 0, in, len, NULL, 0, NULL, 0, 0, 0, &res);
        struct tsf_family fam;
        tsf_parse_family(in, len, &fam);
        uint64_t cg[5];
        int32_t err;
        tsf_parse_cgroupstats(in, len, 31, cg, &err);
        free(records);
        free(notes);
        free(in);
    }
    free(plan);
    return 0;
}
