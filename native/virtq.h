/*
 * Split virtqueue layout (virtio 1.x, little-endian on x86) shared by the
 * datapath engine (backend side) and the probe (frontend side).
 */
#ifndef ZIU_VIRTQ_H
#define ZIU_VIRTQ_H

#include <stdint.h>

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY 1
#define VIRTQ_MAX_SIZE 32768

struct vring_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

struct vring_avail {
  uint16_t flags;
  uint16_t idx;
  uint16_t ring[];
  /* then: uint16_t used_event */
};

struct vring_used_elem {
  uint32_t id;
  uint32_t len;
};

struct vring_used {
  uint16_t flags;
  uint16_t idx;
  struct vring_used_elem ring[];
  /* then: uint16_t avail_event */
};

/* virtio_net_hdr; 12 bytes with num_buffers (MRG_RXBUF or VERSION_1), else 10 */
struct virtio_net_hdr_mrg {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
  uint16_t num_buffers;
};

static inline uint64_t vring_desc_bytes(uint32_t num) { return 16ull * num; }
static inline uint64_t vring_avail_bytes(uint32_t num) { return 4ull + 2ull * num + 2; }
static inline uint64_t vring_used_bytes(uint32_t num) { return 4ull + 8ull * num + 2; }

#endif
