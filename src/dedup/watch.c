/* The dedup window watch: see watch.h. */
#include "dedup/watch.h"

#define SAMPLE_MS 10000u

void intake_dedup_watch(intake_dedup_watch_t *w, const intake_dedup_t *d, uint64_t mono_ms) {
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  unsigned last = (w->next + INTAKE_DEDUP_WATCH_SAMPLES - 1) % INTAKE_DEDUP_WATCH_SAMPLES;
  if (!w->filled || mono_ms - w->at_ms[last] >= SAMPLE_MS) {
    w->commits[w->next] = st.commits;
    w->at_ms[w->next] = mono_ms;
    w->next = (w->next + 1) % INTAKE_DEDUP_WATCH_SAMPLES;
    if (w->filled < INTAKE_DEDUP_WATCH_SAMPLES)
      w->filled++;
    /* oldest sample still held to the newest: up to a minute */
    unsigned newest = (w->next + INTAKE_DEDUP_WATCH_SAMPLES - 1) % INTAKE_DEDUP_WATCH_SAMPLES;
    unsigned oldest = w->filled < INTAKE_DEDUP_WATCH_SAMPLES ? 0 : w->next;
    uint64_t dt = w->at_ms[newest] - w->at_ms[oldest];
    if (dt)
      w->keys_per_s = (w->commits[newest] - w->commits[oldest]) * 1000 / dt;
  }
  uint64_t window = intake_dedup_window_ms(d);
  if (st.effective_window_ms < window) {
    if (!w->limit.interval_ms)
      w->limit.interval_ms = 60000;
    uint64_t suppressed = 0;
    if (!w->shrunk || intake_log_allow(&w->limit, &suppressed)) {
      if (!w->shrunk)
        (void)intake_log_allow(&w->limit, &suppressed); /* the first line opens the minute */
      /* what would hold the whole window at the rate measured */
      uint64_t needed = intake_dedup_event_bytes_for(w->keys_per_s * window / 1000);
      LOG_WARN("dedup window shrunk",
               "effective_window_s=%llu window_s=%llu keys_per_s=%llu memory=%llu "
               "memory_needed=%llu evictions=%llu forced_evictions=%llu hint=\"raise "
               "dedup.memory to memory_needed or more, or shorten dedup.window\"",
               (unsigned long long)(st.effective_window_ms / 1000),
               (unsigned long long)(window / 1000), (unsigned long long)w->keys_per_s,
               (unsigned long long)st.event_bytes, (unsigned long long)needed,
               (unsigned long long)st.evictions, (unsigned long long)st.forced_evictions);
    }
    w->shrunk = 1;
  } else if (w->shrunk) {
    LOG_INFO("dedup window restored", "window_s=%llu keys_per_s=%llu evictions=%llu",
             (unsigned long long)(window / 1000), (unsigned long long)w->keys_per_s,
             (unsigned long long)st.evictions);
    w->shrunk = 0;
  }
}
