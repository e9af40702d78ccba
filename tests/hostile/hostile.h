/* Shared by the hostile-input corpus generator (tests/fuzz/gen_corpus.c), its replay test
 * (tests/integration/it_hostile.c) and the fuzz targets (tests/fuzz/). */
#ifndef INTAKE_TESTS_HOSTILE_H
#define INTAKE_TESTS_HOSTILE_H

/* The NOW marker: an Event's time_ms (field 7) written as the 6-byte varint of this value
 * (tag byte 0x38, then 6 bytes) stands for "the current time". Files in the repo cannot carry
 * a time that stays within validate.max_event_age, so it_hostile.c rewrites each marker to the
 * wall clock (also 6 varint bytes, good until 2109: no length around it changes). The value is
 * 2009-02-13, so a marker that escapes replacement is rejected as bad_time, never accepted.
 * The fuzz targets run their clock at this value, which keeps them deterministic. */
#define INTAKE_NOW_MARKER 1234567890123ull

#endif
