/* Hot-path benchmark: pre-built BATCH frames through the real pipeline code on one core —
 * framing, zstd, decode, validate, dedup, route and Kafka record construction — with the
 * producer call replaced by a counter (kafka.mode INTAKE_KAFKA_COUNTING, see config.h).
 *
 * The dedup state of the whole city is resident before the clock starts: one event from each
 * of 920,000 sources (770k sensors, 150k camera channels numbering their events). Then the
 * measured stream: events from random sources, with a share of exact retransmits.
 *
 *   intake-hotpath [--events N] [--batch N] [--dup-pct P] [--zstd-pct P] [--window-s S]
 *                  [--converge]
 *
 * --converge adds a rule with alarm convergence over every event (key: source, 30 s window,
 * 512 MiB: every source of the city has an episode): the warm-up opens one per source, the
 * measured stream is then mostly repeats. Compare hotpath_ns_per_event with and without it;
 * the run with it also prints hotpath_converge_ns_per_event (the same figure, named).
 *
 * Prints one "key: value" line per figure; bench/run.sh copies them into RESULTS.md. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>
#include <zstd.h>

#include "config/config.h"
#include "dedup/dedup.h"
#include "ingest/frame.h"
#include "intake.pb-c.h"
#include "pipeline/pipeline.h"

#define SENSORS 770000u
#define CAMERAS 150000u
#define SOURCES (SENSORS + CAMERAS)

typedef struct {
  uint8_t *data;              /* whole frame: header + Batch payload */
  size_t len;
  uint32_t n_events;
} frame_t;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) { /* xorshift64*: reproducible runs */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ull;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *const regions[] = {"330782", "330702", "330703", "330723", "330726", "330727"};
static const char *const sensor_types[] = {"smoke.alarm", "water.level.high", "gas.alarm",
                                           "manhole.open", "smoke.alarm", "device.offline"};
static const char *const camera_types[] = {"gb28181.alarm.2", "gb28181.alarm.5", "gb28181.alarm.6",
                                           "gb28181.alarm.11", "gb28181.alarm.6", "gb28181.alarm.13"};

/* Per-source counters so event ids and sequence numbers are unique per source. */
static uint32_t *next_event;

static void source_id(uint32_t src, char *out) {
  const char *region = regions[src % 6];
  if (src < SENSORS) /* sensors: region + type digits + serial, 19 characters */
    snprintf(out, 32, "%s%s%09u", region, "8801", src);
  else /* GB/T 28181: 8 region digits, 2 digits, 131 (camera), 7-digit serial = 20 digits */
    snprintf(out, 32, "%s%s%s131%07u", region, "01", "00", src - SENSORS);
}

/* Packs one event of source `src` into out; returns its size. */
static size_t make_event(uint32_t src, int64_t t, uint8_t *out) {
  char sid[32], eid[40], value[16], url[96];
  source_id(src, sid);
  uint32_t n = next_event[src]++;
  Intake__V1__Event e = INTAKE__V1__EVENT__INIT;
  Intake__V1__Location loc = INTAKE__V1__LOCATION__INIT;
  Intake__V1__Event__AttributesEntry a1 = INTAKE__V1__EVENT__ATTRIBUTES_ENTRY__INIT, a2 = a1;
  Intake__V1__Event__AttributesEntry *attrs[2] = {&a1, &a2};
  e.source_id = sid;
  e.time_ms = t;
  loc.lon = 119.9 + (double)(src % 1000) / 5000.0;
  loc.lat = 29.2 + (double)(src % 777) / 5000.0;
  loc.region = (char *)regions[src % 6];
  e.location = &loc;
  e.attributes = attrs;
  if (src < SENSORS) {
    snprintf(eid, sizeof eid, "%08x-%04x-4%03x-a%03x-%012x", src, n & 0xffff, n >> 16 & 0xfff,
             (unsigned)(rnd() & 0xfff), n); /* a 36-character id, as Huawei generates */
    e.source_kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR;
    e.type = (char *)sensor_types[(src + n) % 6];
    e.severity = 1 + (src + n) % 4;
    snprintf(value, sizeof value, "%u.%u", (unsigned)(rnd() % 100), (unsigned)(rnd() % 10));
    a1.key = "value";
    a1.value = value;
    a2.key = "threshold";
    a2.value = "50.0";
    e.n_attributes = 2;
  } else {
    snprintf(eid, sizeof eid, "%u", 7000 + n); /* GB/T 28181 SN */
    e.seq = (uint64_t)n + 1;
    e.source_kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA;
    e.type = (char *)camera_types[(src + n) % 6];
    e.severity = 1 + (src + n) % 4;
    a1.key = "alarm_method";
    a1.value = "5";
    e.n_attributes = 1;
    snprintf(url, sizeof url, "http://vms.example/snap/%s/%u.jpg", sid, n);
    e.payload.data = (uint8_t *)url;
    e.payload.len = strlen(url);
  }
  e.event_id = eid;
  return intake__v1__event__pack(&e, out);
}

/* Builds frames of `batch` events each from the event bytes in evbuf. */
static frame_t build_frame(uint64_t seq, uint8_t **events, size_t *lens, uint32_t n, int compress,
                           ZSTD_CCtx *zc) {
  /* A Batch's events field is repeated bytes on the wire: pack it by hand from the bytes. */
  size_t cap = 64;
  for (uint32_t i = 0; i < n; i++)
    cap += lens[i] + 8;
  uint8_t *inner = malloc(cap), *p = inner;
  for (uint32_t i = 0; i < n; i++) {
    *p++ = 0x12; /* field 2, length-delimited */
    size_t l = lens[i];
    while (l >= 0x80) {
      *p++ = (uint8_t)(l | 0x80);
      l >>= 7;
    }
    *p++ = (uint8_t)l;
    memcpy(p, events[i], lens[i]);
    p += lens[i];
  }
  size_t inner_len = (size_t)(p - inner);
  Intake__V1__Batch b = INTAKE__V1__BATCH__INIT;
  b.seq = seq;
  uint8_t *z = NULL;
  size_t body_len;
  uint8_t *body;
  if (compress) {
    z = malloc(ZSTD_compressBound(inner_len));
    size_t zn = ZSTD_compressCCtx(zc, z, ZSTD_compressBound(inner_len), inner, inner_len, 1);
    b.events_zstd.data = z;
    b.events_zstd.len = zn;
    body_len = intake__v1__batch__get_packed_size(&b);
    body = malloc(body_len);
    intake__v1__batch__pack(&b, body);
  } else {
    /* seq field, then the events exactly as packed above */
    body = malloc(inner_len + 16);
    uint8_t *q = body;
    *q++ = 0x08;
    uint64_t s = seq;
    while (s >= 0x80) {
      *q++ = (uint8_t)(s | 0x80);
      s >>= 7;
    }
    *q++ = (uint8_t)s;
    memcpy(q, inner, inner_len);
    body_len = (size_t)(q - body) + inner_len;
  }
  frame_t f;
  f.len = INTAKE_FRAME_HEADER_BYTES + body_len;
  f.data = malloc(f.len);
  intake_frame_header(f.data, INTAKE_FRAME_BATCH, (uint32_t)body_len);
  memcpy(f.data + INTAKE_FRAME_HEADER_BYTES, body, body_len);
  f.n_events = n;
  free(body);
  free(z);
  free(inner);
  return f;
}

static uint64_t acks, outcome[4]; /* by INTAKE_OUTCOME_* */

static void on_done(void *owner, intake_job_t *job, const intake_batch_result_t *r) {
  (void)owner;
  (void)job;
  acks++;
  for (uint32_t i = 0; r->outcomes && i < r->n_events; i++)
    outcome[r->outcomes[i]]++;
}

static void on_resume(void *ctx) { (void)ctx; }

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &kib) == 1)
      break;
  if (f)
    fclose(f);
  return kib;
}

/* Feeds every frame through framing + the pipeline, letting the loop confirm and complete jobs
 * between batches as the daemon's loop would. Returns seconds taken. */
static double feed(uv_loop_t *loop, intake_pipeline_t *p, frame_t *frames, size_t n,
                   uint32_t max_frame) {
  double t0 = now_s();
  for (size_t i = 0; i < n; i++) {
    intake_frame_t f;
    if (intake_frame_parse(frames[i].data, frames[i].len, max_frame, &f) != INTAKE_FRAME_OK) {
      fprintf(stderr, "frame %zu does not parse\n", i);
      exit(1);
    }
    intake_job_t *job;
    const char *detail;
    int rc;
    while ((rc = intake_pipeline_submit(p, f.payload, f.payload_len, "bench-gw", p, &job,
                                        &detail)) == -EAGAIN)
      uv_run(loop, UV_RUN_NOWAIT);
    if (rc < 0) {
      fprintf(stderr, "submit failed: %d %s\n", rc, detail);
      exit(1);
    }
    uv_run(loop, UV_RUN_NOWAIT);
  }
  while (intake_pipeline_jobs(p))
    uv_run(loop, UV_RUN_NOWAIT);
  return now_s() - t0;
}

int main(int argc, char **argv) {
  uint32_t events = 2000000, batch = 500, dup_pct = 10, zstd_pct = 50, window_s = 600;
  int converge = 0;
  for (int i = 1; i < argc; i += 2) {
    if (!strcmp(argv[i], "--converge")) {
      converge = 1;
      i--; /* a flag without a value */
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "option %s needs a value\n", argv[i]);
      return 2;
    }
    uint32_t v = (uint32_t)strtoul(argv[i + 1], NULL, 10);
    if (!strcmp(argv[i], "--events")) events = v;
    else if (!strcmp(argv[i], "--batch")) batch = v;
    else if (!strcmp(argv[i], "--dup-pct")) dup_pct = v;
    else if (!strcmp(argv[i], "--zstd-pct")) zstd_pct = v;
    else if (!strcmp(argv[i], "--window-s")) window_s = v;
    else {
      fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  /* Config: the shipped routing shape, dedup sized for the city (see RESULTS.md): 48 MiB holds
   * the ~2.7M keys of its window at load ~0.69 (run.sh counts the target missed on any
   * eviction, since a table too small for the window would shrink the window instead). */
  char yaml[2560];
  snprintf(yaml, sizeof yaml,
           "gateway: {max_batch_events: %u, max_frame_bytes: 64MiB}\n"
           "dedup: {window: %us, memory: 48MiB, sequence_memory: 8MiB}\n"
           "log: {level: warn}\n"
           "routes:\n"
           "  rules:\n"
           "    - {name: fire, match: {kind: sensor, type: [smoke.alarm, gas.alarm], severity: {min: 1, max: 2}}, topics: intake.fire}\n"
           "    - {name: water, match: {type: water.level.high}, topics: intake.water}\n"
           "    - {name: intrusion, match: {kind: camera, type: gb28181.alarm.6, region_prefix: \"3307\"}, topics: [intake.video, intake.intrusion]}\n"
           "    - {name: video-fault, match: {kind: camera, type: [gb28181.alarm.11, gb28181.alarm.13]}, topics: intake.video.fault, stop: true}\n"
           "%s",
           batch, window_s,
           converge ? "    - {name: converged, topics: intake.converged, converge: {key: [source], window: 30s, memory: 512MiB}}\n"
                    : "");
  intake_config_t cfg;
  char err[512];
  if (intake_config_load_string(&cfg, "hotpath", yaml, strlen(yaml), err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  cfg.kafka_mode = INTAKE_KAFKA_COUNTING;
  uv_loop_t *loop = uv_default_loop();
  intake_pipeline_t *p = intake_pipeline_create(loop, &cfg, on_done, on_resume, NULL, err, sizeof err);
  if (!p) {
    fprintf(stderr, "pipeline: %s\n", err);
    return 1;
  }
  next_event = calloc(SOURCES, sizeof *next_event);
  ZSTD_CCtx *zc = ZSTD_createCCtx();
  int64_t t = wall_ms();

  /* Warm-up stream: one event from every source, in random order (not timed). */
  uint32_t *order = malloc(SOURCES * sizeof *order);
  for (uint32_t i = 0; i < SOURCES; i++)
    order[i] = i;
  for (uint32_t i = SOURCES - 1; i > 0; i--) {
    uint32_t j = (uint32_t)(rnd() % (i + 1)), tmp = order[i];
    order[i] = order[j];
    order[j] = tmp;
  }
  uint8_t **ev = malloc(batch * sizeof *ev);
  size_t *lens = malloc(batch * sizeof *lens);
  for (uint32_t i = 0; i < batch; i++)
    ev[i] = malloc(1024);
  size_t n_warm = (SOURCES + batch - 1) / batch;
  frame_t *warm = malloc(n_warm * sizeof *warm);
  for (size_t f = 0, k = 0; f < n_warm; f++) {
    uint32_t n = 0;
    for (; n < batch && k < SOURCES; n++, k++)
      lens[n] = make_event(order[k], t, ev[n]);
    warm[f] = build_frame(f + 1, ev, lens, n, 0, zc);
  }
  /* Measured stream: random sources, dup_pct% exact retransmits of a recent event. */
  size_t n_frames = (events + batch - 1) / batch;
  frame_t *frames = malloc(n_frames * sizeof *frames);
  enum { RECENT = 4096 };
  uint8_t (*recent)[1024] = malloc(RECENT * 1024);
  size_t recent_len[RECENT];
  uint64_t n_recent = 0, planned_dups = 0, bytes_in = 0, raw_event_bytes = 0, n_events = 0;
  for (size_t f = 0; f < n_frames; f++) {
    uint32_t n = 0;
    for (; n < batch && n_events < events; n++, n_events++) {
      if (n_recent > RECENT && rnd() % 100 < dup_pct) {
        size_t r = (size_t)(rnd() % RECENT);
        memcpy(ev[n], recent[r], recent_len[r]);
        lens[n] = recent_len[r];
        planned_dups++;
      } else {
        lens[n] = make_event((uint32_t)(rnd() % SOURCES), t, ev[n]);
        memcpy(recent[n_recent % RECENT], ev[n], lens[n]);
        recent_len[n_recent % RECENT] = lens[n];
        n_recent++;
      }
      raw_event_bytes += lens[n];
    }
    frames[f] = build_frame(n_warm + f + 1, ev, lens, n, rnd() % 100 < zstd_pct, zc);
    bytes_in += frames[f].len;
  }

  double warm_s = feed(loop, p, warm, n_warm, cfg.max_frame_bytes);
  intake_dedup_stats_t ds;
  const intake_counters_t *c = intake_pipeline_counters(p);
  uint64_t acc0 = outcome[0] + outcome[3], dup0 = outcome[1], rec0 = c->records_delivered;

  double secs = feed(loop, p, frames, n_frames, cfg.max_frame_bytes);

  uint64_t measured = n_events;
  double ns = secs * 1e9 / (double)measured;
  printf("hotpath_events: %llu\n", (unsigned long long)measured);
  printf("hotpath_batch_events: %u\n", batch);
  printf("hotpath_zstd_batches_pct: %u\n", zstd_pct);
  printf("hotpath_dup_pct_planned: %u\n", dup_pct);
  printf("hotpath_avg_event_bytes: %.0f\n", (double)raw_event_bytes / (double)measured);
  printf("hotpath_seconds: %.3f\n", secs);
  printf("hotpath_events_per_s: %.0f\n", (double)measured / secs);
  printf("hotpath_ns_per_event: %.1f\n", ns);
  printf("hotpath_converge: %s\n", converge ? "on" : "off");
  if (converge) {
    const intake_converge_stats_t *cs;
    size_t n_cs = intake_pipeline_converge_stats(p, &cs);
    printf("hotpath_converge_ns_per_event: %.1f\n", ns);
    for (size_t i = 0; i < n_cs; i++)
      printf("hotpath_converge_episodes_opened: %llu\nhotpath_converge_repeats_suppressed: %llu\n"
             "hotpath_converge_evicted: %llu\nhotpath_converge_episodes: %llu\n",
             (unsigned long long)cs[i].c.episodes_opened,
             (unsigned long long)cs[i].c.repeats_suppressed, (unsigned long long)cs[i].c.evicted,
             (unsigned long long)cs[i].c.episodes);
  }
  printf("hotpath_input_mb_per_s: %.1f\n", (double)bytes_in / secs / 1e6);
  printf("hotpath_accepted: %llu\n", (unsigned long long)(outcome[0] + outcome[3] - acc0));
  printf("hotpath_duplicates: %llu\n", (unsigned long long)(outcome[1] - dup0));
  printf("hotpath_records: %llu\n", (unsigned long long)(c->records_delivered - rec0));
  printf("hotpath_rejected: %llu\n", (unsigned long long)c->rejected);
  intake_pipeline_dedup_stats(p, &ds);
  printf("dedup_sources_tracked: %u\n", SOURCES);
  printf("dedup_entries: %llu\n", (unsigned long long)ds.entries);
  printf("dedup_capacity: %llu\n", (unsigned long long)ds.capacity);
  printf("dedup_seq_sources: %llu\n", (unsigned long long)ds.sources);
  printf("dedup_bytes: %llu\n", (unsigned long long)ds.bytes);
  printf("dedup_bytes_per_source: %.1f\n", (double)ds.bytes / SOURCES);
  printf("dedup_evictions: %llu\n", (unsigned long long)ds.evictions);
  printf("warmup_seconds: %.3f\n", warm_s);
  printf("rss_mib: %.1f\n", (double)rss_kib() / 1024.0);
  int ok = c->received == c->delivered + c->duplicate + c->rejected + c->failed + c->in_flight &&
           c->failed == 0 && outcome[1] - dup0 >= planned_dups;
  printf("hotpath_counters_reconcile: %s\n", ok ? "yes" : "NO");

  intake_pipeline_close(p);
  uv_run(loop, UV_RUN_DEFAULT);
  intake_pipeline_destroy(p);
  intake_config_dispose(&cfg);
  return ok ? 0 : 1;
}
