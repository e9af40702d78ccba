/* systemd notifications from a real intaked: with NOTIFY_SOCKET pointing at a datagram socket
 * this test owns, READY=1 (with a STATUS= naming both listeners) arrives once the daemon
 * accepts connections, WATCHDOG=1 keeps arriving at half of WATCHDOG_USEC, and SIGTERM brings
 * STOPPING=1 before a clean exit. */
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "itest.h"

static const char CONFIG[] =
    "listen:\n"
    "  port: ${PORT}\n"
    "admin:\n"
    "  port: 0\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n";

/* The next datagram within timeout_ms, NUL-terminated into buf; false on timeout. */
static bool next_msg(int fd, char *buf, size_t len, int timeout_ms) {
  struct pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) != 1)
    return false;
  ssize_t n = recv(fd, buf, len - 1, 0);
  IT_CHECK(n > 0);
  buf[n] = '\0';
  return true;
}

/* The next datagram that is not a watchdog ping. */
static bool next_state(int fd, char *buf, size_t len, int timeout_ms, int *pings) {
  int64_t deadline = itest_mono_ms() + timeout_ms;
  while (itest_mono_ms() < deadline) {
    if (!next_msg(fd, buf, len, (int)(deadline - itest_mono_ms())))
      return false;
    if (strcmp(buf, "WATCHDOG=1") != 0)
      return true;
    (*pings)++;
  }
  return false;
}

int main(void) {
  itest_init("notify", true, 90);
  char path[600];
  snprintf(path, sizeof path, "%s/notify.sock", itest_dir());
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  IT_CHECK(fd >= 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  IT_CHECK(strlen(path) < sizeof sa.sun_path);
  strcpy(sa.sun_path, path);
  IT_CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);

  setenv("NOTIFY_SOCKET", path, 1);
  setenv("WATCHDOG_USEC", "400000", 1); /* pings every 200 ms */
  itest_daemon_t d;
  itest_daemon_start(&d, "main", CONFIG);
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");

  char msg[512];
  int pings = 0;
  IT_CHECKF(next_state(fd, msg, sizeof msg, 10000, &pings), "no READY=1 within 10 s");
  char want[128];
  snprintf(want, sizeof want, "READY=1\nSTATUS=listening on 127.0.0.1:%u, admin on 127.0.0.1:",
           d.port);
  IT_CHECKF(!strncmp(msg, want, strlen(want)), "first notification \"%s\", want \"%s…\"", msg,
            want);

  itest_sleep_ms(1000);
  IT_CHECKF(next_state(fd, msg, sizeof msg, 100, &pings) == false, "unexpected \"%s\"", msg);
  IT_CHECKF(pings >= 3, "%d watchdog pings in 1 s at a 200 ms period", pings);

  itest_daemon_signal(&d, SIGTERM);
  IT_CHECKF(next_state(fd, msg, sizeof msg, 10000, &pings), "no STOPPING=1 within 10 s");
  IT_CHECKF(!strcmp(msg, "STOPPING=1"), "after SIGTERM: \"%s\", want STOPPING=1", msg);
  IT_CHECK_INT(itest_daemon_wait(&d, 20000), 0);
  close(fd);
  itest_finish();
  return 0;
}
