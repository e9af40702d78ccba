/* The city load generator: N gateway threads, each with one blocking connection to intaked
 * (src/client/gwclient.h), play the city's sources at a target rate or flat out, with the
 * faults gateways really produce mixed in, and record every answer in their ledgers.
 *
 * Each thread is one gateway: it owns the sources s with s % N == its number (so a source's
 * events always travel over one connection, in order), builds batches, keeps up to the
 * window (Welcome.max_in_flight) unacknowledged, and reads the acks. Mixed in:
 *   - retransmissions as if an ack were lost: a recent batch (still in flight, or acked) sent
 *     again with a new Batch.seq; late retransmissions of a batch from 5-30 s ago;
 *   - connection drops with batches in flight, then reconnect and retransmit what was unacked;
 *     a batch answered RETRY is retransmitted as the protocol asks;
 *   - duplicate storms: cameras repeating their alarm every storm_period_ms (each repeat a new
 *     event id and seq), each repeat relayed a second time by a cascaded platform (same id,
 *     same bytes) with probability storm_relay;
 *   - flapping sensors alternating alarm and clear every flap_period_ms (each event new);
 *   - cameras reusing a recent sequence number under a new event id (seq_repeat);
 *   - invalid events inside batches (invalid), and every bad_frame_ms a malformed frame on a
 *     throwaway connection, answered with a ProtocolError. */
#ifndef INTAKE_BENCH_LOAD_H
#define INTAKE_BENCH_LOAD_H

#include <stdint.h>

#include "hist.h"
#include "ledger.h"

typedef struct {
  const char *host;
  uint16_t port;
  const char *tls_ca;         /* set: connect over TLS, verifying intaked against this CA file */
  const char *tls_cert;       /* with tls_ca: present this client certificate (and tls_key) */
  const char *tls_key;
  unsigned connections;       /* gateway threads, 1..255 */
  double rate;                /* events/s over all connections; 0 = flat out */
  double duration_s;          /* generate for this long (0: until `events`) */
  uint64_t events;            /* or until this many distinct events were made */
  unsigned batch;             /* events per batch (capped by Welcome.max_batch_events) */
  unsigned window;            /* batches in flight per connection; 0 = Welcome.max_in_flight */
  double zstd;                /* fraction of batches sent as events_zstd */
  double retransmit;          /* per fresh batch: probability of re-sending a recent one */
  double late_retransmit;     /* per fresh batch: probability of re-sending one 5-30 s old */
  unsigned disconnect_ms;     /* each connection drops every this long (0 = never) */
  unsigned storm_cameras;     /* cameras storming at once, over all connections */
  unsigned storm_period_ms;
  double storm_relay;
  unsigned flap_sensors;
  unsigned flap_period_ms;
  double seq_repeat;          /* fraction of events: a camera reusing a recent seq */
  double invalid;             /* fraction of events: invalid */
  unsigned bad_frame_ms;      /* 0 = no malformed frames */
  double warmup_s;            /* seconds excluded from the steady-state rate and latency
                                 (besides, every connection has one batch acked before the
                                 clock starts, so intaked's producer is warm) */
  uint64_t seed;
  int quiet;
  const int *watch_pid;       /* processes whose CPU use is sampled every second */
  size_t n_watch;             /* up to LOAD_MAX_WATCH */
} load_opts_t;

#define LOAD_MAX_WATCH 4

typedef struct {
  uint64_t batches_sent;      /* all BATCH frames on gateway connections */
  uint64_t batches_fresh, batches_copy, batches_late, batches_resend;
  uint64_t events_sent;       /* event copies in those batches */
  uint64_t events_made;       /* distinct events (ledger entries) */
  uint64_t invalid_made, storm_repeats, storm_relays, flap_events, seq_repeats;
  uint64_t acks, acks_ok, acks_retry, acks_rejected, acks_unmatched, acks_malformed;
  uint64_t answers_accepted, answers_duplicate, answers_rejected; /* per copy */
  uint64_t answers_converged, answers_unknown;
  uint64_t unique_accepted;   /* events answered ACCEPTED for the first time */
  uint64_t unique_records;    /* Kafka records those make (fan-out) */
  uint64_t drops;             /* connections dropped on purpose */
  uint64_t conn_lost;         /* connections lost otherwise (error, reset, stall) */
  uint64_t protocol_errors;   /* ProtocolError frames on gateway connections (unexpected) */
  uint64_t lost_copies;       /* batch copies whose answer was lost or RETRY */
  uint64_t bad_frames, bad_frames_answered, bad_frames_wrong;
  uint64_t late_sends;        /* paced sends more than 10 ms behind schedule */
  uint64_t bytes_sent;
  uint64_t max_lag_us;        /* paced: the furthest a send fell behind schedule */
} load_counters_t;

typedef struct {
  uint64_t accepted;          /* events accepted for the first time, by ack time */
  uint64_t records;
  uint64_t sent;              /* event copies sent */
  hist_t lat;                 /* ack latency of the acks that came in this second */
  float cpu_machine;          /* cores busy in this second: the whole machine, */
  float cpu_self;             /* ... this process, */
  float cpu_watch[LOAD_MAX_WATCH]; /* ... each watched process */
} load_second_t;

typedef struct {
  load_counters_t c;
  hist_t lat;                 /* ack latency, send -> ack, every batch after the warm-up */
  hist_t lat_steady;          /* ... of the acks in the steady-state seconds */
  unsigned steady_from, steady_to; /* those seconds: [from, to) */
  load_second_t *secs;        /* per second since the start, by ack time */
  unsigned n_secs;            /* seconds with data */
  double gen_s;               /* generation phase (until the last fresh batch) */
  double total_s;             /* until the last ack */
  double steady_eps;          /* accepted unique events/s over [warmup, gen_s] */
  double steady_rps;          /* their records/s */
  double sent_eps;            /* event copies sent/s over the same span */
  unsigned window, batch;     /* as negotiated */
  char error[256];            /* a thread's fatal error, "" if none */
} load_result_t;

/* Runs the load against host:port, recording into ledgers[0..connections). Returns 0 (the
 * run finished; res->error may still name a thread that gave up) or -1 when not even one
 * connection could be made. res->secs is malloc'd; free it. */
int load_run(const load_opts_t *o, ledger_t *ledgers, load_result_t *res);

#endif
