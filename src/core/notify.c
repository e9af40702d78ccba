#include "core/notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int intake_notify(const char *state) {
  const char *path = getenv("NOTIFY_SOCKET");
  if (path == NULL || *path == '\0')
    return 0;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  size_t n = strlen(path);
  if ((path[0] != '/' && path[0] != '@') || n >= sizeof sa.sun_path)
    return -EINVAL; /* e.g. "vsock:…" (systemd 254+, for VMs): not for a host service */
  memcpy(sa.sun_path, path, n);
  if (path[0] == '@')
    sa.sun_path[0] = '\0'; /* abstract namespace: the name is not NUL-terminated */
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/'));
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  ssize_t w = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
  int rc = w < 0 ? -errno : 1;
  close(fd);
  return rc;
}

int intake_notify_ready(const char *status) {
  char msg[256];
  if (status == NULL)
    return intake_notify("READY=1");
  snprintf(msg, sizeof msg, "READY=1\nSTATUS=%s", status);
  return intake_notify(msg);
}

int intake_notify_reloading(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  char msg[96];
  snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
           (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
  return intake_notify(msg);
}

int intake_notify_stopping(void) { return intake_notify("STOPPING=1"); }
int intake_notify_watchdog(void) { return intake_notify("WATCHDOG=1"); }

uint64_t intake_notify_watchdog_usec(void) {
  const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
  if (usec == NULL || *usec < '1' || *usec > '9')
    return 0;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(usec, &end, 10);
  if (errno || *end != '\0')
    return 0;
  if (pid != NULL && *pid != '\0') {
    unsigned long long p = strtoull(pid, &end, 10);
    if (*end != '\0' || p != (unsigned long long)getpid())
      return 0;
  }
  return v;
}
