/* Routing: rules from the config map an event to one or more Kafka topics.
 *
 * Rules are evaluated in file order; every matching rule adds its topics (fan-out, each topic
 * at most once per event); a matching rule with `stop` ends the evaluation. An event no rule
 * matches goes to the default topic. The router copies what it needs from the config, so the
 * config may be disposed after create; a reload builds a new router. */
#ifndef INTAKE_ROUTE_H
#define INTAKE_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "decode/event.h"

#define INTAKE_ROUTE_MAX_TOPICS 16 /* most topics one event may fan out to */

typedef struct intake_router intake_router_t;

/* One destination: a topic and the rule that chose it ("default" for the default topic). */
typedef struct {
  uint16_t topic;            /* index into intake_router_topic_name() */
  uint16_t rule;             /* index into intake_router_rule_name() */
} intake_route_target_t;

/* Builds a router. Returns NULL with a message in err on failure (e.g. a rule whose topics would
 * fan an event out to more than INTAKE_ROUTE_MAX_TOPICS). The bound is checked per rule over the
 * rules that could match one event together (route.c says how), so many mutually exclusive rules
 * are fine. Expects a config that intake_config_load() accepted. */
intake_router_t *intake_router_create(const intake_config_t *cfg, char *err, size_t errlen);
void intake_router_destroy(intake_router_t *r);

/* Fills out[0..n) with the destinations of `ev` and returns n (>= 1, <= INTAKE_ROUTE_MAX_TOPICS).
 * Allocates nothing. */
size_t intake_router_route(const intake_router_t *r, const intake_event_t *ev,
                           intake_route_target_t out[INTAKE_ROUTE_MAX_TOPICS]);

/* Distinct topic names (rules' and the default), index 0..n_topics-1; stable for the router. */
size_t intake_router_n_topics(const intake_router_t *r);
const char *intake_router_topic_name(const intake_router_t *r, size_t topic);
/* Rule names; the last index is "default". */
size_t intake_router_n_rules(const intake_router_t *r);
const char *intake_router_rule_name(const intake_router_t *r, size_t rule);
/* The record encoding of a rule's records (protobuf for "default"). */
intake_encoding_t intake_router_rule_encoding(const intake_router_t *r, size_t rule);

#endif
