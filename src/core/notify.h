/* systemd service notifications (sd_notify(3)) for Type=notify units, and the watchdog.
 *
 * The protocol is a documented datagram (systemd's "NOTIFY_SOCKET" interface, sd_notify(3)):
 * newline-separated VAR=VALUE assignments sent to the AF_UNIX datagram socket named in the
 * environment variable NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). These
 * twenty lines do that instead of linking libsystemd: the daemon then runs, and builds, where
 * libsystemd is absent (containers, other init systems), and there is nothing to configure.
 *
 * Every function is a no-op returning 0 when NOTIFY_SOCKET is unset (not started by systemd).
 * They block for no longer than a local datagram send. */
#ifndef INTAKE_CORE_NOTIFY_H
#define INTAKE_CORE_NOTIFY_H

#include <stdint.h>

/* Sends `state` (e.g. "READY=1\nSTATUS=listening") as one datagram. Returns 1 when sent, 0 when
 * NOTIFY_SOCKET is unset, or a negative errno (-EINVAL for an unusable NOTIFY_SOCKET value). */
int intake_notify(const char *state);

/* READY=1, with an optional STATUS= line (NULL: none). After the listeners are up. */
int intake_notify_ready(const char *status);

/* RELOADING=1 with MONOTONIC_USEC= (which systemd 253+ requires for reload notifications; older
 * ones ignore it). Call before applying a new config; call intake_notify_ready() once the
 * reload is done, whether it succeeded or not, or systemd keeps the unit in "reloading". */
int intake_notify_reloading(void);

/* STOPPING=1: graceful shutdown has begun. */
int intake_notify_stopping(void);

/* WATCHDOG=1: the service is alive. */
int intake_notify_watchdog(void);

/* The watchdog interval systemd expects pings within (WatchdogSec=), in microseconds, or 0 when
 * no watchdog is set for this process (WATCHDOG_USEC unset or invalid, or WATCHDOG_PID names
 * another process). Ping at half of it. */
uint64_t intake_notify_watchdog_usec(void);

#endif
