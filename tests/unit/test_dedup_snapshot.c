/* Unit tests for src/dedup/snapshot.c: round trips, expiry, capacity changes, and every kind of
 * damaged file (rejected whole, nothing loaded, no crash, no leak under ASan).
 *
 * Also a measurement, not run by CTest:
 *   test_dedup_snapshot --bench KEYS [EVENT_MiB SOURCE_MiB]
 * fills a deduper (default 256 + 64 MiB, the shipped dedup.memory and sequence_memory) with
 * KEYS committed keys, then times: the export scan alone, a snapshot written in-process, a
 * snapshot written by a fork()ed child while the parent keeps committing (the daemon's way:
 * fork() time and the parent's commit latency during the child's life), and the load. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

#include "dedup/dedup.h"
#include "dedup/snapshot.h"

int intake_dedup__verify(const intake_dedup_t *d); /* test hook in dedup.c */

#define T0 1767225600000ull /* 2026-01-01T00:00:00Z, ms */
#define SEC 1000ull
#define MIN (60 * SEC)
#define HDR INTAKE_SNAPSHOT_HEADER_BYTES

static char dir[256];

static int setup_dir(void **state) {
  (void)state;
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/test-dedup-snapshot-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown_dir(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static const char *path_of(const char *name) {
  static char p[4][512];
  static int i;
  i = (i + 1) % 4;
  snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
  return p[i];
}

static intake_dedup_probe_t probe(const char *src, const char *ev, uint64_t seq) {
  intake_dedup_probe_t p;
  intake_dedup_probe_init(&p, src, strlen(src), ev, strlen(ev), seq);
  return p;
}

static intake_dedup_result_t check(intake_dedup_t *d, const char *src, const char *ev,
                                   uint64_t seq, uint64_t now) {
  intake_dedup_probe_t p = probe(src, ev, seq);
  return intake_dedup_check(d, &p, now, NULL);
}

static void commit(intake_dedup_t *d, const char *src, const char *ev, uint64_t seq, uint64_t now) {
  intake_dedup_probe_t p = probe(src, ev, seq);
  intake_dedup_commit(d, &p, now);
}

static void key_name(char *src, char *ev, size_t i) {
  sprintf(src, "src-%zu", i % 97);
  sprintf(ev, "ev-%zu", i);
}

static intake_snapshot_writer_t *writer(void) {
  intake_snapshot_writer_t *w = intake_snapshot_writer_create();
  assert_non_null(w);
  return w;
}

static void save(const intake_dedup_t *d, const char *path, uint64_t now,
                 intake_snapshot_info_t *info) {
  intake_snapshot_writer_t *w = writer();
  intake_snapshot_info_t tmp;
  assert_int_equal(intake_dedup_snapshot_write(d, path, now, w, info ? info : &tmp), 0);
  intake_snapshot_writer_destroy(w);
}

static unsigned char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static void spit(const char *path, const void *buf, size_t len) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  if (len)
    assert_int_equal(fwrite(buf, 1, len, f), len);
  fclose(f);
}

static uint64_t entries(const intake_dedup_t *d) {
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  return st.entries + st.sources;
}

/* Loads `path` into a fresh deduper and expects -EINVAL with nothing loaded. */
static void expect_rejected(const char *path, const char *why_part) {
  intake_dedup_t *d = intake_dedup_create(10 * MIN, 16 << 10, 32 << 10); /* the smallest */
  assert_non_null(d);
  intake_snapshot_info_t info;
  char err[256];
  int rc = intake_dedup_snapshot_load(d, path, T0 + SEC, &info, err, sizeof err);
  if (rc != -EINVAL)
    fail_msg("load returned %d (%s), expected -EINVAL", rc, err);
  assert_true(err[0] != '\0');
  if (why_part && !strstr(err, why_part))
    fail_msg("error \"%s\" does not mention \"%s\"", err, why_part);
  assert_int_equal(entries(d), 0);
  intake_dedup_destroy(d);
}

/* ---- round trips ---------------------------------------------------------------------------- */

static void test_round_trip(void **state) {
  (void)state;
  intake_dedup_t *d = intake_dedup_create(10 * MIN, 1 << 20, 1 << 20);
  assert_non_null(d);
  const size_t n = 20000;
  char src[32], ev[32];
  for (size_t i = 0; i < n; i++) {
    key_name(src, ev, i);
    commit(d, src, ev, 0, T0 + i % 1000);
  }
  /* a numbered source: seq 1..100 */
  for (uint64_t s = 1; s <= 100; s++) {
    sprintf(ev, "q%llu", (unsigned long long)s);
    commit(d, "numbered", ev, s, T0 + 500);
  }
  /* keys in flight are not saved */
  intake_dedup_probe_t fl[10];
  int owner;
  for (int i = 0; i < 10; i++) {
    sprintf(ev, "in-flight-%d", i);
    fl[i] = probe("src-x", ev, 0);
    assert_int_equal(intake_dedup_begin(d, &fl[i], &owner), 0);
  }
  intake_snapshot_info_t wi;
  save(d, path_of("rt.snap"), T0 + 2 * SEC, &wi);
  assert_int_equal(wi.keys, n + 100);
  assert_int_equal(wi.sources, 1);
  assert_true(wi.bytes > HDR);
  assert_true(wi.bytes < (n + 100) * 16 + 1024); /* compressed a bit */
  struct stat st;
  assert_int_equal(stat(path_of("rt.snap.tmp"), &st), -1); /* renamed away */

  intake_dedup_t *e = intake_dedup_create(10 * MIN, 1 << 20, 1 << 20);
  assert_non_null(e);
  intake_snapshot_info_t li;
  char err[256];
  assert_int_equal(intake_dedup_snapshot_load(e, path_of("rt.snap"), T0 + 5 * SEC, &li, err,
                                              sizeof err),
                   0);
  assert_int_equal(li.keys, n + 100);
  assert_int_equal(li.sources, 1);
  assert_int_equal(li.keys_loaded, n + 100);
  assert_int_equal(li.sources_loaded, 1);
  assert_int_equal(li.created_ms, T0 + 2 * SEC);
  assert_int_equal(li.window_ms, 10 * MIN);
  assert_int_equal(li.bytes, wi.bytes);
  assert_int_equal(intake_dedup__verify(e), 0);
  for (size_t i = 0; i < n; i++) {
    key_name(src, ev, i);
    assert_int_equal(check(e, src, ev, 0, T0 + 6 * SEC), INTAKE_DEDUP_DUPLICATE);
    /* each key keeps its own commit time: expires window_ms after it, not after the load */
    assert_int_equal(check(e, src, ev, 0, T0 + i % 1000 + 10 * MIN + 20), INTAKE_DEDUP_NEW);
  }
  for (size_t i = n; i < n + 1000; i++) { /* never seen */
    key_name(src, ev, i);
    assert_int_equal(check(e, src, ev, 0, T0 + 6 * SEC), INTAKE_DEDUP_NEW);
  }
  for (int i = 0; i < 10; i++)
    assert_int_equal(intake_dedup_check(e, &fl[i], T0 + 6 * SEC, NULL), INTAKE_DEDUP_NEW);
  /* the sequence window came back: seq 50 under a new event id is a duplicate, 101 is new */
  assert_int_equal(check(e, "numbered", "other-id", 50, T0 + 6 * SEC), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(check(e, "numbered", "q101", 101, T0 + 6 * SEC), INTAKE_DEDUP_NEW);
  assert_int_equal(check(e, "numbered", "q3", 3, T0 + 6 * SEC), INTAKE_DEDUP_DUPLICATE);

  /* saving what was loaded gives the same content */
  intake_snapshot_info_t wi2;
  save(e, path_of("rt2.snap"), T0 + 2 * SEC, &wi2);
  assert_int_equal(wi2.keys, wi.keys);
  assert_int_equal(wi2.sources, wi.sources);
  intake_dedup_destroy(d);
  intake_dedup_destroy(e);
}

static void test_empty_round_trip(void **state) {
  (void)state;
  intake_dedup_t *d = intake_dedup_create(10 * MIN, 1 << 14, 1 << 15);
  assert_non_null(d);
  intake_snapshot_info_t info;
  save(d, path_of("empty.snap"), T0, &info);
  assert_int_equal(info.keys, 0);
  assert_int_equal(info.sources, 0);
  char err[256];
  assert_int_equal(intake_dedup_snapshot_load(d, path_of("empty.snap"), T0, &info, err, sizeof err),
                   0);
  assert_int_equal(info.keys_loaded, 0);
  assert_int_equal(entries(d), 0);
  intake_dedup_destroy(d);
}

static void test_expired_keys_dropped(void **state) {
  (void)state;
  intake_dedup_t *d = intake_dedup_create(60 * SEC, 1 << 20, 1 << 20);
  assert_non_null(d);
  commit(d, "s", "old", 0, T0);              /* expired when saved */
  commit(d, "s", "mid", 0, T0 + 50 * SEC);   /* live when saved, expired when loaded */
  commit(d, "s", "new", 0, T0 + 80 * SEC);   /* live at both */
  commit(d, "n", "e1", 1, T0 + 50 * SEC);    /* a window that expires before the load */
  intake_snapshot_info_t info;
  save(d, path_of("exp.snap"), T0 + 90 * SEC, &info);
  assert_int_equal(info.keys, 3);            /* "old" is not written */
  assert_int_equal(info.sources, 1);

  intake_dedup_t *e = intake_dedup_create(60 * SEC, 1 << 20, 1 << 20);
  assert_non_null(e);
  char err[256];
  assert_int_equal(intake_dedup_snapshot_load(e, path_of("exp.snap"), T0 + 120 * SEC, &info, err,
                                              sizeof err),
                   0);
  assert_int_equal(info.keys, 3);
  assert_int_equal(info.keys_loaded, 1);
  assert_int_equal(info.sources_loaded, 0);
  assert_int_equal(entries(e), 1);
  assert_int_equal(check(e, "s", "new", 0, T0 + 120 * SEC), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(check(e, "s", "mid", 0, T0 + 120 * SEC), INTAKE_DEDUP_NEW);
  assert_int_equal(check(e, "s", "old", 0, T0 + 120 * SEC), INTAKE_DEDUP_NEW);
  intake_dedup_destroy(e);

  /* The loader's own window decides: a longer one keeps "mid". */
  e = intake_dedup_create(10 * MIN, 1 << 20, 1 << 20);
  assert_non_null(e);
  assert_int_equal(intake_dedup_snapshot_load(e, path_of("exp.snap"), T0 + 120 * SEC, &info, err,
                                              sizeof err),
                   0);
  assert_int_equal(info.keys_loaded, 3);
  assert_int_equal(check(e, "s", "mid", 0, T0 + 120 * SEC), INTAKE_DEDUP_DUPLICATE);
  intake_dedup_destroy(e);

  /* A snapshot from the future (clock stepped back): its keys live one window from now. */
  e = intake_dedup_create(60 * SEC, 1 << 20, 1 << 20);
  assert_non_null(e);
  assert_int_equal(intake_dedup_snapshot_load(e, path_of("exp.snap"), T0 - 3600 * SEC, &info, err,
                                              sizeof err),
                   0);
  assert_int_equal(info.keys_loaded, 3);
  assert_int_equal(check(e, "s", "new", 0, T0 - 3600 * SEC + 59 * SEC), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(check(e, "s", "new", 0, T0 - 3600 * SEC + 61 * SEC), INTAKE_DEDUP_NEW);
  intake_dedup_destroy(e);
  intake_dedup_destroy(d);
}

static void test_other_capacity(void **state) {
  (void)state;
  intake_dedup_t *d = intake_dedup_create(10 * MIN, 4 << 20, 1 << 20); /* 262144 slots */
  assert_non_null(d);
  const size_t n = 18000;
  char src[32], ev[32];
  for (size_t i = 0; i < n; i++) {
    key_name(src, ev, i);
    commit(d, src, ev, i % 3 ? 0 : i + 1, T0);
  }
  save(d, path_of("cap.snap"), T0, NULL);
  /* smaller (32768 slots, 55% full) and larger (1M slots) tables */
  const uint64_t sizes[] = {512 << 10, 16 << 20};
  for (size_t k = 0; k < 2; k++) {
    intake_dedup_t *e = intake_dedup_create(10 * MIN, sizes[k], 64 << 10);
    assert_non_null(e);
    intake_snapshot_info_t info;
    char err[256];
    assert_int_equal(
        intake_dedup_snapshot_load(e, path_of("cap.snap"), T0 + SEC, &info, err, sizeof err), 0);
    assert_int_equal(info.keys_loaded, n);
    assert_int_equal(intake_dedup__verify(e), 0);
    intake_dedup_stats_t st;
    intake_dedup_stats(e, &st);
    assert_int_equal(st.evictions, 0);
    for (size_t i = 0; i < n; i++) {
      key_name(src, ev, i);
      assert_int_equal(check(e, src, ev, 0, T0 + SEC), INTAKE_DEDUP_DUPLICATE);
    }
    intake_dedup_destroy(e);
  }
  /* A table too small for the snapshot keeps what fits: evictions are counted, no failure. */
  intake_dedup_t *e = intake_dedup_create(10 * MIN, 64 << 10, 32 << 10); /* 4096 slots */
  assert_non_null(e);
  intake_snapshot_info_t info;
  char err[256];
  assert_int_equal(
      intake_dedup_snapshot_load(e, path_of("cap.snap"), T0 + SEC, &info, err, sizeof err), 0);
  intake_dedup_stats_t st;
  intake_dedup_stats(e, &st);
  assert_true(st.entries <= st.capacity);
  assert_true(st.evictions > 0);
  assert_int_equal(intake_dedup__verify(e), 0);
  intake_dedup_destroy(e);
  intake_dedup_destroy(d);
}

/* ---- damaged files -------------------------------------------------------------------------- */

/* A small valid snapshot: 200 keys, a few sources. */
static unsigned char *small_snapshot(size_t *len) {
  intake_dedup_t *d = intake_dedup_create(10 * MIN, 1 << 20, 1 << 20);
  assert_non_null(d);
  char src[32], ev[32];
  for (size_t i = 0; i < 200; i++) {
    key_name(src, ev, i);
    commit(d, src, ev, i % 10 == 0 ? i + 1 : 0, T0);
  }
  save(d, path_of("small.snap"), T0, NULL);
  intake_dedup_destroy(d);
  return slurp(path_of("small.snap"), len);
}

static void put64le(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

/* Rewrites the header checksum, so that a test reaches the check after it. */
static void reseal(unsigned char *buf) { put64le(buf + 72, XXH64(buf, 72, 0)); }

/* A version 1 file (its key records carry all 32 low bits of a key, as the 16-byte slots held
 * them) still loads: every key in it is a duplicate afterwards, others stay new. */
static void test_version1_loads(void **state) {
  (void)state;
  enum { N = 300 };
  intake_dedup_key_rec_t recs[N];
  char src[32], ev[32];
  for (size_t i = 0; i < N; i++) {
    key_name(src, ev, i);
    intake_dedup_probe_t p = probe(src, ev, 0);
    recs[i] = (intake_dedup_key_rec_t){.hi = p.key_hi | (p.key_hi == 0),
                                       .lo = (uint32_t)p.key_lo,
                                       .tick = (uint32_t)(T0 / 10)};
  }
  intake_snapshot_writer_t *w = writer();
  intake_snapshot_info_t info;
  assert_int_equal(intake_snapshot_begin(w, path_of("v1.snap"), T0, 10 * MIN), 0);
  assert_int_equal(intake_snapshot_add_keys(w, recs, N), 0);
  assert_int_equal(intake_snapshot_finish(w, &info), 0);
  intake_snapshot_writer_destroy(w);
  size_t len;
  unsigned char *b = slurp(path_of("v1.snap"), &len);
  assert_int_equal(b[8], INTAKE_SNAPSHOT_VERSION);
  b[8] = 1;
  reseal(b);
  spit(path_of("v1.snap"), b, len);
  free(b);

  intake_dedup_t *d = intake_dedup_create(10 * MIN, 1 << 20, 1 << 20);
  char err[256];
  assert_int_equal(intake_dedup_snapshot_load(d, path_of("v1.snap"), T0 + SEC, &info, err,
                                              sizeof err), 0);
  assert_int_equal(info.keys_loaded, N);
  for (size_t i = 0; i < N; i++) {
    key_name(src, ev, i);
    assert_int_equal(check(d, src, ev, 0, T0 + SEC), INTAKE_DEDUP_DUPLICATE);
  }
  for (size_t i = N; i < 4 * N; i++) {
    key_name(src, ev, i);
    assert_int_equal(check(d, src, ev, 0, T0 + SEC), INTAKE_DEDUP_NEW);
  }
  assert_int_equal(intake_dedup__verify(d), 0);
  intake_dedup_destroy(d);
}

static void test_truncated_everywhere(void **state) {
  (void)state;
  size_t len;
  unsigned char *buf = small_snapshot(&len);
  for (size_t cut = 0; cut < len; cut++) {
    spit(path_of("cut.snap"), buf, cut);
    expect_rejected(path_of("cut.snap"), NULL);
  }
  print_message("a %zu-byte snapshot truncated at each of its %zu offsets: all rejected\n", len,
                len);
  free(buf);
}

static void test_flipped_bytes(void **state) {
  (void)state;
  size_t len;
  unsigned char *buf = small_snapshot(&len);
  for (size_t i = 0; i < len; i++) { /* one bit of every byte, each bit position in turn */
    unsigned char bit = (unsigned char)(1u << (i % 8));
    buf[i] ^= bit;
    spit(path_of("flip.snap"), buf, len);
    expect_rejected(path_of("flip.snap"), NULL);
    buf[i] ^= bit;
  }
  print_message("a %zu-byte snapshot with one bit flipped in each byte: all %zu rejected\n", len,
                len);
  /* and the intact file still loads */
  spit(path_of("flip.snap"), buf, len);
  intake_dedup_t *d = intake_dedup_create(10 * MIN, 1 << 20, 1 << 20);
  intake_snapshot_info_t info;
  char err[256];
  assert_int_equal(intake_dedup_snapshot_load(d, path_of("flip.snap"), T0, &info, err, sizeof err),
                   0);
  assert_int_equal(info.keys_loaded, 200);
  intake_dedup_destroy(d);
  free(buf);
}

static void test_bad_headers(void **state) {
  (void)state;
  size_t len;
  unsigned char *buf = small_snapshot(&len);
  unsigned char *b = malloc(len + 64);
  assert_non_null(b);

  memcpy(b, buf, len);
  memcpy(b, "PK\3\4....", 8); /* another format */
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "bad magic");

  memcpy(b, buf, len);
  b[8] = 3; /* version 3, correctly sealed */
  reseal(b);
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "unsupported version 3");

  memcpy(b, buf, len);
  b[8] = 0; /* version 0 */
  reseal(b);
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "unsupported version 0");

  memcpy(b, buf, len);
  b[12] = 88; /* header size */
  reseal(b);
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "header size");

  memcpy(b, buf, len);
  b[20] ^= 1; /* created_ms changed, not resealed */
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "header checksum");

  /* huge counts */
  memcpy(b, buf, len);
  put64le(b + 32, 1ull << 40);
  reseal(b);
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "implausible counts");
  memcpy(b, buf, len);
  put64le(b + 40, UINT64_MAX);
  reseal(b);
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "implausible counts");

  /* counts that the payload cannot hold: a declared 2^32 keys (64 GiB) from ~3 KiB */
  memcpy(b, buf, len);
  put64le(b + 32, 1ull << 32);
  reseal(b);
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "zstd bomb");

  /* counts a little off: the content size does not match */
  memcpy(b, buf, len);
  put64le(b + 32, 201);
  reseal(b);
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "content");
  memcpy(b, buf, len);
  put64le(b + 32, 199);
  reseal(b);
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "content");

  /* payload size that lies, either way; trailing garbage */
  memcpy(b, buf, len);
  put64le(b + 48, len - HDR + 1);
  reseal(b);
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "truncated");
  memcpy(b, buf, len);
  put64le(b + 48, UINT64_MAX);
  reseal(b);
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "truncated");
  memcpy(b, buf, len);
  memset(b + len, 0xab, 64);
  spit(path_of("h.snap"), b, len + 64);
  expect_rejected(path_of("h.snap"), "trailing bytes");
  memcpy(b, buf, len);
  memset(b + len, 0xab, 64);
  put64le(b + 48, len + 64 - HDR); /* trailing bytes declared as payload, checksum and all */
  put64le(b + 64, XXH64(b + HDR, len + 64 - HDR, 0));
  reseal(b);
  spit(path_of("h.snap"), b, len + 64);
  expect_rejected(path_of("h.snap"), "after the end of the zstd frame");

  /* the checksums */
  memcpy(b, buf, len);
  b[56] ^= 0x10;
  reseal(b);
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "content checksum");
  memcpy(b, buf, len);
  b[64] ^= 0x10;
  reseal(b);
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "payload checksum");

  /* an empty file, random bytes, a directory */
  spit(path_of("h.snap"), "", 0);
  expect_rejected(path_of("h.snap"), "bad magic");
  for (size_t i = 0; i < len; i++)
    b[i] = (unsigned char)(i * 2654435761u >> 13);
  spit(path_of("h.snap"), b, len);
  expect_rejected(path_of("h.snap"), "bad magic");
  mkdir(path_of("adir"), 0700);
  expect_rejected(path_of("adir"), "not a regular file");

  /* no file: -ENOENT, not an error */
  intake_dedup_t *d = intake_dedup_create(10 * MIN, 1 << 20, 1 << 20);
  intake_snapshot_info_t info;
  char err[256];
  assert_int_equal(intake_dedup_snapshot_load(d, path_of("none.snap"), T0, &info, err, sizeof err),
                   -ENOENT);
  intake_dedup_destroy(d);
  free(b);
  free(buf);
}

/* A snapshot whose payload is the zstd frame `frame` and whose header declares keys/sources
 * (sealed with the right checksum of `content`, so only the size checks can catch it). */
static void forge(const char *path, const void *frame, size_t frame_len, uint64_t keys,
                  uint64_t sources, uint64_t content_sum) {
  unsigned char *b = malloc(HDR + frame_len);
  assert_non_null(b);
  memset(b, 0, HDR);
  memcpy(b, "INTKDDS\n", 8);
  b[8] = 1;
  b[12] = HDR;
  put64le(b + 16, T0);
  put64le(b + 24, 10 * MIN);
  put64le(b + 32, keys);
  put64le(b + 40, sources);
  put64le(b + 48, frame_len);
  put64le(b + 56, content_sum);
  put64le(b + 64, XXH64(frame, frame_len, 0));
  reseal(b);
  memcpy(b + HDR, frame, frame_len);
  spit(path, b, HDR + frame_len);
  free(b);
}

static void test_zstd_bombs(void **state) {
  (void)state;
  /* 256 MiB of repeated valid-looking records compresses to a few KiB. */
  const size_t big = 256u << 20;
  unsigned char *raw = malloc(big);
  assert_non_null(raw);
  for (size_t i = 0; i < big; i += 16) {
    put64le(raw + i, 0x0123456789abcdefull);
    put64le(raw + i + 8, 0x1122334455667788ull);
  }
  size_t cap = ZSTD_compressBound(big);
  unsigned char *z = malloc(cap);
  assert_non_null(z);
  size_t zlen = ZSTD_compress(z, cap, raw, big, 19);
  assert_false(ZSTD_isError(zlen));
  assert_true(zlen < 64 << 10);

  /* honest about its size: refused before decompressing anything */
  forge(path_of("bomb.snap"), z, zlen, big / 16, 0, XXH64(raw, big, 0));
  expect_rejected(path_of("bomb.snap"), "zstd bomb");

  /* lying: declares 100 keys, the frame holds 16M; decoding stops at the declared size */
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  forge(path_of("bomb.snap"), z, zlen, 100, 0, XXH64(raw, 1600, 0));
  expect_rejected(path_of("bomb.snap"), "larger than");
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
  assert_true(ms < 1000); /* ~1 ms: it never decoded the 256 MiB */

  /* a frame that asks for a 2 GiB window is refused by the decoder's limit */
  ZSTD_CCtx *c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, 31);
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 1);
  ZSTD_CCtx_setPledgedSrcSize(c, 1600);
  zlen = ZSTD_compress2(c, z, cap, raw, 1600);
  ZSTD_freeCCtx(c);
  assert_false(ZSTD_isError(zlen));
  forge(path_of("bomb.snap"), z, zlen, 100, 0, XXH64(raw, 1600, 0));
  intake_dedup_t *d = intake_dedup_create(10 * MIN, 1 << 20, 1 << 20);
  intake_snapshot_info_t info;
  char err[256];
  int rc = intake_dedup_snapshot_load(d, path_of("bomb.snap"), T0, &info, err, sizeof err);
  /* zstd may shrink the window to the pledged size; either way it must not fail otherwise */
  assert_true(rc == -EINVAL || rc == 0);
  intake_dedup_destroy(d);

  /* a record with an empty fingerprint, otherwise perfect */
  memset(raw, 0, 32);
  put64le(raw + 16, 7);
  zlen = ZSTD_compress(z, cap, raw, 32, 1);
  forge(path_of("bomb.snap"), z, zlen, 2, 0, XXH64(raw, 32, 0));
  expect_rejected(path_of("bomb.snap"), "empty fingerprint");
  free(z);
  free(raw);
}

/* ---- writing -------------------------------------------------------------------------------- */

static void test_write_failures(void **state) {
  (void)state;
  intake_dedup_t *d = intake_dedup_create(10 * MIN, 1 << 20, 1 << 20);
  assert_non_null(d);
  commit(d, "s", "1", 0, T0);
  intake_snapshot_writer_t *w = writer();
  intake_snapshot_info_t info;
  assert_int_equal(intake_dedup_snapshot_write(d, path_of("nodir/x.snap"), T0, w, &info), -ENOENT);
  assert_int_equal(intake_dedup_snapshot_write(d, "", T0, w, &info), -ENAMETOOLONG);
  char *longp = malloc(5000);
  memset(longp, 'a', 4999);
  longp[4999] = '\0';
  assert_int_equal(intake_dedup_snapshot_write(d, longp, T0, w, &info), -ENAMETOOLONG);
  free(longp);

  /* a good snapshot, then a write that fails (its temp path is a directory): the old file stays */
  assert_int_equal(intake_dedup_snapshot_write(d, path_of("keep.snap"), T0, w, &info), 0);
  commit(d, "s", "2", 0, T0);
  assert_int_equal(mkdir(path_of("keep.snap.tmp"), 0700), 0);
  assert_true(intake_dedup_snapshot_write(d, path_of("keep.snap"), T0, w, &info) < 0);
  rmdir(path_of("keep.snap.tmp"));
  intake_dedup_t *e = intake_dedup_create(10 * MIN, 1 << 20, 1 << 20);
  char err[256];
  assert_int_equal(
      intake_dedup_snapshot_load(e, path_of("keep.snap"), T0, &info, err, sizeof err), 0);
  assert_int_equal(info.keys_loaded, 1);
  /* the writer is reusable, over an existing file */
  assert_int_equal(intake_dedup_snapshot_write(d, path_of("keep.snap"), T0, w, &info), 0);
  assert_int_equal(info.keys, 2);
  /* a relative path works (the directory to fsync is ".") */
  char cwd[512];
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(dir), 0);
  assert_int_equal(intake_dedup_snapshot_write(d, "rel.snap", T0, w, &info), 0);
  assert_int_equal(chdir(cwd), 0);
  intake_snapshot_writer_destroy(w);
  intake_dedup_destroy(e);
  intake_dedup_destroy(d);
}

static void test_import_rejects_empty_fingerprint(void **state) {
  (void)state;
  intake_dedup_t *d = intake_dedup_create(10 * MIN, 1 << 20, 1 << 20);
  intake_dedup_key_rec_t k = {.hi = 0, .lo = 1, .tick = (uint32_t)(T0 / 10)};
  assert_int_equal(intake_dedup_import_key(d, &k, T0), 0);
  intake_dedup_source_rec_t s = {.hi = 0, .lo = 1, .tick = (uint32_t)(T0 / 10), .top = 1, .bits = 1};
  assert_int_equal(intake_dedup_import_source(d, &s, T0), 0);
  k.hi = 5;
  assert_int_equal(intake_dedup_import_key(d, &k, T0), 1);
  /* an older record of the same key does not move its time back */
  k.tick -= 100;
  assert_int_equal(intake_dedup_import_key(d, &k, T0), 1);
  /* export visits at most `max` slots a call */
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  uint64_t pos = 0, calls = 0, found = 0;
  intake_dedup_key_rec_t out[64];
  while (pos < st.capacity) {
    uint64_t before = pos;
    size_t n = intake_dedup_export_keys(d, T0, &pos, out, 64);
    assert_int_equal(pos - before, 64);
    for (size_t i = 0; i < n; i++) {
      assert_int_equal(out[i].hi, 5);
      assert_int_equal(out[i].tick, (uint32_t)(T0 / 10));
    }
    found += n;
    calls++;
  }
  assert_int_equal(found, 1);
  assert_int_equal(calls, st.capacity / 64);
  assert_int_equal(intake_dedup_export_keys(d, T0, &pos, out, 64), 0); /* at the end: nothing */
  pos = UINT64_MAX;
  assert_int_equal(intake_dedup_export_keys(d, T0, &pos, out, 64), 0);
  assert_int_equal(pos, st.capacity);
  assert_int_equal(entries(d), 1);
  intake_dedup_destroy(d);
}

/* ---- the measurement ------------------------------------------------------------------------ */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int bench(size_t n, uint64_t ev_mib, uint64_t src_mib) {
  const char *tmp = getenv("TMPDIR");
  char path[512];
  snprintf(path, sizeof path, "%s/bench-%d.snap", tmp && *tmp ? tmp : "/tmp", (int)getpid());
  intake_dedup_t *d = intake_dedup_create(10 * MIN, ev_mib << 20, src_mib << 20);
  if (!d)
    return 1;
  uint64_t now = T0;
  char src[32], ev[32];
  double t = now_s();
  for (size_t i = 0; i < n; i++) {
    sprintf(src, "src-%zu", i % 920000);
    sprintf(ev, "ev-%zu", i);
    intake_dedup_probe_t p = probe(src, ev, i % 6 == 0 ? i / 920000 + 1 : 0);
    intake_dedup_commit(d, &p, now + i / 1000);
  }
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  printf("filled: %zu keys, %llu entries, %llu sources, %.1f MiB of tables, %.2f s\n", n,
         (unsigned long long)st.entries, (unsigned long long)st.sources,
         (double)st.bytes / (1 << 20), now_s() - t);
  now += n / 1000 + 1;

  /* the export scan alone, in the daemon's steps (STEP_SLOTS in the persistence: 32,768
   * slots): what the loop pays per step, and per snapshot */
  static intake_dedup_key_rec_t keys[32768];
  static intake_dedup_source_rec_t srcs[32768];
  t = now_s();
  uint64_t pos = 0, got = 0, steps = 0;
  double step_max = 0;
  while (pos < st.capacity) {
    double s0 = now_s();
    got += intake_dedup_export_keys(d, now, &pos, keys, 32768);
    step_max = now_s() - s0 > step_max ? now_s() - s0 : step_max;
    steps++;
  }
  pos = 0;
  while (pos < st.source_capacity) {
    double s0 = now_s();
    got += intake_dedup_export_sources(d, now, &pos, srcs, 32768);
    step_max = now_s() - s0 > step_max ? now_s() - s0 : step_max;
    steps++;
  }
  printf("export scan: %llu records in %.1f ms, %llu steps of 32768 slots, longest %.1f us\n",
         (unsigned long long)got, (now_s() - t) * 1e3, (unsigned long long)steps, step_max * 1e6);

  intake_snapshot_writer_t *w = intake_snapshot_writer_create();
  intake_snapshot_info_t info;
  t = now_s();
  if (intake_dedup_snapshot_write(d, path, now, w, &info) < 0)
    return 1;
  printf("in-process write: %llu keys %llu sources, %llu bytes (%.1f a key), %.1f ms "
         "(fsync included)\n",
         (unsigned long long)info.keys, (unsigned long long)info.sources,
         (unsigned long long)info.bytes, (double)info.bytes / (double)(info.keys + info.sources),
         (now_s() - t) * 1e3);

  /* The daemon's way: fork, the child writes, the parent keeps committing new keys. Baseline
   * first: the same commits with no child. */
  const size_t batch = 1000;
  double base_max = 0, base_total = 0;
  size_t base_n = 0;
  for (size_t i = 0; i < 300; i++) {
    double b0 = now_s();
    for (size_t j = 0; j < batch; j++) {
      sprintf(ev, "base-%zu-%zu", i, j);
      intake_dedup_probe_t p = probe("bench-live", ev, 0);
      intake_dedup_commit(d, &p, now);
    }
    double dt = now_s() - b0;
    base_total += dt;
    base_n++;
    if (dt > base_max)
      base_max = dt;
  }
  double f0 = now_s();
  pid_t pid = fork();
  double fork_ms = (now_s() - f0) * 1e3;
  if (pid == 0) {
    int rc = intake_dedup_snapshot_write(d, path, now, w, &info);
    _exit(rc < 0 ? 1 : 0);
  }
  double max = 0, total = 0;
  size_t batches = 0;
  int status = 0;
  for (size_t i = 0;; i++) {
    double b0 = now_s();
    for (size_t j = 0; j < batch; j++) {
      sprintf(ev, "live-%zu-%zu", i, j);
      intake_dedup_probe_t p = probe("bench-live", ev, 0);
      intake_dedup_commit(d, &p, now);
    }
    double dt = now_s() - b0;
    total += dt;
    batches++;
    if (dt > max)
      max = dt;
    if (waitpid(pid, &status, WNOHANG) == pid)
      break;
  }
  double child_ms = (now_s() - f0) * 1e3;
  printf("fork: %.2f ms in the parent; child wrote the snapshot in %.1f ms (exit %d); parent "
         "meanwhile: %zu x %zu commits, mean %.1f us / max %.1f us a batch (without a child: "
         "mean %.1f / max %.1f)\n",
         fork_ms, child_ms, WEXITSTATUS(status), batches, batch, total / (double)batches * 1e6,
         max * 1e6, base_total / (double)base_n * 1e6, base_max * 1e6);

  intake_dedup_t *e = intake_dedup_create(10 * MIN, ev_mib << 20, src_mib << 20);
  char err[256];
  t = now_s();
  if (intake_dedup_snapshot_load(e, path, now, &info, err, sizeof err) < 0) {
    fprintf(stderr, "load: %s\n", err);
    return 1;
  }
  printf("load: %llu keys %llu sources in %.1f ms\n", (unsigned long long)info.keys_loaded,
         (unsigned long long)info.sources_loaded, (now_s() - t) * 1e3);
  unlink(path);
  intake_snapshot_writer_destroy(w);
  intake_dedup_destroy(e);
  intake_dedup_destroy(d);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "--bench"))
    return bench(strtoull(argv[2], NULL, 10), argc > 3 ? strtoull(argv[3], NULL, 10) : 256,
                 argc > 4 ? strtoull(argv[4], NULL, 10) : 64);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_empty_round_trip),
      cmocka_unit_test(test_expired_keys_dropped),
      cmocka_unit_test(test_other_capacity),
      cmocka_unit_test(test_version1_loads),
      cmocka_unit_test(test_truncated_everywhere),
      cmocka_unit_test(test_flipped_bytes),
      cmocka_unit_test(test_bad_headers),
      cmocka_unit_test(test_zstd_bombs),
      cmocka_unit_test(test_write_failures),
      cmocka_unit_test(test_import_rejects_empty_fingerprint),
  };
  return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
