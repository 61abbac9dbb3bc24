/* tests/unit/test_slab.c - the slab arena (lib/slab.c): slabs aligned to
 * their size, never lent twice, reused after they come back, empty
 * regions given back to the kernel but for two, consistent across many
 * threads and in a forked child.
 *
 * Whether a region is still mapped is asked of the kernel with msync,
 * which fails with ENOMEM on an address range that is not mapped. The
 * arena is process-wide: each test gives back all it took, so the next
 * starts from at most two empty regions. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prng.h"
#include "slab.h"

#define REGION ((uintptr_t)2 << 20)
#define PER_REGION (REGION / PK__SLAB_SIZE - 1) /* the header takes one */

static int
mapped(void *p)
{
    void *page = (void *)((uintptr_t)p & ~(uintptr_t)4095);
    return msync(page, 4096, MS_ASYNC) == 0 || errno != ENOMEM;
}

static void
test_aligned_distinct_and_counted(void **state)
{
    enum { N = 100 };
    unsigned char *s[N];

    (void)state;
    assert_int_equal(pk__slab_live(), 0);
    for (int i = 0; i < N; i++) {
        s[i] = pk__slab_get();
        assert_non_null(s[i]);
        assert_int_equal((uintptr_t)s[i] % PK__SLAB_SIZE, 0);
        memset(s[i], i, PK__SLAB_SIZE); /* all of it is ours */
    }
    assert_int_equal(pk__slab_live(), N);
    for (int i = 0; i < N; i++)
        for (size_t k = 0; k < PK__SLAB_SIZE; k += 511)
            assert_int_equal(s[i][k], (unsigned char)i); /* no overlap */
    for (int i = 0; i < N; i++)
        pk__slab_put(s[i]);
    assert_int_equal(pk__slab_live(), 0);
    pk__slab_put(NULL); /* nothing */
}

static void
test_given_back_slab_is_reused(void **state)
{
    void *a, *b, *c;

    (void)state;
    a = pk__slab_get();
    b = pk__slab_get();
    assert_non_null(a);
    assert_non_null(b);
    pk__slab_put(a);
    c = pk__slab_get(); /* the region's last given back comes first */
    assert_ptr_equal(c, a);
    pk__slab_put(b);
    pk__slab_put(c);
    assert_int_equal(pk__slab_live(), 0);
}

static void
test_empty_regions_unmapped_but_two(void **state)
{
    const size_t n = 3 * PER_REGION + 5; /* four regions */
    void **s = calloc(n, sizeof *s);
    void *first[4];
    int k = 0, still = 0;

    (void)state;
    assert_non_null(s);
    for (size_t i = 0; i < n; i++) {
        s[i] = pk__slab_get();
        assert_non_null(s[i]);
        uintptr_t r = (uintptr_t)s[i] & ~(REGION - 1);
        if (k == 0 || (uintptr_t)first[k - 1] != r) {
            int seen = 0;
            for (int j = 0; j < k; j++)
                seen |= (uintptr_t)first[j] == r;
            if (!seen && k < 4)
                first[k++] = (void *)r;
        }
    }
    assert_int_equal(k, 4);
    for (size_t i = 0; i < n; i++)
        pk__slab_put(s[i]);
    for (int j = 0; j < 4; j++)
        still += mapped(first[j]);
    assert_int_equal(still, 2); /* the two kept for the next burst */
    assert_int_equal(pk__slab_live(), 0);
    free(s);
}

/* ---- many threads: a slab is never lent to two at once ---------------- */

enum { THREADS = 8, OPS = 20000, HELD = 64 };

static void *
churn(void *arg)
{
    uintptr_t me = (uintptr_t)arg;
    pk_prng rng;
    uintptr_t *held[HELD] = { 0 };
    long bad = 0;

    pk_prng_seed(&rng, 1234 + me);
    for (int op = 0; op < OPS; op++) {
        unsigned i = (unsigned)(pk_prng_next(&rng) % HELD);
        if (held[i]) {
            /* Both ends of the slab still carry our stamp. */
            bad += held[i][0] != me ||
                   held[i][PK__SLAB_SIZE / sizeof(uintptr_t) - 1] != me;
            pk__slab_put(held[i]);
            held[i] = NULL;
        } else {
            held[i] = pk__slab_get();
            if (!held[i])
                return (void *)-1;
            held[i][0] = me;
            held[i][PK__SLAB_SIZE / sizeof(uintptr_t) - 1] = me;
        }
    }
    for (int i = 0; i < HELD; i++)
        pk__slab_put(held[i]);
    return (void *)bad;
}

static void
test_threads_never_share(void **state)
{
    pthread_t t[THREADS];

    (void)state;
    for (uintptr_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn, (void *)(i + 1)),
                         0);
    for (int i = 0; i < THREADS; i++) {
        void *bad;
        assert_int_equal(pthread_join(t[i], &bad), 0);
        assert_ptr_equal(bad, NULL);
    }
    assert_int_equal(pk__slab_live(), 0);
}

/* ---- fork: the child's arena works, whatever the parent was doing ----- */

static void *
churn_forever(void *arg)
{
    atomic_int *stop = arg;
    while (!atomic_load(stop)) {
        void *s = pk__slab_get();
        pk__slab_put(s);
    }
    return NULL;
}

static void
test_child_after_fork(void **state)
{
    atomic_int stop = 0;
    pthread_t t;

    (void)state;
    assert_int_equal(pthread_create(&t, NULL, churn_forever, &stop),
                     0);
    for (int i = 0; i < 20; i++) {
        pid_t pid = fork();
        int status;
        assert_true(pid >= 0);
        if (pid == 0) {
            void *a = pk__slab_get(), *b = pk__slab_get();
            int ok = a && b && a != b;
            pk__slab_put(a);
            pk__slab_put(b);
            _exit(ok ? 0 : 1);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    atomic_store(&stop, 1);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(pk__slab_live(), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aligned_distinct_and_counted),
        cmocka_unit_test(test_given_back_slab_is_reused),
        cmocka_unit_test(test_empty_regions_unmapped_but_two),
        cmocka_unit_test(test_threads_never_share),
        cmocka_unit_test(test_child_after_fork),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
