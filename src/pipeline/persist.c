/* Dedup persistence: see persist.h. Every function accepts NULL (persistence off). */
#include "pipeline/persist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "dedup/snapshot.h"

/* Slots exported per loop step: 32768 slots take ~45 us to scan (1.2-1.5 ns a slot over 320 MiB
 * of tables, tests/unit/test_dedup_snapshot.c --bench), a bound on the loop's stall that keeps
 * the step count (~580 for the shipped 256 + 64 MiB tables, a worker round trip each) small. */
#define STEP_SLOTS 32768u

enum { PHASE_KEYS, PHASE_SOURCES };

struct intake_persist {
  uv_loop_t *loop;
  intake_dedup_t *dedup;
  char *path;
  uint64_t interval_ms;              /* 0: only the final snapshot */
  intake_snapshot_writer_t *w;       /* used by the worker while a step is in flight */
  uv_timer_t timer;                  /* fires every interval_ms */
  uv_work_t work;                    /* the step in flight */
  int started;                       /* timer initialised */
  int busy;                          /* a periodic snapshot is in progress */
  int scanning;                      /* ... and still exporting: the sweep waits */
  int closing;                       /* close() called: the final snapshot follows the step */
  int closed;                        /* the final snapshot was attempted */
  /* The snapshot in progress. */
  int phase;                         /* PHASE_* being exported */
  uint64_t pos;                      /* next slot to export in that table */
  uint64_t capacity, source_capacity;
  uint64_t created_ms;               /* when it started: the header's time, export's "now" */
  uint64_t t0_ms;                    /* monotonic start */
  uint64_t loop_ns, step_max_ns;     /* loop time of its export steps */
  /* The step handed to the worker. */
  union {
    intake_dedup_key_rec_t *keys;
    intake_dedup_source_rec_t *sources;
  } buf;                             /* STEP_SLOTS records */
  size_t n;                          /* records in buf */
  int step_phase;                    /* PHASE_* of buf */
  int step_first;                    /* the worker begins the file first */
  int step_last;                     /* the worker finishes the file after */
  int step_rc;                       /* the worker's result */
  intake_snapshot_info_t step_info;  /* filled by the last step */
  intake_snapshot_stats_t st;
};

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- loading --------------------------------------------------------------------------------- */

static void load(intake_persist_t *ps) {
  char err[256], tmp[4096];
  /* A temp file left by a crash mid-snapshot is never valid: drop it. */
  snprintf(tmp, sizeof tmp, "%s.tmp", ps->path);
  (void)unlink(tmp);
  uint64_t now = wall_ms();
  intake_snapshot_info_t info;
  int rc = intake_dedup_snapshot_load(ps->dedup, ps->path, now, &info, err, sizeof err);
  if (rc == -ENOENT) {
    LOG_INFO("dedup snapshot: none yet, starting with empty dedup state", "path=%s", ps->path);
    return;
  }
  if (rc < 0) {
    ps->st.load_errors++;
    char moved[4096] = "";
    if (rc == -EINVAL) { /* keep the bad file for a post-mortem, out of the way */
      snprintf(tmp, sizeof tmp, "%s.corrupt", ps->path);
      if (rename(ps->path, tmp) == 0)
        snprintf(moved, sizeof moved, "%s", tmp);
    }
    LOG_ERROR("dedup snapshot unusable: ignored, starting with empty dedup state (retransmits "
              "of events delivered before the restart will be produced again)",
              "path=%s error=\"%s\" bytes=%llu moved_to=%s", ps->path, err,
              (unsigned long long)info.bytes, moved[0] ? moved : "-");
    return;
  }
  ps->st.loaded_keys = info.keys_loaded;
  ps->st.loaded_sources = info.sources_loaded;
  LOG_INFO("dedup snapshot loaded",
           "path=%s keys=%llu sources=%llu expired_keys=%llu expired_sources=%llu age_ms=%lld "
           "saved_window_ms=%llu bytes=%llu ms=%llu",
           ps->path, (unsigned long long)info.keys_loaded,
           (unsigned long long)info.sources_loaded,
           (unsigned long long)(info.keys - info.keys_loaded),
           (unsigned long long)(info.sources - info.sources_loaded),
           (long long)(now - info.created_ms), (unsigned long long)info.window_ms,
           (unsigned long long)info.bytes, (unsigned long long)info.duration_ms);
}

intake_persist_t *intake_persist_create(uv_loop_t *loop, intake_dedup_t *d, const char *path,
                                        uint64_t interval_ms) {
  intake_persist_t *ps = calloc(1, sizeof *ps);
  if (!ps)
    return NULL;
  ps->loop = loop;
  ps->dedup = d;
  ps->interval_ms = interval_ms;
  ps->path = strdup(path);
  ps->w = intake_snapshot_writer_create();
  ps->buf.sources = malloc(STEP_SLOTS * sizeof *ps->buf.sources);
  if (!ps->path || !ps->w || !ps->buf.sources) {
    intake_persist_destroy(ps);
    return NULL;
  }
  load(ps);
  /* Say now, not at the first snapshot, when the directory cannot take one. */
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash)
    slash[slash == dir] = '\0'; /* "/x" -> "/" */
  if (access(slash ? dir : ".", W_OK | X_OK) < 0)
    LOG_ERROR("dedup.snapshot_path: its directory is not writable; snapshots will fail until it "
              "is",
              "path=%s error=\"%s\"", path, strerror(errno));
  return ps;
}

/* ---- periodic snapshots ---------------------------------------------------------------------- */

static void on_step_done(uv_work_t *req, int status);

/* The worker: begin, add the step's records, finish. On error it removes the temp file. */
static void run_step(uv_work_t *req) {
  intake_persist_t *ps = req->data;
  int rc = 0;
  if (ps->step_first)
    rc = intake_snapshot_begin(ps->w, ps->path, ps->created_ms,
                               intake_dedup_window_ms(ps->dedup));
  if (rc == 0 && ps->n)
    rc = ps->step_phase == PHASE_KEYS ? intake_snapshot_add_keys(ps->w, ps->buf.keys, ps->n)
                                      : intake_snapshot_add_sources(ps->w, ps->buf.sources, ps->n);
  if (rc == 0 && ps->step_last)
    rc = intake_snapshot_finish(ps->w, &ps->step_info);
  if (rc < 0)
    intake_snapshot_cancel(ps->w);
  ps->step_rc = rc;
}

/* Exports the next step on the loop thread and hands it to the worker. */
static void next_step(intake_persist_t *ps, int first) {
  uint64_t t0 = mono_ns();
  ps->step_first = first;
  ps->step_phase = ps->phase;
  if (ps->phase == PHASE_KEYS) {
    ps->n = intake_dedup_export_keys(ps->dedup, ps->created_ms, &ps->pos, ps->buf.keys, STEP_SLOTS);
    if (ps->pos >= ps->capacity) {
      ps->phase = PHASE_SOURCES;
      ps->pos = 0;
    }
    ps->step_last = 0;
  } else {
    ps->n = intake_dedup_export_sources(ps->dedup, ps->created_ms, &ps->pos, ps->buf.sources,
                                        STEP_SLOTS);
    ps->step_last = ps->pos >= ps->source_capacity;
    if (ps->step_last) {
      ps->scanning = 0; /* every slot visited: the sweep may move keys again */
      intake_dedup_hold_deletions(ps->dedup, 0);
    }
  }
  uint64_t dt = mono_ns() - t0;
  ps->loop_ns += dt;
  if (dt > ps->step_max_ns)
    ps->step_max_ns = dt;
  ps->work.data = ps;
  uv_queue_work(ps->loop, &ps->work, run_step, on_step_done); /* never fails: req and cb set */
}

static void final_snapshot(intake_persist_t *ps);

static void on_step_done(uv_work_t *req, int status) {
  intake_persist_t *ps = req->data;
  (void)status; /* never cancelled */
  if (ps->step_rc < 0) {
    ps->st.failed++;
    ps->busy = ps->scanning = 0;
    intake_dedup_hold_deletions(ps->dedup, 0);
    LOG_ERROR("dedup snapshot failed; the previous one stays in place", "path=%s error=\"%s\"",
              ps->path, strerror(-ps->step_rc));
  } else if (ps->step_last) {
    const intake_snapshot_info_t *i = &ps->step_info;
    ps->busy = 0;
    ps->st.written++;
    ps->st.last_ms = i->duration_ms;
    ps->st.last_loop_us = ps->loop_ns / 1000;
    ps->st.last_step_max_us = ps->step_max_ns / 1000;
    ps->st.last_keys = i->keys;
    ps->st.last_sources = i->sources;
    ps->st.last_bytes = i->bytes;
    ps->st.last_created_ms = i->created_ms;
    LOG_INFO("dedup snapshot written",
             "path=%s keys=%llu sources=%llu bytes=%llu ms=%llu loop_us=%llu step_max_us=%llu "
             "created_ms=%llu final=false",
             ps->path, (unsigned long long)i->keys, (unsigned long long)i->sources,
             (unsigned long long)i->bytes, (unsigned long long)i->duration_ms,
             (unsigned long long)ps->st.last_loop_us, (unsigned long long)ps->st.last_step_max_us,
             (unsigned long long)i->created_ms);
  } else if (ps->closing) {
    intake_snapshot_cancel(ps->w); /* superseded by the final snapshot */
    ps->busy = ps->scanning = 0;
    intake_dedup_hold_deletions(ps->dedup, 0);
  } else {
    next_step(ps, 0);
    return;
  }
  if (ps->closing)
    final_snapshot(ps);
}

static void on_timer(uv_timer_t *t) {
  intake_persist_t *ps = t->data;
  if (ps->busy) {
    ps->st.skipped++;
    return;
  }
  intake_dedup_stats_t ds;
  intake_dedup_stats(ps->dedup, &ds);
  ps->busy = ps->scanning = 1;
  intake_dedup_hold_deletions(ps->dedup, 1); /* a deletion could shift a key past the export */
  ps->phase = PHASE_KEYS;
  ps->pos = 0;
  ps->capacity = ds.capacity;
  ps->source_capacity = ds.source_capacity;
  ps->created_ms = wall_ms();
  ps->loop_ns = ps->step_max_ns = 0;
  next_step(ps, 1);
}

void intake_persist_start(intake_persist_t *ps) {
  if (!ps || ps->started)
    return;
  uv_timer_init(ps->loop, &ps->timer);
  ps->timer.data = ps;
  ps->started = 1;
  if (ps->interval_ms)
    uv_timer_start(&ps->timer, on_timer, ps->interval_ms, ps->interval_ms);
}

void intake_persist_set_interval(intake_persist_t *ps, uint64_t interval_ms) {
  if (!ps || ps->interval_ms == interval_ms)
    return;
  ps->interval_ms = interval_ms;
  if (!ps->started || ps->closing)
    return;
  uv_timer_stop(&ps->timer);
  if (interval_ms)
    uv_timer_start(&ps->timer, on_timer, interval_ms, interval_ms);
}

int intake_persist_scanning(const intake_persist_t *ps) { return ps && ps->scanning; }

/* ---- shutdown ---------------------------------------------------------------------------------- */

static void final_snapshot(intake_persist_t *ps) {
  ps->closed = 1;
  intake_snapshot_info_t i;
  uint64_t t0 = mono_ns();
  int rc = intake_dedup_snapshot_write(ps->dedup, ps->path, wall_ms(), ps->w, &i);
  if (rc < 0) {
    ps->st.failed++;
    LOG_ERROR("final dedup snapshot failed; the previous one stays in place",
              "path=%s error=\"%s\"", ps->path, strerror(-rc));
    return;
  }
  ps->st.written++;
  ps->st.last_ms = i.duration_ms;
  ps->st.last_loop_us = ps->st.last_step_max_us = (mono_ns() - t0) / 1000;
  ps->st.last_keys = i.keys;
  ps->st.last_sources = i.sources;
  ps->st.last_bytes = i.bytes;
  ps->st.last_created_ms = i.created_ms;
  LOG_INFO("dedup snapshot written",
           "path=%s keys=%llu sources=%llu bytes=%llu ms=%llu created_ms=%llu final=true",
           ps->path, (unsigned long long)i.keys, (unsigned long long)i.sources,
           (unsigned long long)i.bytes, (unsigned long long)i.duration_ms,
           (unsigned long long)i.created_ms);
}

static void on_timer_closed(uv_handle_t *h) { (void)h; }

void intake_persist_close(intake_persist_t *ps) {
  if (!ps || ps->closing)
    return;
  ps->closing = 1;
  if (ps->started)
    uv_close((uv_handle_t *)&ps->timer, on_timer_closed);
  if (!ps->busy)
    final_snapshot(ps); /* else on_step_done() writes it when the worker's step returns */
}

void intake_persist_destroy(intake_persist_t *ps) {
  if (!ps)
    return;
  intake_snapshot_writer_destroy(ps->w);
  free(ps->buf.sources);
  free(ps->path);
  free(ps);
}

void intake_persist_stats(const intake_persist_t *ps, intake_snapshot_stats_t *out) {
  if (!ps) {
    memset(out, 0, sizeof *out);
    return;
  }
  *out = ps->st;
}
