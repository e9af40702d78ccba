/* intake-bench: the city against intaked and a real Kafka broker, and the raw librdkafka
 * baseline to hold it against. bench/run.sh drives it; see `intake-bench help`. */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "city.h"
#include "config/config.h"
#include "decode/event.h"
#include "intake.pb-c.h"
#include "kio.h"
#include "ledger.h"
#include "load.h"
#include "raw.h"
#include "route/route.h"

static void usage(FILE *f) {
  fprintf(f,
"usage: intake-bench COMMAND [options]\n"
"\n"
"  load      play the city through intaked, then verify the topics (options below)\n"
"  raw       the baseline: plain librdkafka producer, same records, flat out\n"
"  routes    print the routes: section of intaked's config that the bench expects\n"
"  topics    create the bench's topics: --brokers B --prefix P [--partitions 4]\n"
"  selftest  check the event encoder against protobuf-c and the routing against intaked's\n"
"  version   print the librdkafka version\n"
"\n"
"load options (defaults in brackets):\n"
"  --host H [127.0.0.1]  --port P (required)   intaked's gateway listener\n"
"  --tls-ca FILE         connect over TLS, verifying intaked's certificate against FILE\n"
"  --tls-cert F --tls-key F   and present this client certificate\n"
"  --brokers B           Kafka bootstrap, for the verifier (required unless --no-verify)\n"
"  --prefix P [bench]    topic prefix: P.events P.fire P.video P.urgent P.dlq\n"
"  --connections N [8]   gateway connections, one thread each\n"
"  --rate R [0]          events/s over all connections; 0 = flat out\n"
"  --duration S [30]     seconds of generation (or --events N: distinct events)\n"
"  --batch N [200]       events per batch      --window N [0 = Welcome.max_in_flight]\n"
"  --zstd F [0.25]       fraction of batches sent compressed (events_zstd)\n"
"  --retransmit F [0.02] per batch: re-send a recent batch as if its ack was lost\n"
"  --late-retransmit F [0.002]  per batch: re-send one from 5-30 s ago\n"
"  --disconnect-ms N [15000]    each connection drops with batches in flight this often\n"
"  --storm-cameras N [2000]     cameras repeating an alarm every --storm-period-ms [1000]\n"
"  --storm-relay F [0.5]        a repeat relayed again by a second platform (same id)\n"
"  --flap-sensors N [1000]      sensors alternating alarm/clear every --flap-period-ms [2000]\n"
"  --seq-repeat F [0.002]       camera event reusing a recent seq under a new id\n"
"  --invalid F [0.002]          invalid event inside a batch (dead-lettered)\n"
"  --bad-frame-ms N [5000]      malformed frame on a throwaway connection this often\n"
"  --warmup S [3]        seconds left out of the steady-state rate\n"
"  --seed N [1]  --label NAME [load]  --csv FILE  --summary FILE  --no-verify\n"
"  --watch NAME=PID      report the CPU time of process PID over the load (up to 4)\n"
"  --baseline-eps X --baseline-rps X   raw baseline rates: print intaked's as a ratio\n"
"raw options: --brokers B --prefix P [bench-raw] --records N [2000000] --partitions N [4]\n"
"             --inflight N [10000]  records without a delivery report at most (0 = no limit)\n"
"             --rate R [0]  events/s, paced in groups of --batch [200] events (0 = flat out)\n"
"             --kafka KEY=VALUE (repeatable: the same kafka.properties intaked gets)\n"
"             --label NAME [raw] --summary FILE\n");
}

static int parse_double(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v) || v < 0)
    return -1;
  *out = v;
  return 0;
}

static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  if (*s == '-')
    return -1;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end)
    return -1;
  *out = v;
  return 0;
}


typedef struct {
  load_opts_t load;
  const char *brokers, *prefix, *label, *csv, *summary;
  int verify;
  double baseline_eps, baseline_rps;
  uint64_t records;
  uint64_t raw_inflight;
  int partitions;
  const char *props[64];
  size_t n_props;
  const char *watch_name[4];  /* --watch NAME=PID: CPU time of other processes over the load */
  int watch_pid[4];
  size_t n_watch;
} args_t;

/* Parses the options after the command; exits with a message on a bad one. */
static void parse_args(int argc, char **argv, args_t *a) {
  for (int i = 2; i < argc; i++) {
    const char *k = argv[i];
    if (!strcmp(k, "--no-verify")) {
      a->verify = 0;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "intake-bench: %s needs a value\n", k);
      exit(2);
    }
    const char *v = argv[++i];
    double d;
    uint64_t u;
    int bad = 0;
#define DBL(name, field) else if (!strcmp(k, name)) bad = parse_double(v, &d) || ((field = d), 0)
#define U64(name, field) else if (!strcmp(k, name)) bad = parse_u64(v, &u) || ((field = u), 0)
    if (!strcmp(k, "--host"))
      a->load.host = v;
    else if (!strcmp(k, "--tls-ca"))
      a->load.tls_ca = v;
    else if (!strcmp(k, "--tls-cert"))
      a->load.tls_cert = v;
    else if (!strcmp(k, "--tls-key"))
      a->load.tls_key = v;
    else if (!strcmp(k, "--port"))
      bad = parse_u64(v, &u) || u == 0 || u > 65535 || ((a->load.port = (uint16_t)u), 0);
    else if (!strcmp(k, "--brokers"))
      a->brokers = v;
    else if (!strcmp(k, "--prefix"))
      a->prefix = v;
    else if (!strcmp(k, "--label"))
      a->label = v;
    else if (!strcmp(k, "--csv"))
      a->csv = v;
    else if (!strcmp(k, "--summary"))
      a->summary = v;
    else if (!strcmp(k, "--watch")) {
      const char *eq = strchr(v, '=');
      if (!eq || a->n_watch == 4 || parse_u64(eq + 1, &u) || u == 0)
        bad = 1;
      else {
        a->watch_name[a->n_watch] = strndup(v, (size_t)(eq - v));
        a->watch_pid[a->n_watch++] = (int)u;
      }
    } else if (!strcmp(k, "--kafka")) {
      if (a->n_props == sizeof a->props / sizeof a->props[0] || !strchr(v, '='))
        bad = 1;
      else
        a->props[a->n_props++] = v;
    } else if (!strcmp(k, "--connections"))
      bad = parse_u64(v, &u) || u < 1 || u > LEDGER_MAX_THREADS ||
            ((a->load.connections = (unsigned)u), 0);
    DBL("--rate", a->load.rate);
    DBL("--duration", a->load.duration_s);
    U64("--events", a->load.events);
    U64("--batch", a->load.batch);
    U64("--window", a->load.window);
    DBL("--zstd", a->load.zstd);
    DBL("--retransmit", a->load.retransmit);
    DBL("--late-retransmit", a->load.late_retransmit);
    U64("--disconnect-ms", a->load.disconnect_ms);
    U64("--storm-cameras", a->load.storm_cameras);
    U64("--storm-period-ms", a->load.storm_period_ms);
    DBL("--storm-relay", a->load.storm_relay);
    U64("--flap-sensors", a->load.flap_sensors);
    U64("--flap-period-ms", a->load.flap_period_ms);
    DBL("--seq-repeat", a->load.seq_repeat);
    DBL("--invalid", a->load.invalid);
    U64("--bad-frame-ms", a->load.bad_frame_ms);
    DBL("--warmup", a->load.warmup_s);
    U64("--seed", a->load.seed);
    DBL("--baseline-eps", a->baseline_eps);
    DBL("--baseline-rps", a->baseline_rps);
    U64("--records", a->records);
    U64("--inflight", a->raw_inflight);
    else if (!strcmp(k, "--partitions"))
      bad = parse_u64(v, &u) || u < 1 || u > 1024 || ((a->partitions = (int)u), 0);
    else {
      fprintf(stderr, "intake-bench: unknown option %s\n", k);
      exit(2);
    }
#undef DBL
#undef U64
    if (bad) {
      fprintf(stderr, "intake-bench: %s: bad value \"%s\"\n", k, v);
      exit(2);
    }
  }
  if (a->load.batch < 1 || a->load.storm_period_ms < 1 || a->load.flap_period_ms < 1) {
    fprintf(stderr, "intake-bench: --batch and the periods must be at least 1\n");
    exit(2);
  }
}

static void topic_names(const char *prefix, char names[CITY_N_TOPICS][256],
                        const char *topics[CITY_N_TOPICS]) {
  for (int t = 0; t < CITY_N_TOPICS; t++) {
    snprintf(names[t], sizeof names[t], "%s.%s", prefix, city_topic_suffix[t]);
    topics[t] = names[t];
  }
}

/* ---- load ------------------------------------------------------------------------------ */

static void write_csv(const char *path, const load_result_t *r, const args_t *a) {
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "intake-bench: %s: %s\n", path, strerror(errno));
    return;
  }
  fprintf(f, "second,accepted_eps,records_ps,sent_eps,acks,p50_ms,p99_ms,max_ms,cpu_other,cpu_bench");
  for (size_t i = 0; i < a->n_watch; i++)
    fprintf(f, ",cpu_%s", a->watch_name[i]);
  fprintf(f, "\n");
  for (unsigned s = 0; s < r->n_secs; s++) {
    const load_second_t *x = &r->secs[s];
    double other = x->cpu_machine - x->cpu_self;
    for (size_t i = 0; i < a->n_watch; i++)
      other -= x->cpu_watch[i];
    fprintf(f, "%u,%llu,%llu,%llu,%llu,%.3f,%.3f,%.3f,%.2f,%.2f", s,
            (unsigned long long)x->accepted, (unsigned long long)x->records,
            (unsigned long long)x->sent, (unsigned long long)x->lat.count,
            hist_ms(&x->lat, 0.50), hist_ms(&x->lat, 0.99), (double)x->lat.max_us / 1000.0,
            other < 0 ? 0 : other, x->cpu_self);
    for (size_t i = 0; i < a->n_watch; i++)
      fprintf(f, ",%.2f", x->cpu_watch[i]);
    fprintf(f, "\n");
  }
  fclose(f);
}

static int cmd_load(args_t *a) {
  load_opts_t *o = &a->load;
  if (!o->port) {
    fprintf(stderr, "intake-bench load: --port is required\n");
    return 2;
  }
  if (a->verify && !a->brokers) {
    fprintf(stderr, "intake-bench load: --brokers is required for the verifier\n");
    return 2;
  }
  if (o->duration_s <= 0 && o->events == 0)
    o->duration_s = 30;
  o->watch_pid = a->watch_pid;
  o->n_watch = a->n_watch;
  char names[CITY_N_TOPICS][256];
  const char *topics[CITY_N_TOPICS];
  topic_names(a->prefix, names, topics);
  char err[512] = "";
  if (a->brokers &&
      kio_create_topics(a->brokers, topics, CITY_N_TOPICS, a->partitions, err, sizeof err) < 0) {
    fprintf(stderr, "intake-bench load: %s\n", err);
    return 1;
  }
  city_init(o->seed);
  ledger_t *ledgers = calloc(o->connections, sizeof *ledgers);
  for (unsigned i = 0; i < o->connections; i++)
    ledger_init(&ledgers[i], i);

  printf("== intake-bench load [%s] ==\n", a->label);
  char rate[64];
  if (o->rate > 0)
    snprintf(rate, sizeof rate, "%.0f events/s", o->rate);
  else
    snprintf(rate, sizeof rate, "flat out");
  printf("target: %s:%u, %u connections, rate %s, %s %.0f%s\n", o->host, (unsigned)o->port,
         o->connections, rate, o->duration_s > 0 ? "duration" : "events",
         o->duration_s > 0 ? o->duration_s : (double)o->events, o->duration_s > 0 ? " s" : "");
  printf("mix: zstd %.2f, retransmit %.3f, late retransmit %.3f, drop every %u ms, %u storming "
         "cameras every %u ms (relay %.2f), %u flapping sensors every %u ms, seq repeats %.3f, "
         "invalid %.3f, malformed frame every %u ms\n",
         o->zstd, o->retransmit, o->late_retransmit, o->disconnect_ms, o->storm_cameras,
         o->storm_period_ms, o->storm_relay, o->flap_sensors, o->flap_period_ms, o->seq_repeat,
         o->invalid, o->bad_frame_ms);
  fflush(stdout);

  load_result_t r;
  double watch0[4], watch1[4];
  for (size_t i = 0; i < a->n_watch; i++)
    watch0[i] = kio_proc_cpu(a->watch_pid[i]);
  double machine0 = kio_machine_cpu(), wall0 = (double)kio_mono_ns() / 1e9;
  double cpu0 = kio_self_cpu();
  if (load_run(o, ledgers, &r) < 0) {
    fprintf(stderr, "intake-bench load: %s\n", r.error[0] ? r.error : "setup failed");
    return 1;
  }
  double cpu = kio_self_cpu() - cpu0;
  double machine = kio_machine_cpu() - machine0, wall = (double)kio_mono_ns() / 1e9 - wall0;
  for (size_t i = 0; i < a->n_watch; i++)
    watch1[i] = kio_proc_cpu(a->watch_pid[i]) - watch0[i];
  const load_counters_t *c = &r.c;
#define U(x) (unsigned long long)(x)
  printf("negotiated: window %u batches, %u events per batch\n", r.window, r.batch);
  printf("result: accepted %.0f unique events/s (%.0f records/s) steady over [%.0f s, %.1f s]; "
         "sent %.0f events/s\n",
         r.steady_eps, r.steady_rps, o->warmup_s, r.gen_s, r.sent_eps);
  const hist_t *h = &r.lat_steady;
  printf("latency send->ack (ms), steady [%u s, %u s): p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  "
         "max %.2f  (%llu acks)\n",
         r.steady_from, r.steady_to, hist_ms(h, 0.5), hist_ms(h, 0.9), hist_ms(h, 0.99),
         hist_ms(h, 0.999), (double)h->max_us / 1000.0, U(h->count));
  printf("latency send->ack (ms), whole run: p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  (%llu "
         "acks)\n",
         hist_ms(&r.lat, 0.5), hist_ms(&r.lat, 0.99), hist_ms(&r.lat, 0.999),
         (double)r.lat.max_us / 1000.0, U(r.lat.count));
  printf("counters: batches %llu (fresh %llu, copies as if the ack was lost %llu, late %llu, "
         "retransmitted after a drop/RETRY %llu); events sent %llu; distinct events %llu "
         "(invalid %llu, storm repeats %llu, relayed copies %llu, flaps %llu, seq repeats %llu)\n",
         U(c->batches_sent), U(c->batches_fresh), U(c->batches_copy), U(c->batches_late),
         U(c->batches_resend), U(c->events_sent), U(c->events_made), U(c->invalid_made),
         U(c->storm_repeats), U(c->storm_relays), U(c->flap_events), U(c->seq_repeats));
  printf("answers: acks %llu (ok %llu, retry %llu, batch rejected %llu, unmatched %llu, "
         "malformed %llu); per event: accepted %llu, duplicate %llu, rejected %llu, converged "
         "%llu, unknown %llu; unique accepted %llu (%llu records)\n",
         U(c->acks), U(c->acks_ok), U(c->acks_retry), U(c->acks_rejected), U(c->acks_unmatched),
         U(c->acks_malformed), U(c->answers_accepted), U(c->answers_duplicate),
         U(c->answers_rejected), U(c->answers_converged), U(c->answers_unknown),
         U(c->unique_accepted), U(c->unique_records));
  printf("connections: dropped on purpose %llu, lost %llu, unexpected protocol errors %llu; "
         "copies with a lost answer %llu; malformed frames %llu (answered right %llu, wrong "
         "%llu)\n",
         U(c->drops), U(c->conn_lost), U(c->protocol_errors), U(c->lost_copies),
         U(c->bad_frames), U(c->bad_frames_answered), U(c->bad_frames_wrong));
  if (o->rate > 0)
    printf("pacing: %llu sends more than 10 ms late, worst %.1f ms\n", U(c->late_sends),
           (double)c->max_lag_us / 1000.0);
  printf("time: generation %.1f s, last ack at %.1f s; generator CPU %.1f s (%.0f%% of one "
         "core)\n",
         r.gen_s, r.total_s, cpu, 100.0 * cpu / (r.total_s > 0 ? r.total_s : 1));
  double others = machine - cpu;
  printf("cpu over the run (%.1f s wall, %ld cores): intake-bench %.1f s", wall,
         sysconf(_SC_NPROCESSORS_ONLN), cpu);
  for (size_t i = 0; i < a->n_watch; i++) {
    printf(", %s %.1f s", a->watch_name[i], watch1[i]);
    others -= watch1[i];
  }
  printf(", everything else %.1f s (machine busy %.1f s)\n", others < 0 ? 0 : others, machine);
  double ratio_e = a->baseline_eps > 0 ? r.steady_eps / a->baseline_eps : 0;
  double ratio_r = a->baseline_rps > 0 ? r.steady_rps / a->baseline_rps : 0;
  if (a->baseline_eps > 0)
    printf("vs raw librdkafka: %.0f / %.0f events/s = %.3f; records %.0f / %.0f = %.3f\n",
           r.steady_eps, a->baseline_eps, ratio_e, r.steady_rps, a->baseline_rps, ratio_r);
  if (r.error[0])
    printf("error: %s\n", r.error);
  fflush(stdout);
  if (a->csv)
    write_csv(a->csv, &r, a);

  verify_result_t v;
  memset(&v, 0, sizeof v);
  int verified = 0;
  if (a->verify) {
    if (verify_run(a->brokers, topics, ledgers, o->connections, &v, err, sizeof err) < 0) {
      printf("verify: ERROR: %s\n", err);
    } else {
      verify_print(&v, stdout);
      verified = 1;
    }
  }
  if (a->summary) {
    FILE *f = fopen(a->summary, "a");
    if (f) {
      const char *L = a->label;
      fprintf(f, "%s_accepted_eps=%.0f\n%s_records_ps=%.0f\n%s_sent_eps=%.0f\n", L, r.steady_eps,
              L, r.steady_rps, L, r.sent_eps);
      fprintf(f, "%s_p50_ms=%.2f\n%s_p90_ms=%.2f\n%s_p99_ms=%.2f\n%s_p999_ms=%.2f\n%s_max_ms=%.2f\n",
              L, hist_ms(h, 0.5), L, hist_ms(h, 0.9), L, hist_ms(h, 0.99), L, hist_ms(h, 0.999),
              L, (double)h->max_us / 1000.0);
      fprintf(f, "%s_all_p99_ms=%.2f\n%s_all_p999_ms=%.2f\n%s_all_max_ms=%.2f\n", L,
              hist_ms(&r.lat, 0.99), L, hist_ms(&r.lat, 0.999), L, (double)r.lat.max_us / 1000.0);
      fprintf(f, "%s_steady_from=%u\n%s_steady_to=%u\n", L, r.steady_from, L, r.steady_to);
      fprintf(f, "%s_window=%u\n%s_batch=%u\n%s_gen_s=%.1f\n%s_total_s=%.1f\n%s_cpu_s=%.1f\n", L,
              r.window, L, r.batch, L, r.gen_s, L, r.total_s, L, cpu);
      fprintf(f, "%s_wall_s=%.1f\n%s_cpu_machine=%.1f\n%s_cpu_other=%.1f\n", L, wall, L, machine,
              L, others < 0 ? 0 : others);
      for (size_t i = 0; i < a->n_watch; i++)
        fprintf(f, "%s_cpu_%s=%.1f\n", L, a->watch_name[i], watch1[i]);
      fprintf(f, "%s_rate=%.0f\n%s_connections=%u\n", L, o->rate, L, o->connections);
      const uint64_t *cv = (const uint64_t *)c;
      static const char *const cn[] = {
          "batches_sent", "batches_fresh", "batches_copy", "batches_late", "batches_resend",
          "events_sent", "events_made", "invalid_made", "storm_repeats", "storm_relays",
          "flap_events", "seq_repeats", "acks", "acks_ok", "acks_retry", "acks_rejected",
          "acks_unmatched", "acks_malformed", "answers_accepted", "answers_duplicate",
          "answers_rejected", "answers_converged", "answers_unknown", "unique_accepted", "unique_records", "drops", "conn_lost",
          "protocol_errors", "lost_copies", "bad_frames", "bad_frames_answered",
          "bad_frames_wrong", "late_sends", "bytes_sent", "max_lag_us"};
      _Static_assert(sizeof cn / sizeof cn[0] == sizeof(load_counters_t) / sizeof(uint64_t),
                     "every counter has a name");
      for (size_t i = 0; i < sizeof cn / sizeof cn[0]; i++)
        fprintf(f, "%s_%s=%llu\n", L, cn[i], U(cv[i]));
      if (a->baseline_eps > 0)
        fprintf(f, "%s_ratio_eps=%.3f\n%s_ratio_rps=%.3f\n", L, ratio_e, L, ratio_r);
      fprintf(f, "%s_verify=%s\n", L, !a->verify ? "skipped" : !verified ? "ERROR" : v.pass ? "PASS" : "FAIL");
      if (verified) {
        fprintf(f,
                "%s_v_entries=%llu\n%s_v_accepted=%llu\n%s_v_expected_records=%llu\n"
                "%s_v_exactly_once=%llu\n%s_v_missing=%llu\n%s_v_duplicated=%llu\n"
                "%s_v_extra=%llu\n%s_v_foreign=%llu\n%s_v_order_checked=%llu\n"
                "%s_v_order_violations=%llu\n%s_v_delivered_by_lost=%llu\n"
                "%s_v_dropped_repeats=%llu\n%s_v_false_duplicates=%llu\n"
                "%s_v_accepted_twice=%llu\n%s_v_bad_value=%llu\n%s_v_bad_key=%llu\n"
                "%s_v_bad_header=%llu\n%s_v_dlq_min=%llu\n%s_v_dlq_max=%llu\n"
                "%s_v_dlq_found=%llu\n%s_v_dlq_missing=%llu\n%s_v_dlq_extra=%llu\n"
                "%s_v_unresolved=%llu\n%s_v_ambiguous_found=%llu\n%s_v_read_s=%.1f\n",
                L, U(v.entries), L, U(v.accepted), L, U(v.expected_records), L,
                U(v.exactly_once), L, U(v.missing), L, U(v.duplicated), L, U(v.extra), L,
                U(v.foreign), L, U(v.order_checked), L, U(v.order_violations), L,
                U(v.delivered_by_lost), L, U(v.dropped_repeats), L, U(v.false_duplicates), L,
                U(v.accepted_twice), L, U(v.bad_value), L, U(v.bad_key), L, U(v.bad_header), L,
                U(v.dlq_expected_min), L, U(v.dlq_expected_max), L, U(v.dlq_found), L,
                U(v.dlq_missing), L, U(v.dlq_extra), L, U(v.unresolved), L,
                U(v.ambiguous_found), L, v.read_s);
      }
      fclose(f);
    }
  }
#undef U
  for (unsigned i = 0; i < o->connections; i++)
    ledger_dispose(&ledgers[i]);
  free(ledgers);
  free(r.secs);
  if (r.error[0])
    return 1;
  return a->verify && (!verified || !v.pass) ? 3 : 0;
}

/* ---- raw ------------------------------------------------------------------------------- */

static int cmd_raw(args_t *a) {
  if (!a->brokers) {
    fprintf(stderr, "intake-bench raw: --brokers is required\n");
    return 2;
  }
  city_init(a->load.seed);
  raw_opts_t o = {a->brokers, a->prefix, a->partitions, a->records, a->raw_inflight,
                  a->load.rate, (unsigned)a->load.batch, a->props, a->n_props, a->load.seed};
  raw_result_t r;
  char err[512];
  printf("== intake-bench raw [%s] ==\n", a->label);
  printf("plain librdkafka %s producer, %llu records to %s.*, at most %llu in flight, "
         "properties:", rd_kafka_version_str(), (unsigned long long)a->records, a->prefix,
         (unsigned long long)a->raw_inflight);
  for (size_t i = 0; i < a->n_props; i++)
    printf(" %s", a->props[i]);
  printf("\n");
  fflush(stdout);
  if (raw_run(&o, &r, err, sizeof err) < 0) {
    fprintf(stderr, "intake-bench raw: %s\n", err);
    return 1;
  }
  printf("raw: %llu records (%llu events) in %.2f s: %.0f records/s, %.0f events/s; delivered "
         "%llu, failed %llu; last produce call at %.2f s; CPU %.1f s\n",
         (unsigned long long)r.records, (unsigned long long)r.events, r.seconds, r.rps, r.eps,
         (unsigned long long)r.delivered, (unsigned long long)r.failed, r.produce_s, r.cpu_s);
  printf("raw: groups of %llu events (a gateway batch's worth), first produce -> last delivery "
         "report (ms): p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  (%llu groups)\n",
         (unsigned long long)a->load.batch, hist_ms(&r.lat, 0.5), hist_ms(&r.lat, 0.9),
         hist_ms(&r.lat, 0.99), hist_ms(&r.lat, 0.999), (double)r.lat.max_us / 1000.0,
         (unsigned long long)r.lat.count);
  if (a->summary) {
    FILE *f = fopen(a->summary, "a");
    if (f) {
      const char *L = a->label;
      fprintf(f, "%s_p50_ms=%.2f\n%s_p90_ms=%.2f\n%s_p99_ms=%.2f\n%s_p999_ms=%.2f\n%s_max_ms=%.2f\n",
              L, hist_ms(&r.lat, 0.5), L, hist_ms(&r.lat, 0.9), L, hist_ms(&r.lat, 0.99), L,
              hist_ms(&r.lat, 0.999), L, (double)r.lat.max_us / 1000.0);
      fprintf(f, "%s_rate=%.0f\n", L, a->load.rate);
      fprintf(f,
              "%s_records=%llu\n%s_events=%llu\n%s_seconds=%.2f\n%s_rps=%.0f\n%s_eps=%.0f\n"
              "%s_failed=%llu\n%s_cpu_s=%.1f\n%s_produce_s=%.2f\n",
              L, (unsigned long long)r.records, L, (unsigned long long)r.events, L, r.seconds, L,
              r.rps, L, r.eps, L, (unsigned long long)r.failed, L, r.cpu_s, L, r.produce_s);
      fclose(f);
    }
  }
  return r.failed ? 1 : 0;
}

/* ---- selftest -------------------------------------------------------------------------- */

static int selftest_fail(const char *what, uint64_t i) {
  fprintf(stderr, "selftest: FAIL: %s (event %llu)\n", what, (unsigned long long)i);
  return 1;
}

/* The hand encoder must give exactly protobuf-c's bytes; the mini-router in city.c must agree
 * with intaked's router on the config city_routes_yaml() writes; ids must read back. */
static int cmd_selftest(void) {
  city_init(1);
  city_rng_t r = {12345};
  uint8_t buf[CITY_EVENT_MAX], again[CITY_EVENT_MAX * 2];
  char *yaml = NULL;
  size_t yaml_len = 0;
  FILE *mf = open_memstream(&yaml, &yaml_len);
  city_routes_yaml(mf, "st");
  fclose(mf);
  intake_config_t cfg;
  char err[512];
  if (intake_config_load_string(&cfg, "routes", yaml, yaml_len, err, sizeof err) < 0) {
    fprintf(stderr, "selftest: config: %s\n", err);
    return 1;
  }
  intake_router_t *router = intake_router_create(&cfg, err, sizeof err);
  if (!router) {
    fprintf(stderr, "selftest: router: %s\n", err);
    return 1;
  }
  int64_t now = kio_wall_ms();
  uint64_t sizes = 0, n_events = 200000, topic_hits[CITY_N_TOPICS] = {0};
  for (uint64_t i = 0; i < n_events; i++) {
    city_event_t e, rep;
    uint32_t src = city_below(&r, CITY_SOURCES);
    uint64_t ref = (uint64_t)(i % 200) << LEDGER_THREAD_SHIFT | i;
    city_event(&e, &r, src, ref, city_is_camera(src) ? i + 1 : 0, now, i % 7 == 0 ? (int)(i & 8) / 8 : -1);
    city_event_t *ev = &e;
    if (i % 5 == 0) {
      city_event_repeat(&rep, &e, &r, ref, city_is_camera(src) ? i + 2 : 0, now);
      ev = &rep;
    }
    size_t len = city_encode(ev, buf);
    sizes += len;
    Intake__V1__Event *pb = intake__v1__event__unpack(NULL, len, buf);
    if (!pb)
      return selftest_fail("protobuf-c cannot decode the encoding", i);
    size_t plen = intake__v1__event__get_packed_size(pb);
    if (plen != len || intake__v1__event__pack(pb, again) != len || memcmp(again, buf, len))
      return selftest_fail("protobuf-c re-encodes differently", i);
    if (strlen(pb->source_id) != ev->source_id_len || pb->seq != ev->seq ||
        (int)pb->clear != ev->clear || pb->n_attributes != ev->n_attr)
      return selftest_fail("decoded fields differ", i);
    intake__v1__event__free_unpacked(pb, NULL);
    const char *sid, *eid;
    size_t sl, el;
    uint64_t back;
    if (city_peek_ids(buf, len, &sid, &sl, &eid, &el) < 0 || city_parse_ref(eid, el, &back) < 0 ||
        back != (ref & ((1ull << (4 * CITY_REF_HEX)) - 1)))
      return selftest_fail("ref does not read back from the event id", i);
    intake_event_t pe;
    intake_route_target_t t[INTAKE_ROUTE_MAX_TOPICS];
    if (intake_event_parse(buf, len, &pe) < 0)
      return selftest_fail("intaked's parser rejects the encoding", i);
    size_t nt = intake_router_route(router, &pe, t);
    unsigned mask = 0;
    for (size_t k = 0; k < nt; k++) {
      const char *name = intake_router_topic_name(router, t[k].topic);
      for (int x = 0; x < CITY_N_TOPICS; x++)
        if (!strcmp(name + 3, city_topic_suffix[x]))
          mask |= 1u << x;
    }
    unsigned mine = city_route(ev);
    if (mask != mine)
      return selftest_fail("city_route() disagrees with intaked's router", i);
    for (int x = 0; x < CITY_N_TOPICS; x++)
      topic_hits[x] += (mine >> x) & 1;
  }
  for (int bad = 0; bad < CITY_BAD_COUNT; bad++) {
    size_t len = city_invalid(bad, &r, 5, 77, now, buf);
    intake_event_t pe;
    int parsed = intake_event_parse(buf, len, &pe) == 0;
    if ((bad == CITY_BAD_MALFORMED) == parsed)
      return selftest_fail("malformed/parseable mismatch for an invalid kind", (uint64_t)bad);
  }
  printf("selftest: %llu events, mean %.0f bytes; topics: events %llu fire %llu video %llu "
         "urgent %llu: PASS\n",
         (unsigned long long)n_events, (double)sizes / (double)n_events,
         (unsigned long long)topic_hits[0], (unsigned long long)topic_hits[1],
         (unsigned long long)topic_hits[2], (unsigned long long)topic_hits[3]);
  intake_router_destroy(router);
  intake_config_dispose(&cfg);
  free(yaml);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  args_t a;
  memset(&a, 0, sizeof a);
  a.load = (load_opts_t){
      .host = "127.0.0.1",
      .connections = 8,
      .batch = 200,
      .zstd = 0.25,
      .retransmit = 0.02,
      .late_retransmit = 0.002,
      .disconnect_ms = 15000,
      .storm_cameras = 2000,
      .storm_period_ms = 1000,
      .storm_relay = 0.5,
      .flap_sensors = 1000,
      .flap_period_ms = 2000,
      .seq_repeat = 0.002,
      .invalid = 0.002,
      .bad_frame_ms = 5000,
      .warmup_s = 3,
      .seed = 1,
  };
  a.verify = 1;
  a.partitions = 4;
  a.records = 2000000;
  a.raw_inflight = 10000;
  const char *cmd = argv[1];
  a.prefix = !strcmp(cmd, "raw") ? "bench-raw" : "bench";
  a.label = !strcmp(cmd, "raw") ? "raw" : "load";
  if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(cmd, "version")) {
    printf("librdkafka %s\n", rd_kafka_version_str());
    return 0;
  }
  if (!strcmp(cmd, "selftest"))
    return cmd_selftest();
  parse_args(argc, argv, &a);
  if (!strcmp(cmd, "load"))
    return cmd_load(&a);
  if (!strcmp(cmd, "raw"))
    return cmd_raw(&a);
  if (!strcmp(cmd, "routes")) {
    city_routes_yaml(stdout, a.prefix);
    return 0;
  }
  if (!strcmp(cmd, "topics")) {
    char names[CITY_N_TOPICS][256], err[512];
    const char *topics[CITY_N_TOPICS];
    topic_names(a.prefix, names, topics);
    if (!a.brokers || kio_create_topics(a.brokers, topics, CITY_N_TOPICS, a.partitions, err,
                                        sizeof err) < 0) {
      fprintf(stderr, "intake-bench topics: %s\n", a.brokers ? err : "--brokers is required");
      return 1;
    }
    return 0;
  }
  usage(stderr);
  return 2;
}
