#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int intake_write_all(int fd, const void *buf, size_t n) {
  const unsigned char *p = buf;
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

int intake_fsync_parent_dir(const char *path) {
  size_t len = strlen(path);
  while (len > 0 && path[len - 1] != '/')
    len--;
  char dir[PATH_MAX];
  if (len == 0) {
    dir[0] = '.';
    dir[1] = '\0';
  } else {
    if (len >= sizeof dir)
      return -ENAMETOOLONG;
    memcpy(dir, path, len);
    dir[len] = '\0';
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return -errno;
  int rc = fsync(dfd) < 0 ? -errno : 0;
  close(dfd);
  return rc;
}

int intake_open_regular(const char *path, uint64_t *size, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int rc = -errno;
    snprintf(err, errlen, "%s", errno == ENOENT ? "no snapshot" : strerror(errno));
    return rc;
  }
  struct stat st;
  int rc = 0;
  if (fstat(fd, &st) < 0) {
    rc = -errno;
    snprintf(err, errlen, "fstat: %s", strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    rc = -EINVAL;
    snprintf(err, errlen, "not a regular file");
  }
  if (rc < 0) {
    close(fd);
    return rc;
  }
  *size = (uint64_t)st.st_size;
  return fd;
}
