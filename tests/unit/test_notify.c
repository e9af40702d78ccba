/* Unit tests for src/core/notify: the sd_notify datagrams reach a socket named by NOTIFY_SOCKET
 * (path and abstract), nothing happens without it, WATCHDOG_USEC/WATCHDOG_PID are honoured. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/notify.h"

/* Binds a datagram socket at `name` (a path, or "@x" for the abstract namespace). */
static int bind_dgram(const char *name) {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t n = strlen(name);
  memcpy(sa.sun_path, name, n);
  if (name[0] == '@')
    sa.sun_path[0] = '\0';
  assert_int_equal(bind(fd, (struct sockaddr *)&sa,
                        (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)),
                   0);
  return fd;
}

static void expect_msg(int fd, const char *prefix) {
  char buf[256];
  ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
  assert_true(n > 0);
  buf[n] = '\0';
  if (strncmp(buf, prefix, strlen(prefix)) != 0)
    print_error("got \"%s\", want \"%s...\"\n", buf, prefix);
  assert_true(strncmp(buf, prefix, strlen(prefix)) == 0);
}

static void test_path_socket(void **state) {
  char path[64];
  snprintf(path, sizeof path, "/tmp/intake-notify-%d.sock", (int)getpid());
  unlink(path);
  int fd = bind_dgram(path);
  setenv("NOTIFY_SOCKET", path, 1);
  assert_int_equal(intake_notify_ready("listening on 127.0.0.1:7400"), 1);
  expect_msg(fd, "READY=1\nSTATUS=listening on 127.0.0.1:7400");
  assert_int_equal(intake_notify_reloading(), 1);
  expect_msg(fd, "RELOADING=1\nMONOTONIC_USEC=");
  assert_int_equal(intake_notify_ready(NULL), 1);
  expect_msg(fd, "READY=1");
  assert_int_equal(intake_notify_stopping(), 1);
  expect_msg(fd, "STOPPING=1");
  assert_int_equal(intake_notify_watchdog(), 1);
  expect_msg(fd, "WATCHDOG=1");
  close(fd);
  /* Nobody listening any more: an error, not a crash or a block. */
  assert_true(intake_notify_stopping() < 0);
  unlink(path);
  unsetenv("NOTIFY_SOCKET");
}

static void test_abstract_socket(void **state) {
  char name[64];
  snprintf(name, sizeof name, "@intake-notify-test-%d", (int)getpid());
  int fd = bind_dgram(name);
  setenv("NOTIFY_SOCKET", name, 1);
  assert_int_equal(intake_notify_stopping(), 1);
  expect_msg(fd, "STOPPING=1");
  close(fd);
  unsetenv("NOTIFY_SOCKET");
}

static void test_unset_and_invalid(void **state) {
  unsetenv("NOTIFY_SOCKET");
  assert_int_equal(intake_notify_ready(NULL), 0);
  setenv("NOTIFY_SOCKET", "", 1);
  assert_int_equal(intake_notify_ready(NULL), 0);
  setenv("NOTIFY_SOCKET", "relative/path", 1);
  assert_int_equal(intake_notify_ready(NULL), -EINVAL);
  setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
  assert_int_equal(intake_notify_ready(NULL), -EINVAL);
  unsetenv("NOTIFY_SOCKET");
}

static void test_watchdog_env(void **state) {
  char pid[32];
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  assert_int_equal(intake_notify_watchdog_usec(), 0);
  setenv("WATCHDOG_USEC", "30000000", 1);
  assert_int_equal(intake_notify_watchdog_usec(), 30000000);
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  setenv("WATCHDOG_PID", pid, 1);
  assert_int_equal(intake_notify_watchdog_usec(), 30000000);
  snprintf(pid, sizeof pid, "%d", (int)getpid() + 1);
  setenv("WATCHDOG_PID", pid, 1);
  assert_int_equal(intake_notify_watchdog_usec(), 0); /* meant for another process */
  unsetenv("WATCHDOG_PID");
  setenv("WATCHDOG_USEC", "0", 1);
  assert_int_equal(intake_notify_watchdog_usec(), 0);
  setenv("WATCHDOG_USEC", "12x", 1);
  assert_int_equal(intake_notify_watchdog_usec(), 0);
  unsetenv("WATCHDOG_USEC");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_path_socket),
      cmocka_unit_test(test_abstract_socket),
      cmocka_unit_test(test_unset_and_invalid),
      cmocka_unit_test(test_watchdog_env),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
