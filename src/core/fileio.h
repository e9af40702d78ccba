/* What the on-disk formats (the dedup and convergence snapshots) share: little-endian fields,
 * a write that finishes, making a rename durable, and opening a file to load. */
#ifndef INTAKE_CORE_FILEIO_H
#define INTAKE_CORE_FILEIO_H

#include <stddef.h>
#include <stdint.h>

/* Fixed-width little-endian fields, whatever the host's byte order. */
static inline void intake_le_put64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}
static inline void intake_le_put32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint64_t intake_le_get64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}
static inline uint32_t intake_le_get32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* Writes p[0..n) whole (retrying short writes and EINTR). Returns 0 or -errno. */
int intake_write_all(int fd, const void *p, size_t n);

/* fsyncs the directory holding `path` ("." when it has no '/'), so that a rename into it
 * survives a power loss. Returns 0 or -errno. */
int intake_fsync_parent_dir(const char *path);

/* Opens `path` read-only for a loader: returns the fd and its size in *size, or -errno with
 * what went wrong in err ("no snapshot" when it does not exist, -EINVAL "not a regular file"
 * for a directory, a FIFO or a device). */
int intake_open_regular(const char *path, uint64_t *size, char *err, size_t errlen);

#endif
