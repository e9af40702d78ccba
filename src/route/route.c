/* Routing rules compiled from the config into flat arrays of (pointer, length) strings and
 * topic indices, so that intake_router_route() only compares and never allocates.
 *
 * Fan-out bound. out[] holds at most INTAKE_ROUTE_MAX_TOPICS targets, so create proves that no
 * event can reach more: for each rule i, the topics of i and of every rule that could match
 * the same event (and would be evaluated together with i, given `stop`) must fit. Two rules
 * cannot both match when their kinds, types, severity ranges or region prefixes are disjoint,
 * or when they require different values of one attribute. A config of 30 per-type rules with
 * one topic each is therefore accepted, while 17 catch-all rules are not. */
#include "route/route.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char *ptr; /* owned, NUL-terminated */
  uint32_t len;
} rstr_t;

typedef struct {
  rstr_t key;
  rstr_t value;              /* required value, when !any */
  bool any;                  /* the key must merely be present */
} rattr_t;

typedef struct {
  uint32_t kinds_mask;       /* bit (1 << INTAKE_KIND_*); 0 = any */
  uint32_t severity_min, severity_max;
  rstr_t *types;             /* empty = any */
  uint32_t n_types;
  rstr_t *prefixes;          /* region prefixes; empty = any */
  uint32_t n_prefixes;
  rattr_t *attrs;            /* all must match */
  uint32_t n_attrs;
  uint16_t *topics;          /* indices into topic_names, distinct */
  uint32_t n_topics;
  bool stop;
  intake_encoding_t encoding; /* record value of this rule's records */
} rrule_t;

struct intake_router {
  rrule_t *rules;
  size_t n_rules;
  char **rule_names;         /* n_rules + 1; the last is "default" */
  char **topic_names;        /* distinct, in order of first use; the default topic included */
  size_t n_topics;
  uint16_t default_topic;    /* index into topic_names */
};

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen,
                                                           const char *fmt, ...) {
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static int rstr_set(rstr_t *s, const char *from) {
  size_t n = strlen(from);
  if (n > UINT32_MAX || (s->ptr = malloc(n + 1)) == NULL)
    return -1;
  memcpy(s->ptr, from, n + 1);
  s->len = (uint32_t)n;
  return 0;
}

static int rstr_list(rstr_t **out, uint32_t *n_out, char *const *from, size_t n) {
  *n_out = 0;
  if (n == 0)
    return 0;
  if (n > UINT32_MAX || (*out = calloc(n, sizeof **out)) == NULL)
    return -1;
  for (size_t i = 0; i < n; i++) {
    if (rstr_set(&(*out)[i], from[i]) < 0)
      return -1;
    (*n_out)++;
  }
  return 0;
}

/* Index of topic `name`, added when new. Returns -1 when out of memory or indices. */
static int topic_index(intake_router_t *r, const char *name, size_t *cap) {
  for (size_t i = 0; i < r->n_topics; i++)
    if (strcmp(r->topic_names[i], name) == 0)
      return (int)i;
  if (r->n_topics > UINT16_MAX)
    return -1;
  if (r->n_topics == *cap) {
    size_t c = *cap ? *cap * 2 : 16;
    char **a = realloc(r->topic_names, c * sizeof *a);
    if (a == NULL)
      return -1;
    r->topic_names = a;
    *cap = c;
  }
  if ((r->topic_names[r->n_topics] = strdup(name)) == NULL)
    return -1;
  return (int)r->n_topics++;
}

static bool str_eq(const rstr_t *a, const rstr_t *b) {
  return a->len == b->len && memcmp(a->ptr, b->ptr, a->len) == 0;
}

/* Whether one event could match both rules (false only when provably impossible). */
static bool may_match_together(const rrule_t *a, const rrule_t *b) {
  if (a->kinds_mask && b->kinds_mask && !(a->kinds_mask & b->kinds_mask))
    return false;
  if (a->severity_max < b->severity_min || b->severity_max < a->severity_min)
    return false;
  if (a->n_types && b->n_types) {
    bool common = false;
    for (uint32_t i = 0; i < a->n_types && !common; i++)
      for (uint32_t j = 0; j < b->n_types && !common; j++)
        common = str_eq(&a->types[i], &b->types[j]);
    if (!common)
      return false;
  }
  if (a->n_prefixes && b->n_prefixes) {
    bool common = false; /* some region can start with both: one prefix extends the other */
    for (uint32_t i = 0; i < a->n_prefixes && !common; i++)
      for (uint32_t j = 0; j < b->n_prefixes && !common; j++) {
        uint32_t n = a->prefixes[i].len < b->prefixes[j].len ? a->prefixes[i].len
                                                             : b->prefixes[j].len;
        common = memcmp(a->prefixes[i].ptr, b->prefixes[j].ptr, n) == 0;
      }
    if (!common)
      return false;
  }
  /* An event carries one value per attribute key (the last entry wins). */
  for (uint32_t i = 0; i < a->n_attrs; i++)
    for (uint32_t j = 0; j < b->n_attrs; j++)
      if (!a->attrs[i].any && !b->attrs[j].any && str_eq(&a->attrs[i].key, &b->attrs[j].key) &&
          !str_eq(&a->attrs[i].value, &b->attrs[j].value))
        return false;
  return true;
}

/* See the top of the file. Returns 0, or -1 with a message naming the rule. */
static int check_fan_out(const intake_router_t *r, char *err, size_t errlen) {
  int rc = 0;
  uint8_t *seen = malloc(r->n_topics ? r->n_topics : 1);
  if (seen == NULL) {
    set_err(err, errlen, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < r->n_rules && rc == 0; i++) {
    memset(seen, 0, r->n_topics);
    size_t n = 0;
    for (size_t j = 0; j < r->n_rules; j++) {
      const rrule_t *a = &r->rules[i], *b = &r->rules[j];
      if (j != i && ((j < i && b->stop) || (j > i && a->stop) || !may_match_together(a, b)))
        continue;
      for (uint32_t t = 0; t < b->n_topics; t++)
        if (!seen[b->topics[t]]) {
          seen[b->topics[t]] = 1;
          n++;
        }
    }
    if (n > INTAKE_ROUTE_MAX_TOPICS) {
      set_err(err, errlen,
              "routes.rules[%zu] (%s): an event it matches could be routed to %zu topics "
              "(with the other rules that may match it too); the most is %d",
              i, r->rule_names[i], n, INTAKE_ROUTE_MAX_TOPICS);
      rc = -1;
    }
  }
  free(seen);
  return rc;
}

static int compile_rule(intake_router_t *r, rrule_t *c, const intake_route_rule_t *s,
                        size_t *topic_cap) {
  c->kinds_mask = s->kinds_mask;
  c->severity_min = s->severity_min;
  c->severity_max = s->severity_max;
  c->stop = s->stop;
  c->encoding = s->encoding;
  if (rstr_list(&c->types, &c->n_types, s->types, s->n_types) < 0 ||
      rstr_list(&c->prefixes, &c->n_prefixes, s->region_prefixes, s->n_region_prefixes) < 0)
    return -1;
  if (s->n_attributes > 0) {
    if ((c->attrs = calloc(s->n_attributes, sizeof *c->attrs)) == NULL)
      return -1;
    for (size_t i = 0; i < s->n_attributes; i++) {
      rattr_t *a = &c->attrs[c->n_attrs++];
      a->any = s->attributes[i].value == NULL;
      if (rstr_set(&a->key, s->attributes[i].key) < 0 ||
          (!a->any && rstr_set(&a->value, s->attributes[i].value) < 0))
        return -1;
    }
  }
  if (s->n_topics > 0 && (c->topics = calloc(s->n_topics, sizeof *c->topics)) == NULL)
    return -1;
  for (size_t i = 0; i < s->n_topics; i++) {
    int t = topic_index(r, s->topics[i], topic_cap);
    if (t < 0)
      return -1;
    bool dup = false; /* config rejects duplicates; keep the router correct without relying on it */
    for (uint32_t j = 0; j < c->n_topics; j++)
      dup |= c->topics[j] == (uint16_t)t;
    if (!dup)
      c->topics[c->n_topics++] = (uint16_t)t;
  }
  return 0;
}

intake_router_t *intake_router_create(const intake_config_t *cfg, char *err, size_t errlen) {
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (cfg->n_rules >= UINT16_MAX) { /* rule indices, "default" included, are uint16_t */
    set_err(err, errlen, "routes.rules: %zu rules, the most is %d", cfg->n_rules, UINT16_MAX - 1);
    return NULL;
  }
  intake_router_t *r = calloc(1, sizeof *r);
  if (r == NULL)
    goto nomem;
  size_t topic_cap = 0;
  if ((r->rule_names = calloc(cfg->n_rules + 1, sizeof *r->rule_names)) == NULL)
    goto nomem;
  if (cfg->n_rules > 0 && (r->rules = calloc(cfg->n_rules, sizeof *r->rules)) == NULL)
    goto nomem;
  for (size_t i = 0; i < cfg->n_rules; i++) {
    r->n_rules++;
    if ((r->rule_names[i] = strdup(cfg->rules[i].name)) == NULL ||
        compile_rule(r, &r->rules[i], &cfg->rules[i], &topic_cap) < 0)
      goto nomem;
  }
  if ((r->rule_names[r->n_rules] = strdup("default")) == NULL)
    goto nomem;
  int t = topic_index(r, cfg->default_topic, &topic_cap);
  if (t < 0)
    goto nomem;
  r->default_topic = (uint16_t)t;
  if (check_fan_out(r, err, errlen) < 0) {
    intake_router_destroy(r);
    return NULL;
  }
  return r;
nomem:
  set_err(err, errlen, "out of memory building the router");
  intake_router_destroy(r);
  return NULL;
}

void intake_router_destroy(intake_router_t *r) {
  if (r == NULL)
    return;
  for (size_t i = 0; i < r->n_rules; i++) {
    rrule_t *c = &r->rules[i];
    for (uint32_t j = 0; j < c->n_types; j++)
      free(c->types[j].ptr);
    free(c->types);
    for (uint32_t j = 0; j < c->n_prefixes; j++)
      free(c->prefixes[j].ptr);
    free(c->prefixes);
    for (uint32_t j = 0; j < c->n_attrs; j++) {
      free(c->attrs[j].key.ptr);
      free(c->attrs[j].value.ptr);
    }
    free(c->attrs);
    free(c->topics);
  }
  free(r->rules);
  if (r->rule_names != NULL)
    for (size_t i = 0; i <= r->n_rules; i++)
      free(r->rule_names[i]);
  free(r->rule_names);
  for (size_t i = 0; i < r->n_topics; i++)
    free(r->topic_names[i]);
  free(r->topic_names);
  free(r);
}

/* Cheapest conditions first; the attribute lookup scans the event's bytes. Config guarantees
 * non-empty types and prefixes, so a length match means both pointers are valid. */
static bool rule_matches(const rrule_t *c, const intake_event_t *ev) {
  if (c->kinds_mask != 0 &&
      (ev->source_kind > INTAKE_KIND_MAX || !(c->kinds_mask & (1u << ev->source_kind))))
    return false;
  if (ev->severity < c->severity_min || ev->severity > c->severity_max)
    return false;
  if (c->n_types > 0) {
    uint32_t i = 0;
    while (i < c->n_types && !(c->types[i].len == ev->type.len &&
                               memcmp(c->types[i].ptr, ev->type.ptr, ev->type.len) == 0))
      i++;
    if (i == c->n_types)
      return false;
  }
  if (c->n_prefixes > 0) {
    uint32_t i = 0;
    while (i < c->n_prefixes && !(c->prefixes[i].len <= ev->region.len &&
                                  memcmp(c->prefixes[i].ptr, ev->region.ptr, c->prefixes[i].len) == 0))
      i++;
    if (i == c->n_prefixes)
      return false;
  }
  for (uint32_t i = 0; i < c->n_attrs; i++) {
    const rattr_t *a = &c->attrs[i];
    intake_str_t v;
    if (!intake_event_attribute(ev, a->key.ptr, a->key.len, &v))
      return false;
    if (!a->any && !(v.len == a->value.len && (v.len == 0 || memcmp(v.ptr, a->value.ptr, v.len) == 0)))
      return false;
  }
  return true;
}

size_t intake_router_route(const intake_router_t *r, const intake_event_t *ev,
                           intake_route_target_t out[INTAKE_ROUTE_MAX_TOPICS]) {
  size_t n = 0;
  for (size_t i = 0; i < r->n_rules; i++) {
    const rrule_t *c = &r->rules[i];
    if (!rule_matches(c, ev))
      continue;
    for (uint32_t t = 0; t < c->n_topics; t++) {
      uint16_t topic = c->topics[t];
      size_t k = 0;
      while (k < n && out[k].topic != topic)
        k++;
      /* n < MAX always holds: check_fan_out() proved it at create. */
      if (k == n && n < INTAKE_ROUTE_MAX_TOPICS)
        out[n++] = (intake_route_target_t){.topic = topic, .rule = (uint16_t)i};
    }
    if (c->stop)
      break;
  }
  if (n == 0)
    out[n++] = (intake_route_target_t){.topic = r->default_topic, .rule = (uint16_t)r->n_rules};
  return n;
}

size_t intake_router_n_topics(const intake_router_t *r) {
  return r->n_topics;
}

const char *intake_router_topic_name(const intake_router_t *r, size_t topic) {
  return topic < r->n_topics ? r->topic_names[topic] : NULL;
}

size_t intake_router_n_rules(const intake_router_t *r) {
  return r->n_rules + 1;
}

const char *intake_router_rule_name(const intake_router_t *r, size_t rule) {
  return rule <= r->n_rules ? r->rule_names[rule] : NULL;
}

intake_encoding_t intake_router_rule_encoding(const intake_router_t *r, size_t rule) {
  return rule < r->n_rules ? r->rules[rule].encoding : INTAKE_ENCODING_PROTOBUF;
}
