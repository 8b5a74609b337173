/* tsf_seq: what the per-CPU sequence numbers of exit messages say about loss.
 *
 * The kernel stamps each exit message with a per-CPU counter.  On a socket that serves one CPU
 * (struct tsf_source.track_seq) a hole is messages the socket did not get, unless the exiting
 * task migrated between choosing the CPU's listeners and taking the number (a "foreign" seq).
 * The counters live in struct tsf_source (tsf_drain.h): seq_lost, seq_backwards, seq_foreign,
 * events, and the held-message state.
 */
#ifndef TSF_SEQ_H
#define TSF_SEQ_H

#include "tsf_drain.h"

/* cffi:begin */
/* Feed one exit-message seq to src's sequence tracker, as tsf_drain does for every
 * kernel-originated message on a track_seq source (exposed for tests and captures). */
void tsf_source_track_seq(struct tsf_source *src, uint32_t seq);
/* cffi:end */

/* Called by tsf_drain for every datagram received on src (also truncated ones: only the header
 * is read): counts kernel-originated TASKSTATS messages (exit events) and tracks their seq. */
void tsf_seq_observe(struct tsf_source *src, const uint8_t *dgram, size_t len, uint16_t family);

#endif
