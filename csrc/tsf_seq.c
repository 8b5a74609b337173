/* tsf_seq.c: per-CPU sequence analysis of the exit stream (see tsf_seq.h).
 *
 * Analysis, not I/O: tsf_drain hands every datagram's header here through tsf_seq_observe and
 * knows nothing of sequence numbers.
 */
#include "tsf_seq.h"
#include "tsf_nl.h"

/* Exit messages carry a per-CPU sequence number, so on a socket that serves one CPU a forward
 * jump is events the kernel could not deliver to it.  One exception: the exiting task picks
 * the listener list of the CPU it runs on, may migrate, and then takes the seq of the CPU it
 * landed on.  Such a foreign message breaks the sequence without any loss here (the other CPU's
 * stream shows a hole instead).  A message that breaks the sequence is therefore held until the
 * next one: if that one continues after the held message, the jump was real (a loss, or a step
 * back); if it resumes the old sequence, the held message was foreign. */
static void expect_next(struct tsf_source *src, uint32_t seq)
{
    if (seq == src->next_seq) {
        src->next_seq = seq + 1;
    } else {
        src->held = 1;
        src->held_seq = seq;
    }
}

void tsf_source_track_seq(struct tsf_source *src, uint32_t seq)
{
    if (!src->seq_valid) {
        src->seq_valid = 1;
        src->next_seq = seq + 1;
        return;
    }
    if (src->held) {
        uint32_t held = src->held_seq, expected = src->next_seq;
        uint32_t after_held = seq - (held + 1);  /* u32 distances: 0 = exactly in line */
        uint32_t after_old = seq - expected;
        int resumes_old = after_held != 0 && after_old < 0x80000000u &&
                          (after_held >= 0x80000000u || after_old < after_held);
        src->held = 0;
        if (resumes_old) {
            src->seq_foreign++;
        } else {
            uint32_t gap = held - expected;
            if (gap < 0x80000000u)
                src->seq_lost += gap;
            else
                src->seq_backwards++;
            src->next_seq = held + 1;
        }
    }
    expect_next(src, seq);
}

/* Exit events are the TASKSTATS messages the kernel sends on its own (port 0, carrying the
 * per-CPU seq); replies to requests and ACKs carry our port and the request's seq. */
void tsf_seq_observe(struct tsf_source *src, const uint8_t *dgram, size_t len, uint16_t family)
{
    /* the header alone: a truncated datagram's length field exceeds what arrived, yet its
     * header is intact and still counts */
    if (len < TSF_NLMSG_HDRLEN)
        return;
    if (tsf_nlmsg_type(dgram) != family || tsf_nlmsg_port(dgram) != 0)
        return;
    src->events++;
    if (src->track_seq)
        tsf_source_track_seq(src, tsf_nlmsg_seq(dgram));
}
