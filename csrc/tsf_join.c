/* tsf_join.c: one pass over two looks and the exits between them (see tsf_join.h).
 *
 * The rules are merge.py's, step for step, so that the numpy reference there and this pass give
 * the same rows: fold each exit with the closing look's sighting of its task, match every end
 * sighting to the ledger, then write each row's deltas, flags, state and exact cgroup.
 */
#include <string.h>

#include "tsf_codec.h"
#include "tsf_join.h"

static inline uint64_t u64_at(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline int64_t i64_at(const uint8_t *p) { int64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t u32_at(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline void put_i64(uint8_t *p, int64_t v) { memcpy(p, &v, 8); }
/* int64 arithmetic that wraps like numpy's (signed overflow is undefined in C): records are
 * the kernel's, but nothing here trusts their values */
static inline int64_t wadd(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static inline int64_t wsub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }
static inline int64_t wmul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

static int field_fits(uint32_t off, uint32_t len, uint32_t size)
{
    return len <= size && off <= size - len;
}

int tsf_join_plan_check(const struct tsf_join_plan *p)
{
    uint32_t s = p ? p->sighting_size : 0;
    if (!p || !s || !p->row_size || p->n_mono > TSF_JOIN_MAX_WORDS || p->n_counters > p->n_mono ||
        p->n_identity > TSF_JOIN_MAX_WORDS || p->n_levels > TSF_JOIN_MAX_LEVELS ||
        p->n_copies > TSF_JOIN_MAX_COPIES || p->elapsed_word >= p->n_mono ||
        p->cpu_word >= p->n_counters || !field_fits(p->s_mono, 8 * p->n_mono, s))
        return TSF_E_PLAN;
    for (uint32_t i = 0; i < p->n_identity; i++)
        if (p->identity[i] >= p->n_mono)
            return TSF_E_PLAN;
    for (uint32_t i = 0; i < p->n_levels; i++)
        if (!field_fits(p->s_level[i], 8, s))
            return TSF_E_PLAN;
    const uint32_t eights[] = {p->s_time_ns, p->s_btime64, p->s_birth_lo, p->s_birth_ns, p->s_exited,
                               p->s_btime};
    for (unsigned i = 0; i < sizeof eights / sizeof eights[0]; i++)
        if (!field_fits(eights[i], 8, s))
            return TSF_E_PLAN;
    if (!field_fits(p->s_pid, 4, s) || !field_fits(p->s_exitcode, 4, s))
        return TSF_E_PLAN;
    for (uint32_t i = 0; i < p->n_copies; i++)
        if (!field_fits(p->copy[i].src, p->copy[i].len, s) ||
            !field_fits(p->copy[i].dst, p->copy[i].len, p->row_size))
            return TSF_E_PLAN;
    if (!field_fits(p->r_btime64, 8, p->row_size) || !field_fits(p->r_exitcode, 4, p->row_size) ||
        !field_fits(p->r_cgroup, 8, p->row_size) || !field_fits(p->r_state, 1, p->row_size) ||
        !field_fits(p->r_attribution, 1, p->row_size) || !field_fits(p->r_flags, 1, p->row_size) ||
        !field_fits(p->r_summed, 8 * (1 + p->n_counters), p->row_size))
        return TSF_E_PLAN;
    return 0;
}

int tsf_sighting_plan_check(const struct tsf_sighting_plan *p)
{
    uint32_t r = p ? p->record_size : 0, s = p ? p->sighting_size : 0;
    if (!p || !r || !s || p->n_words > TSF_SIGHTING_MAX_WORDS || 8 * (uint64_t)p->n_words > s)
        return TSF_E_PLAN;
    for (uint32_t i = 0; i < p->n_words; i++)
        if (!field_fits(8 * p->word[i], 8, r))
            return TSF_E_PLAN;
    if (!field_fits(p->r_kind, 1, r) || !field_fits(p->r_layout, 2, r) || !field_fits(p->r_btime, 4, r) ||
        !field_fits(p->r_btime64, 8, r) || !field_fits(p->r_time_ns, 8, r) || !field_fits(p->r_etime, 8, r) ||
        !field_fits(p->s_pid, 4, s) || !field_fits(p->s_btime, 8, s) || !field_fits(p->s_birth_lo, 8, s) ||
        !field_fits(p->s_birth_ns, 8, s) || !field_fits(p->s_exited, 8, s))
        return TSF_E_PLAN;
    return 0;
}

/* merge.sightings: gather the words the merge keeps, then each task's birth range: no earlier
 * than a second before ac_btime (floor(now) - floor(elapsed)) nor than look_ns - elapsed, no
 * later than received - elapsed. */
int64_t tsf_sightings(const struct tsf_sighting_plan *p, const uint8_t *records, uint32_t n,
                      int has_look, int64_t look_ns, uint8_t *out, uint32_t cap, int *sorted)
{
    int rc = tsf_sighting_plan_check(p);
    if (rc < 0)
        return rc;
    if ((n && (!records || !out)) || !sorted)
        return TSF_E_ARG;
    if (cap < n)
        return TSF_E_NOSPACE;
    uint32_t kept = 0, last_pid = 0;
    *sorted = 1;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *rec = records + (size_t)i * p->record_size;
        if (rec[p->r_kind] != p->kind_pid)
            continue;
        uint8_t *s = out + (size_t)kept * p->sighting_size;
        for (uint32_t w = 0; w < p->n_words; w++)
            memcpy(s + 8 * w, rec + 8 * p->word[w], 8);
        uint16_t layout;
        memcpy(&layout, rec + p->r_layout, 2);
        int64_t btime = layout >= p->btime64_since ? (int64_t)u64_at(rec + p->r_btime64)
                                                   : (int64_t)u32_at(rec + p->r_btime);
        int64_t elapsed_ns = wmul((int64_t)u64_at(rec + p->r_etime), 1000);
        int64_t birth_lo = wmul(wsub(btime, 1), 1000000000LL);
        if (has_look && wsub(look_ns, elapsed_ns) > birth_lo)
            birth_lo = wsub(look_ns, elapsed_ns);
        put_i64(s + p->s_btime, btime);
        put_i64(s + p->s_birth_lo, birth_lo);
        put_i64(s + p->s_birth_ns, wsub((int64_t)u64_at(rec + p->r_time_ns), elapsed_ns));
        put_i64(s + p->s_exited, 0);
        uint32_t pid = u32_at(s + p->s_pid);
        if (kept && pid <= last_pid)
            *sorted = 0;
        last_pid = pid;
        kept++;
    }
    return kept;
}

/* Index of pid in n sightings sorted by unique pid, or -1.  *hint: the row to try first, set to
 * the row after the answer.  Callers ask in pid order for pids mostly present (a look's threads
 * against the previous look's), so the next row is nearly always the answer, and the binary
 * search, a cache miss per probe over rows this large, runs only where the two differ. */
static int64_t find_pid(const struct tsf_join_plan *p, const uint8_t *rows, uint32_t n, uint32_t pid,
                        uint32_t *hint)
{
    uint32_t h = *hint;
    if (h < n && u32_at(rows + (size_t)h * p->sighting_size + p->s_pid) == pid) {
        *hint = h + 1;
        return h;
    }
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint32_t at = u32_at(rows + (size_t)mid * p->sighting_size + p->s_pid);
        if (at < pid)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < n && u32_at(rows + (size_t)lo * p->sighting_size + p->s_pid) == pid) {
        *hint = lo + 1;
        return lo;
    }
    return -1;
}

/* The cgroup of tid (0: not listed); *hint as find_pid's. */
static uint64_t cgroup_of(const struct tsf_join_cgroups *cg, uint32_t tid, uint32_t *hint)
{
    uint32_t h = *hint;
    if (h < cg->n && cg->tids[h] == tid) {
        *hint = h + 1;
        return cg->cgroup[h];
    }
    uint32_t lo = 0, hi = cg->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cg->tids[mid] < tid)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < cg->n && cg->tids[lo] == tid) {
        *hint = lo + 1;
        return cg->cgroup[lo];
    }
    return 0;
}

/* merge._match's test: overlapping birth ranges, and counters that moved one way (only grew
 * when `ordered`: every ref sighting was filled before `seen`). */
static int same_task(const struct tsf_join_plan *p, const uint8_t *seen, const uint8_t *ref, int ordered)
{
    if (!(i64_at(seen + p->s_birth_lo) <= wadd(i64_at(ref + p->s_birth_ns), p->tolerance_ns)) ||
        !(i64_at(ref + p->s_birth_lo) <= wadd(i64_at(seen + p->s_birth_ns), p->tolerance_ns)))
        return 0;
    int grew = 1, shrank = 1;
    for (uint32_t i = 0; i < p->n_identity; i++) {
        uint32_t off = p->s_mono + 8 * p->identity[i];
        uint64_t later = u64_at(seen + off), earlier = u64_at(ref + off);
        grew &= later >= earlier;
        shrank &= later <= earlier;
    }
    return grew || (!ordered && shrank);
}

static int strictly_sorted(const struct tsf_join_plan *p, const uint8_t *rows, uint32_t n, int allow_equal)
{
    for (uint32_t i = 1; i < n; i++) {
        uint32_t a = u32_at(rows + (size_t)(i - 1) * p->sighting_size + p->s_pid);
        uint32_t b = u32_at(rows + (size_t)i * p->sighting_size + p->s_pid);
        if (b < a || (b == a && !allow_equal))
            return 0;
    }
    return 1;
}

static int tids_sorted(const struct tsf_join_cgroups *cg)
{
    if (cg->n && (!cg->tids || !cg->cgroup))
        return 0;
    for (uint32_t i = 1; i < cg->n; i++)
        if (cg->tids[i] <= cg->tids[i - 1])
            return 0;
    return 1;
}

static int check_args(const struct tsf_join_plan *p, const struct tsf_join_args *a)
{
    uint64_t rows = (uint64_t)a->n_exit + a->n_end;
    uint64_t work = (uint64_t)a->n_start + 3 * (uint64_t)a->n_end + 2 * (uint64_t)a->n_exit;
    if ((a->n_start && !a->start) || (a->n_end && !a->ends) || (a->n_exit && !a->exits) ||
        (rows && (!a->rows || !a->keep)) || (a->n_end && !a->ledger) || (work && !a->work))
        return TSF_E_ARG;
    if (a->rows_cap < rows || a->ledger_cap < a->n_end || a->work_len < work)
        return TSF_E_NOSPACE;
    if (!strictly_sorted(p, a->start, a->n_start, 0) || !strictly_sorted(p, a->ends, a->n_end, 0) ||
        !strictly_sorted(p, a->exits, a->n_exit, 1) || !tids_sorted(&a->start_cg) ||
        !tids_sorted(&a->end_cg))
        return TSF_E_ARG;
    return 0;
}

#define SIGHT(base, i) ((base) + (size_t)(i) * p->sighting_size)

/* merge._fold: each exit with the closing look's sighting of its task (the latest-born exit
 * of a pid wins), folded counter by counter into the exit; x_to_end[i]: its end, or -1.
 * end_row[j]: the row of end j (-1: folded into an exit, no row of its own). */
static uint32_t fold(const struct tsf_join_plan *p, struct tsf_join_args *a, int64_t *x_to_end,
                     int64_t *end_row)
{
    for (uint32_t j = 0; j < a->n_end; j++)
        end_row[j] = -1;                       /* here: the exit claiming end j */
    uint32_t hint = 0;
    for (uint32_t i = 0; i < a->n_exit; i++) {
        const uint8_t *x = SIGHT(a->exits, i);
        int64_t j = find_pid(p, a->ends, a->n_end, u32_at(x + p->s_pid), &hint);
        x_to_end[i] = -1;
        if (j < 0 || !same_task(p, x, SIGHT(a->ends, j), 0))
            continue;
        int64_t best = end_row[j];
        if (best < 0 || i64_at(x + p->s_birth_ns) > i64_at(SIGHT(a->exits, best) + p->s_birth_ns))
            end_row[j] = i;
    }
    for (uint32_t j = 0; j < a->n_end; j++)
        if (end_row[j] >= 0)
            x_to_end[end_row[j]] = j;
    memcpy(a->ledger, a->ends, (size_t)a->n_end * p->sighting_size);
    for (uint32_t i = 0; i < a->n_exit; i++) {
        uint8_t *x = SIGHT(a->exits, i);
        int64_t j = x_to_end[i];
        if (j >= 0) {
            const uint8_t *e = SIGHT(a->ends, j);
            for (uint32_t w = 0; w < p->n_mono; w++) {
                uint32_t off = p->s_mono + 8 * w;
                if (u64_at(e + off) > u64_at(x + off))
                    put_u64(x + off, u64_at(e + off));
            }
            for (uint32_t l = 0; l < p->n_levels; l++)
                if (u64_at(e + p->s_level[l]) > u64_at(x + p->s_level[l]))
                    put_u64(x + p->s_level[l], u64_at(e + p->s_level[l]));
            if (i64_at(e + p->s_birth_lo) > i64_at(x + p->s_birth_lo))
                put_i64(x + p->s_birth_lo, i64_at(e + p->s_birth_lo));
            if (i64_at(e + p->s_birth_ns) < i64_at(x + p->s_birth_ns))
                put_i64(x + p->s_birth_ns, i64_at(e + p->s_birth_ns));
        }
        put_i64(x + p->s_exited, 1);
        if (j >= 0)
            memcpy(SIGHT(a->ledger, j), x, p->sighting_size);
    }
    uint32_t n = a->n_exit;
    for (uint32_t j = 0; j < a->n_end; j++)
        end_row[j] = end_row[j] >= 0 ? -1 : (int64_t)n++;
    return n;
}

/* The sighting behind row k: exits first, then the closing look's unfolded sightings. */
static const uint8_t *row_sighting(const struct tsf_join_plan *p, const struct tsf_join_args *a,
                                   const int64_t *row_end, uint32_t k)
{
    return k < a->n_exit ? SIGHT(a->exits, k) : SIGHT(a->ends, row_end[k - a->n_exit]);
}

/* merge.merge's step 3: the same task in the ledger, at most one row per ledger entry (its exit
 * record first, then the earliest born).  s_at[k]: the entry, -2 (its pid is there, but another
 * task's), or -1. */
static void match_ledger(const struct tsf_join_plan *p, const struct tsf_join_args *a, uint32_t n,
                         const int64_t *row_end, int64_t *claim, int64_t *s_at)
{
    for (uint32_t j = 0; j < a->n_start; j++)
        claim[j] = -1;
    uint32_t hint = 0;
    for (uint32_t k = 0; k < n; k++) {
        const uint8_t *s = row_sighting(p, a, row_end, k);
        int64_t j = find_pid(p, a->start, a->n_start, u32_at(s + p->s_pid), &hint);
        s_at[k] = j < 0 ? -1 : -2;
        if (j < 0 || !same_task(p, s, SIGHT(a->start, j), 1))
            continue;
        s_at[k] = j;
        int64_t best = claim[j];
        if (best >= 0) {
            int exit_k = k < a->n_exit, exit_best = best < a->n_exit;
            if (exit_best && !exit_k)
                continue;
            if (exit_best == exit_k && !(i64_at(s + p->s_birth_ns) <
                                         i64_at(row_sighting(p, a, row_end, best) + p->s_birth_ns)))
                continue;
        }
        claim[j] = k;
    }
    for (uint32_t k = 0; k < n; k++)
        if (s_at[k] >= 0 && claim[s_at[k]] != k)
            s_at[k] = -2;
}

/* The share of a sighting's lifetime after start_ns (merge._no_start_share). */
static double no_start_share(const struct tsf_join_plan *p, const uint8_t *s, int64_t start_ns)
{
    double elapsed = (double)u64_at(s + p->s_mono + 8 * p->elapsed_word) * 1000;
    double since = (double)wsub((int64_t)u64_at(s + p->s_time_ns), start_ns);
    double share = since / (elapsed > 1.0 ? elapsed : 1.0);
    return share < 0.0 ? 0.0 : share > 1.0 ? 1.0 : share;
}

static void write_row(const struct tsf_join_plan *p, const struct tsf_join_args *a, uint8_t *r,
                      uint32_t k, const uint8_t *s, int64_t j)
{
    const uint8_t *base = j >= 0 ? SIGHT(a->start, j) : NULL;
    uint8_t flags = 0, state = 0;
    memset(r, 0, p->row_size);
    for (uint32_t c = 0; c < p->n_copies; c++)
        memcpy(r + p->copy[c].dst, s + p->copy[c].src, p->copy[c].len);
    if (k < a->n_exit) {
        memcpy(r + p->r_exitcode, s + p->s_exitcode, 4);
        state |= p->state_exited;
    }
    if (base)
        memcpy(r + p->r_btime64, base + p->s_btime64, 8);
    else
        state |= p->state_born;
    int no_start = !base && i64_at(s + p->s_birth_ns) < a->start_ns;
    double share = no_start ? no_start_share(p, s, a->start_ns) : 1.0;
    uint8_t *block = r + p->r_summed;
    for (uint32_t w = 0; w < p->n_counters; w++) {
        uint64_t now = u64_at(s + p->s_mono + 8 * w);
        uint64_t was = base ? u64_at(base + p->s_mono + 8 * w) : 0;
        uint64_t delta = now - (was < now ? was : now);
        if (no_start)
            delta = (uint64_t)((double)delta * share);
        put_u64(block + 8 * (1 + w), delta);
    }
    memcpy(block, block + 8 * (1 + p->cpu_word), 8);     /* cpu_ns: the scheduler's clock */
    if (no_start)
        flags |= p->flag_no_start;
    if (a->delayacct_off) {
        flags |= p->flag_delayacct_off;
        for (uint32_t w = 0; w < p->n_counters; w++)
            if (p->zero_when_off[w])
                put_u64(block + 8 * (1 + w), 0);
    }
    r[p->r_flags] = flags;
    r[p->r_state] = state;
}

/* merge._attribute's exact part: the closing look's cgroup for a task it listed (live, or an
 * exit folded with its sighting there), else the opening look's for an exit it had. */
static int attribute(const struct tsf_join_plan *p, const struct tsf_join_args *a, uint8_t *r,
                     uint32_t pid, int exited, int folded, int matched, uint32_t hints[2])
{
    uint64_t cg = !exited || folded ? cgroup_of(&a->end_cg, pid, &hints[0]) : 0;
    if (!cg && exited && matched)
        cg = cgroup_of(&a->start_cg, pid, &hints[1]);
    put_u64(r + p->r_cgroup, cg);
    if (cg)
        r[p->r_attribution] = p->attribution_exact;
    return cg == 0;
}

/* Rows that share a pid (two exits of it, or an exit and a live sighting): FLAG_PID_REUSED. */
static void flag_shared_pids(const struct tsf_join_plan *p, struct tsf_join_args *a,
                             const int64_t *end_row)
{
    uint32_t hint = 0;
    for (uint32_t i = 0; i < a->n_exit; i++) {
        uint32_t pid = u32_at(SIGHT(a->exits, i) + p->s_pid);
        if (i > 0 && u32_at(SIGHT(a->exits, i - 1) + p->s_pid) == pid) {
            a->rows[(size_t)i * p->row_size + p->r_flags] |= p->flag_pid_reused;
            a->rows[(size_t)(i - 1) * p->row_size + p->r_flags] |= p->flag_pid_reused;
        }
        int64_t j = find_pid(p, a->ends, a->n_end, pid, &hint);
        if (j >= 0 && end_row[j] >= 0) {
            a->rows[(size_t)i * p->row_size + p->r_flags] |= p->flag_pid_reused;
            a->rows[(size_t)end_row[j] * p->row_size + p->r_flags] |= p->flag_pid_reused;
        }
    }
}

int tsf_join(const struct tsf_join_plan *p, struct tsf_join_args *a)
{
    int rc;
    if (!a || (rc = tsf_join_plan_check(p)) < 0 || (rc = check_args(p, a)) < 0)
        return a ? rc : TSF_E_ARG;
    /* work: claim[n_start] end_row[n_end] x_to_end[n_exit] s_at[n_exit + n_end] inv[n_end] */
    int64_t *claim = a->work, *end_row = claim + a->n_start, *x_to_end = end_row + a->n_end;
    int64_t *s_at = x_to_end + a->n_exit, *inv = s_at + a->n_exit + a->n_end;
    uint32_t n = fold(p, a, x_to_end, end_row);
    for (uint32_t j = 0; j < a->n_end; j++)     /* row n_exit + m is end inv[m] */
        if (end_row[j] >= 0)
            inv[end_row[j] - a->n_exit] = j;
    match_ledger(p, a, n, inv, claim, s_at);
    a->n_rows = n;
    a->n_dropped = 0;
    a->n_unresolved = 0;
    uint32_t hints[2] = {0, 0};                 /* rows come in pid order: exits, then ends */
    for (uint32_t k = 0; k < n; k++) {
        const uint8_t *s = row_sighting(p, a, inv, k);
        int64_t j = s_at[k] >= 0 ? s_at[k] : -1;
        uint8_t *r = a->rows + (size_t)k * p->row_size;
        write_row(p, a, r, k, s, j);
        if (s_at[k] == -2)
            r[p->r_flags] |= p->flag_pid_reused;
        /* an exited ledger entry is final: a zombie listed again, or a repeated exit */
        int already = j >= 0 && i64_at(SIGHT(a->start, j) + p->s_exited) != 0;
        a->keep[k] = !already;
        a->n_dropped += already;
        uint8_t *entry = k < a->n_exit ? (x_to_end[k] >= 0 ? SIGHT(a->ledger, x_to_end[k]) : NULL)
                                       : SIGHT(a->ledger, inv[k - a->n_exit]);
        if (entry) {                            /* one start per task: the ledger carries it */
            memcpy(entry + p->s_btime64, r + p->r_btime64, 8);
            if (already && k >= a->n_exit)
                put_i64(entry + p->s_exited, 1);
        }
        a->n_unresolved += attribute(p, a, r, u32_at(s + p->s_pid), k < a->n_exit,
                                     k < a->n_exit && x_to_end[k] >= 0, j >= 0, hints);
    }
    flag_shared_pids(p, a, end_row);
    return 0;
}

/* One exit's sort key: (pid, start second), then its index, so that any order of the keys is
 * the stable one numpy's lexsort gives. */
struct exit_key {
    uint32_t pid, idx;
    int64_t btime;
};
_Static_assert(2 * sizeof(struct exit_key) <= TSF_EXIT_ORDER_WORK, "two arrays of keys per exit");

static int key_before(const struct exit_key *a, const struct exit_key *b)
{
    if (a->pid != b->pid)
        return a->pid < b->pid;
    if (a->btime != b->btime)
        return a->btime < b->btime;
    return a->idx < b->idx;
}

/* Sort n keys: insertion sort of short runs, then bottom-up merges between keys and tmp;
 * returns whichever of the two holds the sorted keys. */
#define EXIT_RUN 32
static struct exit_key *sort_keys(struct exit_key *keys, struct exit_key *tmp, uint32_t n)
{
    for (uint32_t lo = 0; lo < n; lo += EXIT_RUN) {
        uint32_t hi = n - lo < EXIT_RUN ? n : lo + EXIT_RUN;
        for (uint32_t i = lo + 1; i < hi; i++) {
            struct exit_key k = keys[i];
            uint32_t j = i;
            for (; j > lo && key_before(&k, &keys[j - 1]); j--)
                keys[j] = keys[j - 1];
            keys[j] = k;
        }
    }
    struct exit_key *from = keys, *to = tmp;
    for (uint64_t width = EXIT_RUN; width < n; width *= 2) {
        for (uint64_t lo = 0; lo < n; lo += 2 * width) {
            uint64_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            uint64_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                to[k++] = key_before(&from[j], &from[i]) ? from[j++] : from[i++];
            while (i < mid)
                to[k++] = from[i++];
            while (j < hi)
                to[k++] = from[j++];
        }
        struct exit_key *swap = from;
        from = to;
        to = swap;
    }
    return from;
}

int64_t tsf_exit_order(const struct tsf_join_plan *p, const uint8_t *exits, uint32_t n,
                       uint8_t *out, uint32_t cap, uint8_t *work, uint64_t work_len)
{
    int rc = tsf_join_plan_check(p);
    if (rc < 0)
        return rc;
    if (n && (!exits || !out || !work))
        return TSF_E_ARG;
    if (cap < n || work_len < (uint64_t)TSF_EXIT_ORDER_WORK * n)
        return TSF_E_NOSPACE;
    struct exit_key *keys = (struct exit_key *)(void *)work, *tmp = keys + n;
    for (uint32_t i = 0; i < n; i++) {
        keys[i].pid = u32_at(SIGHT(exits, i) + p->s_pid);
        keys[i].btime = i64_at(SIGHT(exits, i) + p->s_btime);
        keys[i].idx = i;
    }
    const struct exit_key *sorted = sort_keys(keys, tmp, n);
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *x = SIGHT(exits, sorted[i].idx);
        if (i + 1 < n && sorted[i + 1].pid == sorted[i].pid && sorted[i + 1].btime == sorted[i].btime &&
            memcmp(x + p->s_mono, SIGHT(exits, sorted[i + 1].idx) + p->s_mono, 8 * (size_t)p->n_mono) == 0)
            continue;                           /* a repeat of the next one: keep that */
        memcpy(SIGHT(out, kept), x, p->sighting_size);
        kept++;
    }
    return kept;
}
