/* tests/unit/test_arena.c - pk_arena: bump allocation and alignment, a
 * new block when one is full, a block of its own for a large allocation,
 * reset keeping the first block, cleanups (last added first, at reset and
 * destroy), child arenas destroyed with their parent and at its reset,
 * every allocation failing in turn, bad input to every call; the inline
 * bump path and the function mixed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include <poolkit/mempool.h>

#include "alloc.h"

static long live0;

static int
setup(void **state)
{
    (void)state;
    live0 = pk__alloc_live();
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    assert_int_equal(pk__alloc_live(), live0);
    return 0;
}

static pk_arena_stats
stats(pk_arena *a)
{
    pk_arena_stats st;

    assert_int_equal(pk_arena_stats_get(a, &st), 0);
    return st;
}

static void
test_allocations_are_aligned_and_disjoint(void **state)
{
    pk_arena *a;
    char *prev = NULL, *p;
    size_t aligns[] = { 0, 1, 8, 64, 4096 };

    (void)state;
    assert_int_equal(pk_arena_create(&a, NULL, 0), 0);
    for (int i = 0; i < 2000; i++) {
        size_t al = aligns[i % 5], want = al ? al : 16;
        size_t size = (size_t)(i % 37) + 1;
        assert_int_equal(pk_arena_alloc(a, size, al, (void **)&p), 0);
        assert_int_equal((uintptr_t)p % want, 0);
        memset(p, 0x5a, size);
        if (prev)
            assert_true(p != prev);
        prev = p;
    }
    assert_true(stats(a).blocks > 1); /* 4096-aligned ones fill blocks */
    assert_int_equal(pk_arena_alloc(a, 0, 0, (void **)&p), 0); /* as 1 */
    pk_arena_destroy(a);
}

/* The inline bump (the macro) and the function (pk_arena_alloc) share the
 * arena: aligned, disjoint, each taking its size rounded up to 16 (used
 * counts that and the alignment gaps: from the first byte to the last
 * one's end, in one block while it has room). */
static void
test_inline_bump_and_function_agree(void **state)
{
    pk_arena *a;
    char *p[300];
    void *bad = (void *)1;

    (void)state;
    assert_int_equal(pk_arena_create(&a, NULL, 65536), 0);
    for (int i = 0; i < 300; i++) {
        size_t size = (size_t)(i % 13) * 7 + 1, al = (size_t)1 << (i % 7);
        int rc = i % 2 ? pk_arena_alloc(a, size, al, (void **)&p[i])
                       : (pk_arena_alloc)(a, size, al, (void **)&p[i]);
        assert_int_equal(rc, 0);
        assert_int_equal((uintptr_t)p[i] % al, 0);
        memset(p[i], i & 0xff, size);
        assert_int_equal((uintptr_t)p[i] % 16, 0);
        if (i)
            assert_true(p[i] >= p[i - 1] + (size_t)((i - 1) % 13) * 7 + 1);
    }
    assert_int_equal(stats(a).used,
                     (size_t)(p[299] + ((299 % 13) * 7 + 1 + 15) / 16 * 16 -
                              p[0]));
    assert_int_equal(stats(a).blocks, 1);
    /* Bad arguments reach the function, which says so. */
    assert_int_equal(pk_arena_alloc(a, 8, 24, &bad), PK_EINVAL);
    assert_null(bad);
    assert_int_equal(pk_arena_alloc(a, 8, 8192, &bad), PK_EINVAL);
    pk_arena_destroy(a);
    assert_int_equal(pk_arena_alloc(NULL, 8, 0, &bad), PK_EINVAL);
}

static void
test_full_block_grows_and_large_gets_its_own(void **state)
{
    pk_arena *a;
    pk_arena_stats st;
    void *p, *big;

    (void)state;
    assert_int_equal(pk_arena_create(&a, NULL, 1024), 0);
    for (int i = 0; i < 30; i++) /* 30 * 112 bytes: four blocks */
        assert_int_equal(pk_arena_alloc(a, 100, 0, &p), 0);
    st = stats(a);
    assert_true(st.blocks >= 3 && st.blocks <= 4);
    assert_int_equal(st.large, 0);
    assert_int_equal(st.used, 30 * 112); /* 100 rounded up to 16 */

    assert_int_equal(pk_arena_alloc(a, 5000, 64, &big), 0);
    memset(big, 1, 5000);
    assert_int_equal((uintptr_t)big % 64, 0);
    st = stats(a);
    assert_int_equal(st.large, 1);
    assert_true(st.reserved >= 5000 + st.blocks * 0);
    /* The current block kept its room: a small one fits in it. */
    assert_int_equal(pk_arena_alloc(a, 8, 0, &p), 0);
    assert_int_equal(stats(a).blocks, st.blocks);
    pk_arena_destroy(a);
}

static int order[8];
static int norder;

static void
note(void *arg)
{
    order[norder++] = (int)(intptr_t)arg;
}

static int noops;

static void
noop(void *arg)
{
    (void)arg;
    noops++;
}

static void
test_reset_keeps_the_first_block_and_runs_cleanups(void **state)
{
    pk_arena *a;
    pk_arena_stats st;
    void *first, *p;

    (void)state;
    norder = 0;
    assert_int_equal(pk_arena_create(&a, NULL, 4096), 0);
    assert_int_equal(pk_arena_alloc(a, 10, 0, &first), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(pk_arena_alloc(a, 200, 0, &p), 0);
    assert_int_equal(pk_arena_alloc(a, 100000, 0, &p), 0);
    assert_int_equal(pk_arena_cleanup_add(a, note, (void *)1), 0);
    assert_int_equal(pk_arena_cleanup_add(a, note, (void *)2), 0);
    assert_int_equal(pk_arena_cleanup_add(a, note, (void *)3), 0);
    assert_int_equal(pk_arena_reset(a), 0);
    assert_int_equal(norder, 3);
    assert_int_equal(order[0], 3); /* last added first */
    assert_int_equal(order[2], 1);
    st = stats(a);
    assert_int_equal(st.blocks, 1);
    assert_int_equal(st.large, 0);
    assert_int_equal(st.used, 0);
    assert_int_equal(st.reserved, 4096);
    assert_int_equal(st.resets, 1);
    /* The same memory again. */
    assert_int_equal(pk_arena_alloc(a, 10, 0, &p), 0);
    assert_ptr_equal(p, first);
    /* A cleanup added after the reset runs at destroy. */
    assert_int_equal(pk_arena_cleanup_add(a, note, (void *)4), 0);
    pk_arena_destroy(a);
    assert_int_equal(norder, 4);
    assert_int_equal(order[3], 4);
}

static void
test_children_go_with_their_parent(void **state)
{
    pk_arena *root, *c1, *c2, *g, *c3;
    void *p;

    (void)state;
    norder = 0;
    assert_int_equal(pk_arena_create(&root, NULL, 0), 0);
    assert_int_equal(pk_arena_create(&c1, root, 1024), 0);
    assert_int_equal(pk_arena_create(&c2, root, 0), 0);
    assert_int_equal(pk_arena_create(&g, c1, 0), 0);
    assert_int_equal(stats(root).children, 2);
    assert_int_equal(pk_arena_cleanup_add(root, note, (void *)1), 0);
    assert_int_equal(pk_arena_cleanup_add(g, note, (void *)2), 0);
    assert_int_equal(pk_arena_alloc(g, 5000, 0, &p), 0);
    /* A child destroyed first leaves its parent. */
    pk_arena_destroy(c2);
    assert_int_equal(stats(root).children, 1);
    /* Reset destroys the children (and the grandchild) before the
     * parent's own cleanups. */
    assert_int_equal(pk_arena_reset(root), 0);
    assert_int_equal(norder, 2);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 1);
    assert_int_equal(stats(root).children, 0);
    assert_int_equal(pk_arena_create(&c3, root, 0), 0);
    assert_int_equal(pk_arena_alloc(c3, 100, 0, &p), 0);
    pk_arena_destroy(root); /* c3 with it */
}

static void
test_every_allocation_failing_in_turn(void **state)
{
    unsigned long k;

    (void)state;
    for (k = 1; k < 200; k++) {
        pk_arena *a = NULL, *c = NULL;
        void *p;
        int rc;
        unsigned long ran;

        pk__alloc_fail_at(k);
        rc = pk_arena_create(&a, NULL, 512);
        if (rc == 0) {
            rc = pk_arena_create(&c, a, 512);
            assert_true(rc == 0 || rc == PK_ENOMEM);
            for (int i = 0; i < 20; i++) {
                rc = pk_arena_alloc(a, i % 3 ? 100 : 2000, 0, &p);
                assert_true(rc == 0 || rc == PK_ENOMEM);
                assert_true(rc == 0 ? p != NULL : p == NULL);
                rc = pk_arena_cleanup_add(a, noop, NULL);
                assert_true(rc == 0 || rc == PK_ENOMEM);
            }
            pk_arena_reset(a);
            pk_arena_destroy(a);
        } else {
            assert_int_equal(rc, PK_ENOMEM);
            assert_null(a);
        }
        ran = pk__alloc_fail_at(0);
        assert_int_equal(pk__alloc_live(), live0);
        if (ran < k)
            break;
    }
    assert_true(k > 5 && k < 200);
}

static void
test_bad_input_to_every_call(void **state)
{
    pk_arena *a, *b = (pk_arena *)1;
    pk_arena_stats st;
    void *p = (void *)1;

    (void)state;
    assert_int_equal(pk_arena_create(NULL, NULL, 0), PK_EINVAL);
    assert_int_equal(pk_arena_create(&b, NULL, 100), PK_EINVAL);
    assert_null(b);
    assert_int_equal(pk_arena_create(&b, NULL, PK_ARENA_BLOCK_MAX + 1),
                     PK_EINVAL);
    assert_int_equal(pk_arena_create(&a, NULL, 0), 0);
    assert_int_equal(pk_arena_alloc(NULL, 8, 0, &p), PK_EINVAL);
    assert_null(p);
    assert_int_equal(pk_arena_alloc(a, 8, 0, NULL), PK_EINVAL);
    assert_int_equal(pk_arena_alloc(a, 8, 3, &p), PK_EINVAL);
    assert_int_equal(pk_arena_alloc(a, 8, 8192, &p), PK_EINVAL);
    assert_int_equal(pk_arena_alloc(a, SIZE_MAX, 0, &p), PK_EINVAL);
    assert_int_equal(pk_arena_alloc(a, SIZE_MAX - 8, 16, &p), PK_EINVAL);
    assert_int_equal(pk_arena_cleanup_add(NULL, note, NULL), PK_EINVAL);
    assert_int_equal(pk_arena_cleanup_add(a, NULL, NULL), PK_EINVAL);
    assert_int_equal(pk_arena_reset(NULL), PK_EINVAL);
    assert_int_equal(pk_arena_stats_get(NULL, &st), PK_EINVAL);
    assert_int_equal(pk_arena_stats_get(a, NULL), PK_EINVAL);
    pk_arena_destroy(NULL);
    pk_arena_destroy(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_allocations_are_aligned_and_disjoint),
        T(test_inline_bump_and_function_agree),
        T(test_full_block_grows_and_large_gets_its_own),
        T(test_reset_keeps_the_first_block_and_runs_cleanups),
        T(test_children_go_with_their_parent),
        T(test_every_allocation_failing_in_turn),
        T(test_bad_input_to_every_call),
#undef T
    };
    return cmocka_run_group_tests_name("arena", tests, NULL, NULL);
}
