/* recvmmsg_slots.h: pointing recvmmsg's message headers at an arena's slots, for the C floors
 * (bench/floor_common.h's GET round and bench/exit_floor.c's drain; not part of the library).
 *
 * recvmmsg writes each header's msg_len and flags, so the headers are set again before every
 * call; the arena is n consecutive slots of slot bytes.
 */
#ifndef RECVMMSG_SLOTS_H
#define RECVMMSG_SLOTS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

static inline void point_slots(struct mmsghdr *msgs, struct iovec *iov, int n, uint8_t *arena,
                               size_t slot)
{
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = arena + (size_t)i * slot;
        iov[i].iov_len = slot;
        memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
}

#endif
