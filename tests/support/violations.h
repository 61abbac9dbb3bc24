/* tests/support/violations.h - what the threads of a stress test found
 * wrong. Threads and hooks never call cmocka (it is not thread-safe): they
 * record a violation here, which keeps the first message, and the main
 * thread asserts that there were none. */
#ifndef PK_TEST_VIOLATIONS_H
#define PK_TEST_VIOLATIONS_H

#include <stdint.h>

/* Counts one; the first message is kept. Any thread. */
void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Forgets the count and the message, before a test. */
void violations_reset(void);

/* The count; if it is not 0, prints it with the first message and the
 * seed that replays the run. */
unsigned long violations_report(uint64_t seed);

#endif /* PK_TEST_VIOLATIONS_H */
