#include "city.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const city_topic_suffix[CITY_N_TOPICS] = {"events", "fire", "video", "urgent", "dlq"};
const char *const city_topic_rule[CITY_N_TOPICS] = {"default", "fire", "video-intrusion",
                                                    "urgent", NULL};

/* ---- the map ------------------------------------------------------------------------------ */

/* Jinhua's counties (GB/T 2260), with a centre and a share of the devices; Yiwu has most. */
static const struct {
  const char *code;
  double lon, lat;
  unsigned share; /* per mille */
  unsigned towns; /* streets/towns numbered 001.. */
} counties[] = {
    {"330782", 120.075, 29.306, 700, 14}, /* Yiwu */
    {"330702", 119.650, 29.080, 60, 9},   /* Wucheng */
    {"330703", 119.690, 29.100, 50, 10},  /* Jindong */
    {"330781", 119.460, 29.210, 40, 16},  /* Lanxi */
    {"330783", 120.240, 29.290, 60, 18},  /* Dongyang */
    {"330784", 120.040, 28.890, 40, 14},  /* Yongkang */
    {"330723", 119.820, 28.900, 20, 18},  /* Wuyi */
    {"330726", 119.890, 29.450, 20, 15},  /* Pujiang */
    {"330727", 120.450, 29.050, 10, 20},  /* Pan'an */
};
#define N_COUNTIES (sizeof counties / sizeof counties[0])

/* County names and Yiwu's streets/towns, for the "address" attribute platforms attach (UTF-8,
 * as the devices' platforms send it). */
static const char *const county_names[] = {"义乌市", "婺城区", "金东区", "兰溪市", "东阳市",
                                           "永康市", "武义县", "浦江县", "磐安县"};
static const char *const yiwu_towns[] = {"稠城街道", "北苑街道", "稠江街道", "江东街道",
                                         "后宅街道", "城西街道", "廿三里街道", "福田街道",
                                         "佛堂镇", "赤岸镇", "义亭镇", "上溪镇", "苏溪镇",
                                         "大陈镇"};
static const char *const roads[] = {"工人北路", "宾王路", "稠州北路", "江滨北路", "城中中路",
                                    "商城大道", "丹溪北路", "春晗路", "雪峰西路", "福田路"};

static const char *const sensor_vendors[] = {"huawei", "tuya", "aliyun", "hikvision", "ctwing",
                                             "dahua"};
static const char *const camera_vendors[] = {"hikvision", "dahua", "uniview", "huawei"};
static const char *const product_keys[] = {"a1Xk3fT9pQz", "hw6504a1b2c", "tuyaSm0k3Q7",
                                           "a1GasDet9xR", "ctw20931kLm", "dh8Kc0vE2sP"};
static const char *const firmwares[] = {"V2.3.7", "V1.0.12", "V3.1.0", "V2.0.4", "V1.8.3"};

/* One kind of event a class of source sends. */
typedef struct {
  const char *type;
  unsigned weight;
  unsigned sev_lo, sev_hi;
  const char *unit;       /* NULL: no value/threshold attributes */
  double vmin, vmax, threshold;
  int decimals;
  int alarm;              /* has a matching clear: used by flapping sensors */
} ev_kind_t;

typedef struct {
  const char *prefix;     /* source id prefix */
  unsigned share;         /* per mille of the sensors */
  ev_kind_t kinds[4];
  unsigned n_kinds;
} sensor_class_t;

static const sensor_class_t sensor_classes[] = {
    {"smk", 300,
     {{"smoke.alarm", 60, 1, 2, "%obs/m", 2.6, 8.0, 2.5, 1, 1},
      {"smoke.fault", 15, 3, 3, NULL, 0, 0, 0, 0, 0},
      {"device.battery.low", 15, 4, 4, "%", 5, 19, 20, 0, 0},
      {"smoke.tamper", 10, 3, 3, NULL, 0, 0, 0, 0, 0}},
     4},
    {"gas", 100,
     {{"gas.alarm", 60, 1, 2, "%LEL", 10, 60, 10, 0, 1},
      {"gas.fault", 20, 3, 3, NULL, 0, 0, 0, 0, 0},
      {"device.battery.low", 20, 4, 4, "%", 5, 19, 20, 0, 0}},
     3},
    {"wlv", 60,
     {{"water.level.high", 70, 2, 3, "m", 1.5, 3.5, 1.5, 2, 1},
      {"device.offline", 30, 4, 4, NULL, 0, 0, 0, 0, 0}},
     2},
    {"mhc", 180,
     {{"manhole.tilt", 40, 2, 2, "deg", 15, 90, 15, 0, 1},
      {"manhole.open", 30, 2, 2, NULL, 0, 0, 0, 0, 1},
      {"manhole.water", 30, 3, 3, "cm", 20, 80, 20, 0, 1}},
     3},
    {"hyd", 60,
     {{"hydrant.pressure.low", 60, 3, 3, "MPa", 0.05, 0.14, 0.15, 2, 1},
      {"hydrant.open", 40, 2, 2, NULL, 0, 0, 0, 0, 1}},
     2},
    {"nse", 80, {{"noise.exceed", 100, 4, 4, "dB(A)", 70, 95, 70, 1, 1}}, 1},
    {"bin", 120,
     {{"dustbin.full", 80, 4, 4, "%", 85, 100, 85, 0, 1},
      {"dustbin.fire", 20, 1, 1, "C", 60, 200, 60, 0, 1}},
     2},
    {"prk", 100, {{"parking.illegal", 100, 3, 3, NULL, 0, 0, 0, 0, 0}}, 1},
};
#define N_SENSOR_CLASSES (sizeof sensor_classes / sizeof sensor_classes[0])

/* GB/T 28181 video AlarmType codes and how often analytics raise them. */
static const struct {
  const char *type;
  unsigned weight;
} camera_alarms[] = {
    {"gb28181.alarm.1", 2},  {"gb28181.alarm.2", 25}, {"gb28181.alarm.3", 5},
    {"gb28181.alarm.4", 3},  {"gb28181.alarm.5", 12}, {"gb28181.alarm.6", 20},
    {"gb28181.alarm.7", 3},  {"gb28181.alarm.8", 8},  {"gb28181.alarm.9", 4},
    {"gb28181.alarm.10", 5}, {"gb28181.alarm.11", 6}, {"gb28181.alarm.12", 3},
    {"gb28181.alarm.13", 4},
};
#define N_CAMERA_ALARMS (sizeof camera_alarms / sizeof camera_alarms[0])

/* AlarmPriority 1 (most urgent) .. 4, per mille. */
static const unsigned camera_priority[4] = {50, 200, 400, 350};

typedef struct {
  char id[21];            /* NUL-terminated */
  uint8_t id_len;
  uint8_t cls;            /* sensor class, or camera: 0 */
  uint8_t vendor;
  uint8_t county;
  uint8_t town;           /* 1.. */
  uint8_t fw;
  float lon, lat;
} source_t;

static source_t *sources;

static uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

static unsigned pick_county(city_rng_t *r) {
  unsigned x = city_below(r, 1000), acc = 0;
  for (unsigned i = 0; i < N_COUNTIES; i++) {
    acc += counties[i].share;
    if (x < acc)
      return i;
  }
  return 0;
}

void city_init(uint64_t seed) {
  if (sources)
    return;
  sources = calloc(CITY_SOURCES, sizeof *sources);
  if (!sources) {
    fprintf(stderr, "city: out of memory\n");
    exit(1);
  }
  city_rng_t r = {mix64(seed) | 1};
  uint32_t serial[N_COUNTIES] = {0};
  for (uint32_t s = 0; s < CITY_SOURCES; s++) {
    source_t *src = &sources[s];
    unsigned c = pick_county(&r);
    src->county = (uint8_t)c;
    src->town = (uint8_t)(1 + city_below(&r, counties[c].towns));
    src->lon = (float)(counties[c].lon + ((double)city_below(&r, 20000) - 10000) * 1.5e-5);
    src->lat = (float)(counties[c].lat + ((double)city_below(&r, 20000) - 10000) * 1.2e-5);
    src->fw = (uint8_t)city_below(&r, sizeof firmwares / sizeof firmwares[0]);
    if (s < CITY_SENSORS) {
      unsigned x = city_below(&r, 1000), acc = 0, k = 0;
      for (; k < N_SENSOR_CLASSES - 1; k++) {
        acc += sensor_classes[k].share;
        if (x < acc)
          break;
      }
      src->cls = (uint8_t)k;
      src->vendor = (uint8_t)city_below(&r, sizeof sensor_vendors / sizeof sensor_vendors[0]);
      /* e.g. smk-330782-00012345 */
      src->id_len = (uint8_t)snprintf(src->id, sizeof src->id, "%s-%s-%08u",
                                      sensor_classes[k].prefix, counties[c].code, ++serial[c]);
    } else {
      src->vendor = (uint8_t)city_below(&r, sizeof camera_vendors / sizeof camera_vendors[0]);
      /* region (8) + industry "00" + type 131 camera / 132 IPC + serial (7) = 20 digits */
      src->id_len = (uint8_t)snprintf(src->id, sizeof src->id, "%s%02u00%s%07u",
                                      counties[c].code, (unsigned)src->town,
                                      city_below(&r, 4) ? "132" : "131",
                                      (unsigned)(s - CITY_SENSORS + 1));
    }
  }
}

const char *city_source_id(uint32_t s, uint32_t *len) {
  *len = sources[s].id_len;
  return sources[s].id;
}

int city_is_camera(uint32_t s) { return s >= CITY_SENSORS; }

/* ---- events ------------------------------------------------------------------------------- */

static const char hexd[] = "0123456789abcdef";

static void put_hex(char *out, uint64_t v, int digits) {
  for (int i = digits - 1; i >= 0; i--, v >>= 4)
    out[i] = hexd[v & 15];
}

static uint32_t put_dec(char *out, uint64_t v) {
  char tmp[24];
  uint32_t n = 0;
  do
    tmp[n++] = (char)('0' + v % 10);
  while (v /= 10);
  for (uint32_t i = 0; i < n; i++)
    out[i] = tmp[n - 1 - i];
  return n;
}

/* A fixed-point number with `decimals` digits after the point. */
static uint32_t put_fixed(char *out, double v, int decimals) {
  uint64_t scale = decimals == 0 ? 1 : decimals == 1 ? 10 : 100;
  uint64_t x = (uint64_t)(v * (double)scale + 0.5);
  uint32_t n = put_dec(out, x / scale);
  if (decimals) {
    out[n++] = '.';
    uint64_t f = x % scale;
    if (decimals == 2 && f < 10)
      out[n++] = '0';
    n += put_dec(out + n, f);
  }
  return n;
}

static void add_attr(city_event_t *e, const char *k, const char *v, uint32_t vlen) {
  if (e->n_attr >= sizeof e->attr / sizeof e->attr[0])
    return;
  e->attr[e->n_attr].k = k;
  e->attr[e->n_attr].klen = (uint32_t)strlen(k);
  e->attr[e->n_attr].v = v;
  e->attr[e->n_attr].vlen = vlen;
  e->n_attr++;
}

/* Renders into e->attr_buf and adds the attribute. */
static void add_attr_buf(city_event_t *e, const char *k, const char *v, uint32_t vlen) {
  if (e->attr_used + vlen > sizeof e->attr_buf)
    return;
  char *dst = e->attr_buf + e->attr_used;
  memcpy(dst, v, vlen);
  e->attr_used += vlen;
  add_attr(e, k, dst, vlen);
}

/* "2024-11-05T17:46:29" (China Standard Time, as the devices report it) and
 * "20241105174629" for snapshot names, cached per thread per second. */
static void civil_time(int64_t ms, char iso[20], char compact[15]) {
  static __thread int64_t cached_s = -1;
  static __thread char c_iso[64], c_compact[64]; /* room for any int, to please -Wformat */
  int64_t s = ms / 1000;
  if (s != cached_s) {
    time_t t = (time_t)(s + 8 * 3600);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(c_iso, sizeof c_iso, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    snprintf(c_compact, sizeof c_compact, "%04d%02d%02d%02d%02d%02d", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    cached_s = s;
  }
  memcpy(iso, c_iso, 20);
  memcpy(compact, c_compact, 15);
}

static void set_event_id(city_event_t *e, city_rng_t *r, uint64_t ref) {
  char *p = e->event_id;
  if (city_is_camera(e->src)) {
    /* the video platform's alarm id: "AL" + SN + "-" + ref */
    p[0] = 'A', p[1] = 'L';
    uint32_t n = 2 + put_dec(p + 2, e->seq ? e->seq : city_below(r, 100000));
    p[n++] = '-';
    put_hex(p + n, ref, CITY_REF_HEX);
    e->event_id_len = n + CITY_REF_HEX;
  } else {
    /* Huawei-style 36-char UUID; the last group is the ref */
    uint64_t h = mix64(ref ^ 0x5bd1e995u);
    put_hex(p, h >> 32, 8);
    p[8] = '-';
    put_hex(p + 9, h >> 16, 4);
    p[13] = '-', p[14] = '4';
    put_hex(p + 15, h >> 4, 3);
    p[18] = '-', p[19] = '8';
    put_hex(p + 20, h >> 44, 3);
    p[23] = '-';
    put_hex(p + 24, ref, CITY_REF_HEX);
    e->event_id_len = 36;
  }
  e->event_id[e->event_id_len] = '\0';
}

static void base_event(city_event_t *e, uint32_t src, int64_t now_ms, city_rng_t *r) {
  const source_t *s = &sources[src];
  e->src = src;
  e->kind = city_is_camera(src) ? CITY_KIND_CAMERA : CITY_KIND_SENSOR;
  e->source_id = s->id;
  e->source_id_len = s->id_len;
  e->n_attr = 0;
  e->attr_used = 0;
  e->payload_len = 0;
  e->clear = 0;
  e->time_ms = now_ms - (int64_t)city_below(r, 3000); /* device clocks lag a little */
  e->has_location = 1;
  e->lon = s->lon;
  e->lat = s->lat;
  /* region: county (6) + town (3) digits */
  memcpy(e->region_buf, counties[s->county].code, 6);
  e->region_buf[6] = '0';
  e->region_buf[7] = (char)('0' + s->town / 10);
  e->region_buf[8] = (char)('0' + s->town % 10);
  e->region = e->region_buf;
  e->region_len = 9;
}

/* "浙江省金华市义乌市稠城街道工人北路123号": where the device is, as its platform names it. */
static void add_address(city_event_t *e) {
  const source_t *s = &sources[e->src];
  char a[160];
  size_t n = 0;
  const char *parts[3] = {"浙江省金华市", county_names[s->county],
                          s->county == 0 ? yiwu_towns[(s->town - 1) % 14] : ""};
  for (int i = 0; i < 3; i++) {
    size_t l = strlen(parts[i]);
    memcpy(a + n, parts[i], l);
    n += l;
  }
  const char *road = roads[e->src % 10];
  size_t l = strlen(road);
  memcpy(a + n, road, l);
  n += l;
  n += put_dec(a + n, 1 + (e->src >> 4) % 400);
  memcpy(a + n, "号", 3);
  n += 3;
  add_attr_buf(e, "address", a, (uint32_t)n);
}

/* Attributes of a sensor event of kind k (value, threshold, unit when it measures something). */
static void sensor_attrs(city_event_t *e, const ev_kind_t *k, city_rng_t *r) {
  const source_t *s = &sources[e->src];
  const char *vendor = sensor_vendors[s->vendor];
  add_attr(e, "vendor", vendor, (uint32_t)strlen(vendor));
  add_attr(e, "product_key", product_keys[s->vendor], 11);
  if (k->unit) {
    char num[32];
    double v = k->vmin + (k->vmax - k->vmin) * (double)city_below(r, 1000) / 1000.0;
    add_attr_buf(e, "value", num, put_fixed(num, v, k->decimals));
    add_attr_buf(e, "threshold", num, put_fixed(num, k->threshold, k->decimals));
    add_attr(e, "unit", k->unit, (uint32_t)strlen(k->unit));
  }
  const char *fw = firmwares[s->fw];
  add_attr(e, "fw", fw, (uint32_t)strlen(fw));
  add_address(e);
}

static void camera_attrs(city_event_t *e, const char *alarm_type, city_rng_t *r) {
  const source_t *s = &sources[e->src];
  char iso[20], compact[15];
  civil_time(e->time_ms, iso, compact);
  add_attr(e, "alarm_method", "5", 1);
  add_attr(e, "alarm_type", alarm_type, (uint32_t)strlen(alarm_type));
  add_attr_buf(e, "alarm_time", iso, 19);
  /* the county's signalling server (type 200) that relayed the alarm */
  char platform[20];
  memcpy(platform, counties[s->county].code, 6);
  memcpy(platform + 6, "00002000000001", 14);
  add_attr_buf(e, "platform", platform, 20);
  const char *vendor = camera_vendors[s->vendor];
  add_attr(e, "vendor", vendor, (uint32_t)strlen(vendor));
  add_address(e);
  /* snapshot URL on the NVR: http://10.33.X.Y:8080/snap/<id>/<time><ms>.jpg */
  char *p = e->payload;
  uint32_t n = 0;
  memcpy(p, "http://10.33.", 13), n = 13;
  n += put_dec(p + n, (e->src >> 8) & 255);
  p[n++] = '.';
  n += put_dec(p + n, e->src & 255);
  memcpy(p + n, ":8080/snap/", 11), n += 11;
  memcpy(p + n, e->source_id, e->source_id_len), n += e->source_id_len;
  p[n++] = '/';
  memcpy(p + n, compact, 14), n += 14;
  n += put_dec(p + n, 100 + city_below(r, 900));
  memcpy(p + n, ".jpg", 4), n += 4;
  e->payload_len = n;
}

static const ev_kind_t *pick_sensor_kind(const sensor_class_t *c, city_rng_t *r, int alarm_only) {
  unsigned total = 0;
  for (unsigned i = 0; i < c->n_kinds; i++)
    if (!alarm_only || c->kinds[i].alarm)
      total += c->kinds[i].weight;
  if (total == 0)
    return &c->kinds[0];
  unsigned x = city_below(r, total);
  for (unsigned i = 0; i < c->n_kinds; i++) {
    if (alarm_only && !c->kinds[i].alarm)
      continue;
    if (x < c->kinds[i].weight)
      return &c->kinds[i];
    x -= c->kinds[i].weight;
  }
  return &c->kinds[0];
}

static void fill_sensor(city_event_t *e, city_rng_t *r, const ev_kind_t *k) {
  e->type = k->type;
  e->type_len = (uint32_t)strlen(k->type);
  e->severity = k->sev_lo + city_below(r, k->sev_hi - k->sev_lo + 1);
  sensor_attrs(e, k, r);
}

static void fill_camera(city_event_t *e, city_rng_t *r, unsigned alarm) {
  e->type = camera_alarms[alarm].type;
  e->type_len = (uint32_t)strlen(e->type);
  unsigned x = city_below(r, 1000), acc = 0, p = 0;
  for (; p < 3; p++) {
    acc += camera_priority[p];
    if (x < acc)
      break;
  }
  e->severity = p + 1;
  camera_attrs(e, e->type + 14, r); /* "gb28181.alarm." is 14 bytes */
}

static unsigned pick_camera_alarm(city_rng_t *r) {
  unsigned total = 0;
  for (unsigned i = 0; i < N_CAMERA_ALARMS; i++)
    total += camera_alarms[i].weight;
  unsigned x = city_below(r, total);
  for (unsigned i = 0; i < N_CAMERA_ALARMS; i++) {
    if (x < camera_alarms[i].weight)
      return i;
    x -= camera_alarms[i].weight;
  }
  return 0;
}

void city_event(city_event_t *e, city_rng_t *r, uint32_t src, uint64_t ref, uint64_t seq,
                int64_t now_ms, int clear) {
  base_event(e, src, now_ms, r);
  e->seq = seq;
  if (city_is_camera(src)) {
    fill_camera(e, r, pick_camera_alarm(r));
  } else {
    const sensor_class_t *c = &sensor_classes[sources[src].cls];
    /* a flapping sensor sends only kinds of alarm that have a clear */
    const ev_kind_t *k = pick_sensor_kind(c, r, clear >= 0);
    fill_sensor(e, r, k);
  }
  e->clear = clear > 0;
  set_event_id(e, r, ref);
}

void city_event_repeat(city_event_t *e, const city_event_t *prev, city_rng_t *r, uint64_t ref,
                       uint64_t seq, int64_t now_ms) {
  uint32_t src = prev->src;
  base_event(e, src, now_ms, r);
  e->seq = seq;
  e->severity = prev->severity;
  e->type = prev->type;
  e->type_len = prev->type_len;
  if (city_is_camera(src)) {
    camera_attrs(e, e->type + 14, r);
  } else {
    const sensor_class_t *c = &sensor_classes[sources[src].cls];
    const ev_kind_t *k = &c->kinds[0];
    for (unsigned i = 0; i < c->n_kinds; i++)
      if (!strcmp(c->kinds[i].type, prev->type))
        k = &c->kinds[i];
    sensor_attrs(e, k, r);
  }
  set_event_id(e, r, ref);
}

/* ---- encoding ----------------------------------------------------------------------------- */

static inline uint8_t *enc_varint(uint8_t *p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *p++ = (uint8_t)v;
  return p;
}

static inline uint32_t varint_len(uint64_t v) {
  uint32_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static inline uint8_t *enc_bytes(uint8_t *p, uint32_t field, const void *data, uint32_t len) {
  *p++ = (uint8_t)(field << 3 | 2);
  p = enc_varint(p, len);
  memcpy(p, data, len);
  return p + len;
}

static inline uint8_t *enc_double(uint8_t *p, uint32_t field, double v) {
  *p++ = (uint8_t)(field << 3 | 1);
  memcpy(p, &v, 8); /* little-endian host, as protobuf's fixed64 */
  return p + 8;
}

size_t city_encode(const city_event_t *e, uint8_t *out) {
  uint8_t *p = out;
  /* proto3: fields at their default value are not written, as protobuf-c does */
  if (e->source_id_len)
    p = enc_bytes(p, 1, e->source_id, e->source_id_len);
  if (e->kind) {
    *p++ = 2 << 3;
    p = enc_varint(p, e->kind);
  }
  if (e->event_id_len)
    p = enc_bytes(p, 3, e->event_id, e->event_id_len);
  if (e->seq) {
    *p++ = 4 << 3;
    p = enc_varint(p, e->seq);
  }
  if (e->type_len)
    p = enc_bytes(p, 5, e->type, e->type_len);
  if (e->severity) {
    *p++ = 6 << 3;
    p = enc_varint(p, e->severity);
  }
  if (e->time_ms) {
    *p++ = 7 << 3;
    p = enc_varint(p, (uint64_t)e->time_ms);
  }
  if (e->has_location) {
    uint32_t len = 9 + 9 + (e->region_len ? 1 + varint_len(e->region_len) + e->region_len : 0);
    *p++ = 8 << 3 | 2;
    p = enc_varint(p, len);
    p = enc_double(p, 1, e->lon);
    p = enc_double(p, 2, e->lat);
    if (e->region_len)
      p = enc_bytes(p, 3, e->region, e->region_len);
  }
  for (uint32_t i = 0; i < e->n_attr; i++) {
    uint32_t kl = e->attr[i].klen, vl = e->attr[i].vlen;
    uint32_t len = 1 + varint_len(kl) + kl + 1 + varint_len(vl) + vl;
    *p++ = 9 << 3 | 2;
    p = enc_varint(p, len);
    p = enc_bytes(p, 1, e->attr[i].k, kl);
    p = enc_bytes(p, 2, e->attr[i].v, vl);
  }
  if (e->payload_len)
    p = enc_bytes(p, 10, e->payload, e->payload_len);
  if (e->clear) {
    *p++ = 11 << 3;
    *p++ = 1;
  }
  return (size_t)(p - out);
}

size_t city_invalid(int bad, city_rng_t *r, uint32_t src, uint64_t ref, int64_t now_ms,
                    uint8_t *out) {
  city_event_t e;
  city_event(&e, r, src, ref, 0, now_ms, -1);
  /* the ref as an attribute too, so that even an event without an id is unique content */
  char refhex[CITY_REF_HEX];
  put_hex(refhex, ref, CITY_REF_HEX);
  add_attr_buf(&e, "bench_ref", refhex, CITY_REF_HEX);
  switch (bad) {
  case CITY_BAD_MALFORMED:
    if (e.payload_len < 16) {
      memcpy(e.payload, "http://10.33.0.1/img/00000000.jpg", 33);
      e.payload_len = 33;
    }
    e.clear = 0;
    return city_encode(&e, out) - 5; /* cut inside the payload: its length runs past the end */
  case CITY_BAD_NO_SOURCE:
    e.source_id_len = 0;
    break;
  case CITY_BAD_NO_EVENT_ID:
    e.event_id_len = 0;
    break;
  case CITY_BAD_NO_TYPE:
    e.type_len = 0;
    break;
  case CITY_BAD_KIND:
    e.kind = 7;
    break;
  case CITY_BAD_SEVERITY:
    e.severity = 12;
    break;
  case CITY_BAD_TIME_FUTURE:
    e.time_ms = now_ms + 3600 * 1000;
    break;
  case CITY_BAD_TIME_OLD:
    e.time_ms = now_ms - 30ll * 24 * 3600 * 1000;
    break;
  case CITY_BAD_LOCATION:
    e.lat = 123.0;
    break;
  case CITY_BAD_REGION:
    e.region = "33a782";
    e.region_len = 6;
    break;
  case CITY_BAD_UTF8:
    e.type = "smoke.al\xff" "arm";
    e.type_len = 12;
    break;
  case CITY_BAD_ID_TOO_LONG: {
    char id[96];
    memset(id, 'x', 68);
    put_hex(id + 68, ref, CITY_REF_HEX);
    memcpy(e.event_id, id, 80);
    e.event_id_len = 80;
    break;
  }
  case CITY_BAD_TOO_MANY_ATTRS: {
    static const char *const keys[] = {"k00", "k01", "k02", "k03", "k04", "k05", "k06", "k07",
                                       "k08", "k09", "k10", "k11", "k12", "k13", "k14", "k15",
                                       "k16", "k17", "k18", "k19", "k20", "k21", "k22", "k23",
                                       "k24", "k25", "k26", "k27", "k28", "k29", "k30", "k31",
                                       "k32", "k33", "k34", "k35", "k36", "k37", "k38", "k39"};
    for (unsigned i = 0; i < 40; i++)
      add_attr(&e, keys[i], "v", 1);
    break;
  }
  }
  return city_encode(&e, out);
}

/* ---- routing ------------------------------------------------------------------------------ */

static int type_is(const city_event_t *e, const char *t) {
  size_t n = strlen(t);
  return e->type_len == n && memcmp(e->type, t, n) == 0;
}

unsigned city_route(const city_event_t *e) {
  unsigned m = 0;
  if (e->kind == CITY_KIND_SENSOR && (type_is(e, "smoke.alarm") || type_is(e, "gas.alarm")) &&
      e->severity >= 1 && e->severity <= 2)
    m |= 1u << CITY_T_FIRE;
  if (e->kind == CITY_KIND_CAMERA && (type_is(e, "gb28181.alarm.5") || type_is(e, "gb28181.alarm.6")) &&
      e->has_location && e->region_len >= 6 && memcmp(e->region, "330782", 6) == 0)
    m |= 1u << CITY_T_VIDEO;
  if (e->severity == 1)
    m |= 1u << CITY_T_URGENT;
  return m ? m : 1u << CITY_T_EVENTS;
}

void city_routes_yaml(FILE *f, const char *prefix) {
  fprintf(f,
          "routes:\n"
          "  default_topic: %s.events\n"
          "  dead_letter_topic: %s.dlq\n"
          "  rules:\n"
          "    - name: fire\n"
          "      match:\n"
          "        kind: sensor\n"
          "        type: [smoke.alarm, gas.alarm]\n"
          "        severity: {min: 1, max: 2}\n"
          "      topics: [%s.fire]\n"
          "    - name: video-intrusion       # GB/T 28181 tripwire (5) and intrusion (6) in Yiwu\n"
          "      match:\n"
          "        kind: camera\n"
          "        type: [gb28181.alarm.5, gb28181.alarm.6]\n"
          "        region_prefix: [\"330782\"]\n"
          "      topics: [%s.video]\n"
          "    - name: urgent                # fans out next to the rules above\n"
          "      match:\n"
          "        severity: {min: 1, max: 1}\n"
          "      topics: [%s.urgent]\n",
          prefix, prefix, prefix, prefix, prefix);
}

/* ---- reading back ------------------------------------------------------------------------- */

int city_parse_ref(const char *id, size_t len, uint64_t *ref) {
  if (len < CITY_REF_HEX)
    return -1;
  uint64_t v = 0;
  for (size_t i = len - CITY_REF_HEX; i < len; i++) {
    char c = id[i];
    unsigned d;
    if (c >= '0' && c <= '9')
      d = (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      d = (unsigned)(c - 'a' + 10);
    else
      return -1;
    v = v << 4 | d;
  }
  *ref = v;
  return 0;
}

static int rd_varint(const uint8_t **pp, const uint8_t *end, uint64_t *v) {
  const uint8_t *p = *pp;
  uint64_t x = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (p >= end)
      return -1;
    uint8_t b = *p++;
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *pp = p;
      *v = x;
      return 0;
    }
  }
  return -1;
}

int city_peek_ids(const uint8_t *buf, size_t len, const char **sid, size_t *sid_len,
                  const char **eid, size_t *eid_len) {
  const uint8_t *p = buf, *end = buf + len;
  *sid = *eid = "";
  *sid_len = *eid_len = 0;
  while (p < end) {
    uint64_t tag, v;
    if (rd_varint(&p, end, &tag) < 0)
      return -1;
    switch (tag & 7) {
    case 0:
      if (rd_varint(&p, end, &v) < 0)
        return -1;
      break;
    case 1:
      if (end - p < 8)
        return -1;
      p += 8;
      break;
    case 2:
      if (rd_varint(&p, end, &v) < 0 || v > (uint64_t)(end - p))
        return -1;
      if (tag >> 3 == 1)
        *sid = (const char *)p, *sid_len = v;
      else if (tag >> 3 == 3)
        *eid = (const char *)p, *eid_len = v;
      p += v;
      break;
    case 5:
      if (end - p < 4)
        return -1;
      p += 4;
      break;
    default:
      return -1;
    }
  }
  return 0;
}
