/* The city that bench/intake_bench.c plays: the sources of the perception network and the
 * events they send, encoded as intake.v1.Event (proto/intake.proto) by hand.
 *
 * 770,000 IoT sensors (smoke, gas, water level, manhole covers, hydrants, noise, dustbins,
 * parking) and 150,000 video channels with GB/T 28181 20-digit ids (digits 1-8 the region: a
 * Jinhua county code from GB/T 2260 plus a town; 9-10 industry; 11-13 type 131 camera or 132
 * IPC; 14-20 a serial), mostly in Yiwu (330782). Every source has a fixed kind, class, region
 * and position, built once by city_init() into a table shared read-only by all threads.
 *
 * Events are a few hundred bytes: type code, severity, device-clock time, location, 3-5
 * attributes, and for cameras a snapshot URL as payload. Cameras number their alarms (Event.seq,
 * the GB/T 28181 SN); sensors do not.
 *
 * Every event id ends in 12 lowercase hex digits that name the ledger entry it belongs to
 * (thread << 40 | counter), so that the verifier maps a record read back from Kafka to what
 * the generator sent without a lookup table. */
#ifndef INTAKE_BENCH_CITY_H
#define INTAKE_BENCH_CITY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CITY_SENSORS 770000u
#define CITY_CAMERAS 150000u
#define CITY_SOURCES (CITY_SENSORS + CITY_CAMERAS)

#define CITY_ID_MAX 24          /* longest source id + NUL */
#define CITY_EVENT_MAX 1024     /* longest encoded event (invalid ones included) */
#define CITY_REF_HEX 12         /* hex digits of the ledger ref at the end of every event id */

/* Values of intake.v1.SourceKind used here. */
enum { CITY_KIND_SENSOR = 1, CITY_KIND_CAMERA = 2 };

/* Topics of the bench's routing (city_routes_yaml()), as bits of a mask. */
enum {
  CITY_T_EVENTS = 0,   /* default topic: no rule matched */
  CITY_T_FIRE = 1,     /* rule "fire": sensor smoke/gas alarms, severity 1..2 */
  CITY_T_VIDEO = 2,    /* rule "video-intrusion": camera tripwire/intrusion in 330782 */
  CITY_T_URGENT = 3,   /* rule "urgent": severity 1, any kind (fans out with the others) */
  CITY_T_DLQ = 4,      /* dead-letter topic */
  CITY_N_TOPICS = 5
};
extern const char *const city_topic_suffix[CITY_N_TOPICS]; /* "events", "fire", ... */
extern const char *const city_topic_rule[CITY_N_TOPICS];   /* "default", "fire", ... */

/* Kinds of invalid event city_invalid() makes; each is rejected by intaked for its reason. */
enum {
  CITY_BAD_MALFORMED = 0,   /* truncated inside a field: not a decodable Event */
  CITY_BAD_NO_SOURCE,
  CITY_BAD_NO_EVENT_ID,
  CITY_BAD_NO_TYPE,
  CITY_BAD_KIND,            /* source_kind 7 */
  CITY_BAD_SEVERITY,        /* 12 */
  CITY_BAD_TIME_FUTURE,     /* an hour ahead */
  CITY_BAD_TIME_OLD,        /* 30 days old */
  CITY_BAD_LOCATION,        /* latitude 123 */
  CITY_BAD_REGION,          /* region "33a782" */
  CITY_BAD_UTF8,            /* type with a stray 0xff byte */
  CITY_BAD_ID_TOO_LONG,     /* 80-byte event id */
  CITY_BAD_TOO_MANY_ATTRS,  /* 40 attributes */
  CITY_BAD_COUNT
};

/* One event before encoding. Strings point into caller storage or static tables. */
typedef struct {
  uint32_t src;                 /* source index */
  uint32_t kind;                /* CITY_KIND_* (or a bad value) */
  const char *source_id;
  uint32_t source_id_len;
  char event_id[96];
  uint32_t event_id_len;
  uint64_t seq;                 /* 0 = none */
  const char *type;
  uint32_t type_len;
  uint32_t severity;
  int64_t time_ms;
  int has_location;
  double lon, lat;
  const char *region;
  uint32_t region_len;
  char region_buf[16];
  struct {
    const char *k, *v;
    uint32_t klen, vlen;
  } attr[48];
  uint32_t n_attr;
  char attr_buf[512];           /* storage for rendered attribute values */
  uint32_t attr_used;
  char payload[160];
  uint32_t payload_len;
  int clear;
} city_event_t;

/* Builds the source table (about 60 MB; ~0.3 s). Idempotent. `seed` picks the layout. */
void city_init(uint64_t seed);

/* The source id of source `s` (NUL-terminated, in the shared table) and its length. */
const char *city_source_id(uint32_t s, uint32_t *len);
int city_is_camera(uint32_t s);

/* A small xorshift generator; each thread owns one. */
typedef struct {
  uint64_t s;
} city_rng_t;
static inline uint64_t city_rand(city_rng_t *r) {
  uint64_t x = r->s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return r->s = x;
}
/* Uniform in [0, n). */
static inline uint32_t city_below(city_rng_t *r, uint32_t n) {
  return (uint32_t)(((city_rand(r) >> 32) * (uint64_t)n) >> 32);
}
/* True with probability p. */
static inline int city_chance(city_rng_t *r, double p) {
  return p > 0 && (double)(city_rand(r) >> 11) * (1.0 / 9007199254740992.0) < p;
}

/* Fills *e with a typical event of source `src` at wall time now_ms: an alarm, fault or
 * measurement of its class, id ending in `ref` (CITY_REF_HEX hex digits), seq as given.
 * `clear` < 0: any kind of event; 0 or 1: a kind of alarm that has a clear (for flapping
 * sensors), with Event.clear = `clear`. */
void city_event(city_event_t *e, city_rng_t *r, uint32_t src, uint64_t ref, uint64_t seq,
                int64_t now_ms, int clear);

/* Same source, type and severity as `prev` (a storm repeat, a flapping sensor's next
 * alarm/clear): a new id, time and measurements; Event.clear = 0. */
void city_event_repeat(city_event_t *e, const city_event_t *prev, city_rng_t *r, uint64_t ref,
                       uint64_t seq, int64_t now_ms);

/* Encodes *e as an intake.v1.Event into out (at least CITY_EVENT_MAX bytes); returns the
 * length. */
size_t city_encode(const city_event_t *e, uint8_t *out);

/* Makes invalid event `bad` (CITY_BAD_*) from a valid one of source `src` and encodes it into
 * out. Returns the length. */
size_t city_invalid(int bad, city_rng_t *r, uint32_t src, uint64_t ref, int64_t now_ms,
                    uint8_t *out);

/* The topics the bench's routes send *e to, as a mask of 1 << CITY_T_*. */
unsigned city_route(const city_event_t *e);

/* Writes the `routes:` section of intaked's config for topic prefix `prefix` (what
 * city_route() assumes) to f. */
void city_routes_yaml(FILE *f, const char *prefix);

/* The ledger ref in an event id (its last CITY_REF_HEX characters). Returns 0 and sets *ref, or
 * -1 when the id does not end that way. */
int city_parse_ref(const char *id, size_t len, uint64_t *ref);

/* Reads fields 1 (source_id) and 3 (event_id) of an encoded Event. Returns 0, or -1 when the
 * bytes are not a well-formed Event at the top level. */
int city_peek_ids(const uint8_t *buf, size_t len, const char **sid, size_t *sid_len,
                  const char **eid, size_t *eid_len);

#endif
