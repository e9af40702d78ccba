/* Convergence persistence: see converge_persist.h. */
#include "pipeline/converge_persist.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

int intake_converge_persist_path(const char *dedup_path, char *out, size_t len) {
  int k = snprintf(out, len, "%s.converge", dedup_path);
  return k < 0 || (size_t)k >= len ? -ENAMETOOLONG : 0;
}

static void on_skip(void *ctx, const char *name, uint64_t episodes, intake_converge_skip_t why) {
  (void)ctx;
  LOG_WARN(why == INTAKE_CONVERGE_SKIP_GONE
               ? "converge snapshot: rule no longer converged, its saved episodes are dropped "
                 "(no summaries for them)"
               : "converge snapshot: rule's converge key changed, its saved episodes are dropped "
                 "(no summaries for them; its alarms open new episodes)",
           "route=%s episodes=%llu", name, (unsigned long long)episodes);
}

void intake_converge_persist_load(const char *path, const intake_converge_target_t *targets,
                                  size_t n, int64_t now_ms, intake_converge_snapshot_stats_t *st) {
  char err[256], tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path); /* never valid: a write cut short */
  (void)unlink(tmp);
  intake_converge_snapshot_info_t info;
  /* The tables run on the wall clock (the pipeline's convergence clock): no shift. */
  int rc = intake_converge_snapshot_load(path, targets, n, now_ms, now_ms, on_skip, NULL, &info,
                                         err, sizeof err);
  if (rc == -ENOENT) {
    LOG_INFO("converge snapshot: none yet, starting with no open episodes", "path=%s", path);
    return;
  }
  if (rc < 0) {
    st->load_errors++;
    char moved[4096] = "";
    if (rc == -EINVAL) { /* kept for a post-mortem, out of the way */
      snprintf(tmp, sizeof tmp, "%s.corrupt", path);
      if (rename(path, tmp) == 0)
        snprintf(moved, sizeof moved, "%s", tmp);
    }
    LOG_ERROR("converge snapshot unusable: ignored, starting with no open episodes (alarms "
              "still repeating open new episodes; open ones get no summary)",
              "path=%s error=\"%s\" bytes=%llu moved_to=%s", path, err,
              (unsigned long long)info.bytes, moved[0] ? moved : "-");
    return;
  }
  st->loaded_episodes = info.loaded;
  st->loaded_expired = info.expired;
  st->skipped_episodes = info.skipped_gone + info.skipped_changed + info.refused;
  st->last_ms = info.duration_ms;
  LOG_INFO("converge snapshot loaded",
           "path=%s episodes=%llu expired=%llu skipped_gone=%llu skipped_changed=%llu "
           "refused=%llu rules=%llu age_ms=%lld bytes=%llu ms=%llu",
           path, (unsigned long long)info.loaded, (unsigned long long)info.expired,
           (unsigned long long)info.skipped_gone, (unsigned long long)info.skipped_changed,
           (unsigned long long)info.refused, (unsigned long long)info.rules,
           (long long)(now_ms - (int64_t)info.created_ms), (unsigned long long)info.bytes,
           (unsigned long long)info.duration_ms);
}

void intake_converge_persist_save(const char *path, const intake_converge_target_t *targets,
                                  size_t n, int64_t now_ms, intake_converge_snapshot_stats_t *st) {
  intake_converge_snapshot_info_t info;
  int rc = intake_converge_snapshot_write(path, targets, n, now_ms, now_ms, &info);
  if (rc < 0 && info.bytes == 0) {
    st->failed++;
    LOG_ERROR("converge snapshot failed; the previous one stays in place (its episodes are "
              "loaded at the next start)",
              "path=%s error=\"%s\"", path, strerror(-rc));
    return;
  }
  if (rc < 0) /* renamed into place; only the directory's fsync failed */
    LOG_WARN("converge snapshot written, but the directory fsync failed", "path=%s error=\"%s\"",
             path, strerror(-rc));
  st->written++;
  st->last_ms = info.duration_ms;
  st->last_episodes = info.episodes;
  st->last_bytes = info.bytes;
  LOG_INFO("converge snapshot written", "path=%s rules=%llu episodes=%llu bytes=%llu ms=%llu",
           path, (unsigned long long)info.rules, (unsigned long long)info.episodes,
           (unsigned long long)info.bytes, (unsigned long long)info.duration_ms);
}
