/* tests/unit/test_mempool_debug.c - the object pool's debug mode
 * (PK_MEMPOOL_DEBUG): a double free, a pointer from malloc, one into the
 * middle of an object, into a slab's header, from another pool, from a
 * slab unmapped since, and an object never handed out are each reported
 * (event and message) and refused with PK_EINVAL, the pool unharmed; the
 * leak report at destroy names the alloc sites; a freed object holds the
 * poison and a write after free is reported at the next alloc; a ctor's
 * objects keep their bytes; threads freeing each other's objects raise no
 * report; every allocation failing in turn; and, in an ASan build, a use
 * after free is an AddressSanitizer report (the test runs itself again
 * with --use-after-free and reads the child's stderr).
 *
 * Worker threads never call cmocka: they record what they saw and the
 * main thread asserts after joining them. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poolkit/mempool.h>

#include "alloc.h"
#include "mempool_helpers.h"
#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN 1
#endif
#endif
#ifndef ASAN
#define ASAN 0
#endif

/* Under Valgrind (make valgrind) the freed object is off limits too. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND() RUNNING_ON_VALGRIND
#endif
#endif
#ifndef UNDER_VALGRIND
#define UNDER_VALGRIND() 0
#endif

/* What the event hook heard. */
#define EV_MAX 16
struct seen {
    atomic_int n;
    struct {
        pk_event_kind kind;
        void *resource;
        const char *file;
        int line;
        int code;
        char msg[PK_ERROR_MSG_SIZE];
    } ev[EV_MAX];
};

static void
on_event(void *user, const pk_event *e)
{
    struct seen *s = user;
    int i;

    if (e->kind != PK_EVENT_MISUSE &&
        e->kind != PK_EVENT_LEASE_OUT_AT_CLOSE)
        return; /* slabs made and unmade */
    i = atomic_fetch_add(&s->n, 1);
    if (i >= EV_MAX)
        return;
    s->ev[i].kind = e->kind;
    s->ev[i].resource = e->resource;
    s->ev[i].file = e->file;
    s->ev[i].line = e->line;
    s->ev[i].code = e->error ? e->error->code : 0;
    snprintf(s->ev[i].msg, sizeof s->ev[i].msg, "%s",
             e->error ? e->error->msg : "");
}

static pk_mempool *
make_dbg_idle(size_t size, struct seen *s, int (*ctor)(void *, void *),
              size_t min_idle)
{
    pk_mempool *mp = NULL;

    assert_int_equal(pk_mempool_create(&mp, &(pk_mempool_options){
        .object_size = size, .flags = PK_MEMPOOL_DEBUG, .ctor = ctor,
        .slab_size = 4096, .cache_size = 4, .min_idle = min_idle,
        .event = on_event, .event_user = s }), 0);
    return mp;
}

static pk_mempool *
make_dbg(size_t size, struct seen *s, int (*ctor)(void *, void *))
{
    return make_dbg_idle(size, s, ctor, 0);
}

/* Checks the one report of a refused free. */
static void
expect_report(struct seen *s, void *ptr, const char *words, int line)
{
    assert_int_equal(atomic_load(&s->n), 1);
    assert_int_equal(s->ev[0].kind, PK_EVENT_MISUSE);
    assert_ptr_equal(s->ev[0].resource, ptr);
    assert_int_equal(s->ev[0].code, PK_EINVAL);
    if (!strstr(s->ev[0].msg, words))
        fail_msg("report \"%s\" does not say \"%s\"", s->ev[0].msg, words);
    if (line) {
        assert_non_null(s->ev[0].file);
        assert_string_equal(s->ev[0].file, __FILE__);
        assert_int_equal(s->ev[0].line, line);
    }
    atomic_store(&s->n, 0);
}

/* ---- double free ---------------------------------------------------------- */

static void
test_double_free_is_reported_and_refused(void **state)
{
    struct seen s = { 0 };
    pk_mempool *mp;
    void *p, *q, *r, *objs[200];
    int line_p, n;

    (void)state;
    mp = make_dbg(64, &s, NULL);
    line_p = __LINE__ + 1;
    assert_int_equal(pk_mempool_alloc(mp, &p, 0), 0);
    assert_int_equal(pk_mempool_alloc(mp, &q, 0), 0);
    assert_int_equal(pk_mempool_free(mp, p), 0);
    assert_int_equal(atomic_load(&s.n), 0);
    /* In this thread's cache now. */
    assert_int_equal(pk_mempool_free(mp, p), PK_EINVAL);
    expect_report(&s, p, "double free", line_p);
    /* Out of the cache, back in its slab (r keeps the slab in use): a
     * second free is still found. */
    assert_int_equal(pk_mempool_alloc(mp, &r, 0), 0);
    assert_int_equal(pk_mempool_free(mp, q), 0);
    assert_int_equal(pk_mempool_trim(mp), 0); /* this thread's cache */
    assert_int_equal(pk_mempool_free(mp, q), PK_EINVAL);
    expect_report(&s, q, "double free", 0);
    assert_int_equal(pk_mempool_free(mp, r), 0);
    /* Many objects, each freed twice after the first free of all. */
    for (n = 0; n < 200; n++)
        assert_int_equal(pk_mempool_alloc(mp, &objs[n], 0), 0);
    for (n = 0; n < 200; n++)
        assert_int_equal(pk_mempool_free(mp, objs[n]), 0);
    for (n = 0; n < 200; n++) {
        assert_int_equal(pk_mempool_free(mp, objs[n]), PK_EINVAL);
        atomic_store(&s.n, 0);
    }
    assert_int_equal(mh_stats(mp).double_frees, 202);
    assert_int_equal(mh_stats(mp).live, 0);
    /* The pool is unharmed: 200 distinct objects again. */
    for (n = 0; n < 200; n++) {
        assert_int_equal(pk_mempool_alloc(mp, &objs[n], 0), 0);
        for (int k = 0; k < n; k++)
            assert_true(objs[k] != objs[n]);
    }
    for (n = 0; n < 200; n++)
        assert_int_equal(pk_mempool_free(mp, objs[n]), 0);
    assert_int_equal(atomic_load(&s.n), 0);
    pk_mempool_destroy(mp);
}

/* ---- pointers that are no object ------------------------------------------ */

static void
test_foreign_pointers_are_reported_and_refused(void **state)
{
    struct seen s = { 0 }, s2 = { 0 };
    pk_mempool *mp, *other;
    void *p, *o, *stale[100];
    char *m, *base, stack[64];
    int line_p, fresh_found = 0;
    pk_mempool_stats st;

    (void)state;
    mp = make_dbg(48, &s, NULL);
    other = make_dbg(48, &s2, NULL);
    line_p = __LINE__ + 1;
    assert_int_equal(pk_mempool_alloc(mp, &p, 0), 0);
    assert_int_equal(pk_mempool_alloc(other, &o, 0), 0);

    m = malloc(100);
    assert_non_null(m);
    assert_int_equal(pk_mempool_free(mp, m), PK_EINVAL);
    expect_report(&s, m, "in no slab of this pool", 0);
    assert_int_equal(pk_mempool_free(mp, stack + 8), PK_EINVAL);
    expect_report(&s, stack + 8, "in no slab of this pool", 0);
    assert_int_equal(pk_mempool_free(mp, o), PK_EINVAL); /* other's */
    expect_report(&s, o, "in no slab of this pool", 0);
    assert_int_equal(pk_mempool_free(mp, (char *)p + 20), PK_EINVAL);
    expect_report(&s, (char *)p + 20, "20 bytes into object", line_p);
    base = (char *)((uintptr_t)p & ~(uintptr_t)4095);
    assert_int_equal(pk_mempool_free(mp, base + 8), PK_EINVAL);
    expect_report(&s, base + 8, "at no object", 0);
    assert_int_equal(pk_mempool_free(mp, base + 4095), PK_EINVAL);
    expect_report(&s, base + 4095, "", 0); /* tail, or inside the last */
    /* An object of the slab that was never handed out (the cache took 2
     * of 84; every other one is fresh). */
    for (size_t off = 0; off < 4096 && !fresh_found; off += 16) {
        char *x = base + off;
        if (x == (char *)p)
            continue;
        pk_mempool_free(mp, x);
        if (atomic_load(&s.n) &&
            strstr(s.ev[0].msg, "never allocated"))
            fresh_found = 1;
        atomic_store(&s.n, 0);
    }
    assert_true(fresh_found);

    /* A pointer into a slab that has been unmapped since. */
    for (int i = 0; i < 100; i++)
        assert_int_equal(pk_mempool_alloc(other, &stale[i], 0), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(pk_mempool_free(other, stale[i]), 0);
    assert_int_equal(pk_mempool_free(other, o), 0);
    assert_int_equal(pk_mempool_trim(other), 0);
    assert_int_equal(mh_stats(other).slabs, 0);
    assert_int_equal(atomic_load(&s2.n), 0);
    assert_int_equal(pk_mempool_free(other, stale[50]), PK_EINVAL);
    expect_report(&s2, stale[50], "in no slab of this pool", 0);

    st = mh_stats(mp);
    assert_true(st.bad_frees >= 6);
    assert_int_equal(st.double_frees, 0);
    assert_int_equal(st.live, 1);
    assert_int_equal(pk_mempool_free(mp, p), 0);
    assert_int_equal(atomic_load(&s.n), 0);
    free(m);
    pk_mempool_destroy(other);
    pk_mempool_destroy(mp);
    assert_int_equal(atomic_load(&s.n), 0); /* nothing out, no leak */
}

/* ---- leaks ------------------------------------------------------------------ */

static void
test_leaks_are_reported_with_their_sites(void **state)
{
    struct seen s = { 0 };
    pk_mempool *mp;
    void *a[3], *b[2];
    int line_a, line_b, got_a = 0, got_b = 0, got_total = 0;

    (void)state;
    mp = make_dbg(32, &s, NULL);
    for (int i = 0; i < 3; i++) {
        line_a = __LINE__ + 1;
        assert_int_equal(pk_mempool_alloc(mp, &a[i], 0), 0);
    }
    for (int i = 0; i < 2; i++) {
        line_b = __LINE__ + 1;
        assert_int_equal(pk_mempool_alloc(mp, &b[i], 0), 0);
    }
    assert_int_equal(pk_mempool_free(mp, a[1]), 0);
    pk_mempool_destroy(mp);
    assert_int_equal(atomic_load(&s.n), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s.ev[i].kind, PK_EVENT_LEASE_OUT_AT_CLOSE);
        if (s.ev[i].file && s.ev[i].line == line_a) {
            assert_string_equal(s.ev[i].file, __FILE__);
            assert_non_null(strstr(s.ev[i].msg, "2 of 4 objects"));
            got_a++;
        } else if (s.ev[i].file && s.ev[i].line == line_b) {
            assert_non_null(strstr(s.ev[i].msg, "2 of 4 objects"));
            got_b++;
        } else {
            assert_non_null(strstr(s.ev[i].msg, "4 objects still out"));
            got_total++;
        }
    }
    assert_int_equal(got_a + got_b + got_total, 3);
    assert_int_equal(got_a, 1);
    assert_int_equal(got_b, 1);
}

/* ---- poison ----------------------------------------------------------------- */

static void
test_poison_and_a_write_after_free(void **state)
{
    struct seen s = { 0 };
    pk_mempool *mp;
    unsigned char *p, *q;
    int line_p;

    (void)state;
    if (ASAN || UNDER_VALGRIND()) {
        print_message("skipped: reading a freed object is an ASan or "
                      "Valgrind report here (the use-after-free test "
                      "covers ASan)\n");
        return;
    }
    mp = make_dbg(40, &s, NULL);
    line_p = __LINE__ + 1;
    assert_int_equal(pk_mempool_alloc(mp, (void **)&p, 0), 0);
    memset(p, 0, 40);
    assert_int_equal(pk_mempool_free(mp, p), 0);
    for (int i = 0; i < 40; i++)
        assert_int_equal(p[i], PK_MEMPOOL_POISON);
    p[17] = 1; /* a write after free */
    assert_int_equal(pk_mempool_alloc(mp, (void **)&q, 0), 0);
    assert_ptr_equal(q, p); /* the cache is LIFO */
    assert_int_equal(atomic_load(&s.n), 1);
    assert_int_equal(s.ev[0].kind, PK_EVENT_MISUSE);
    assert_int_equal(s.ev[0].code, PK_ECHECK);
    assert_int_equal(s.ev[0].line, line_p);
    assert_non_null(strstr(s.ev[0].msg, "written after it was freed: "
                                        "byte 17 is 0x01"));
    assert_int_equal(pk_mempool_free(mp, q), 0);
    pk_mempool_destroy(mp);
}

static int
ctor_mark(void *user, void *obj)
{
    (void)user;
    memset(obj, 0x11, 24);
    return 0;
}

static void
test_constructed_objects_keep_their_bytes(void **state)
{
    struct seen s = { 0 };
    pk_mempool *mp;
    unsigned char *p;

    (void)state;
    mp = make_dbg(24, &s, ctor_mark);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(pk_mempool_alloc(mp, (void **)&p, 0), 0);
        for (int i = 0; i < 24; i++)
            assert_int_equal(p[i], 0x11);
        assert_int_equal(pk_mempool_free(mp, p), 0);
    }
    assert_int_equal(atomic_load(&s.n), 0);
    pk_mempool_destroy(mp);
}

/* ---- threads ---------------------------------------------------------------- */

struct swap {
    pk_mempool *mp;
    _Atomic(void *) box[64];
    int bad;
};

/* Allocates into the box and frees what the other thread left there. */
static void *
swapper(void *arg)
{
    struct swap *w = arg;

    for (int i = 0; i < 20000; i++) {
        void *p, *old;
        if (pk_mempool_alloc(w->mp, &p, PK_WAIT_FOREVER) != 0) {
            w->bad++;
            continue;
        }
        memset(p, i & 0xff, 64);
        old = atomic_exchange(&w->box[i % 64], p);
        if (old && pk_mempool_free(w->mp, old) != 0)
            w->bad++;
    }
    return NULL;
}

static void
test_threads_freeing_each_others_objects_raise_nothing(void **state)
{
    struct seen s = { 0 };
    struct swap w = { 0 };
    pthread_t t[2];
    pk_mempool_stats st;

    (void)state;
    w.mp = make_dbg(64, &s, NULL);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, swapper, &w), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(w.bad, 0);
    for (int i = 0; i < 64; i++) {
        void *p = atomic_load(&w.box[i]);
        if (p)
            assert_int_equal(pk_mempool_free(w.mp, p), 0);
    }
    st = mh_stats(w.mp);
    assert_int_equal(st.live, 0);
    assert_int_equal(st.double_frees + st.bad_frees, 0);
    assert_int_equal(atomic_load(&s.n), 0);
    pk_mempool_destroy(w.mp);
}

/* ---- allocation failures ---------------------------------------------------- */

static void
test_every_allocation_failing_in_turn(void **state)
{
    unsigned long k;

    (void)state;
    for (k = 1; k < 2000; k++) {
        pk_mempool *mp = NULL;
        void *objs[1200];
        int rc, n = 0;
        unsigned long ran;

        pk__alloc_fail_at(k);
        rc = pk_mempool_create(&mp, &(pk_mempool_options){
            .object_size = 64, .slab_size = 4096, .min_idle = 1,
            .flags = PK_MEMPOOL_MANUAL_MAINTENANCE | PK_MEMPOOL_DEBUG });
        if (rc == 0) {
            /* Enough slabs for the registry to grow twice. */
            for (int i = 0; i < 1200; i++) {
                rc = pk_mempool_alloc(mp, &objs[n], 0);
                if (rc == 0)
                    n++;
                else if (rc != PK_ENOMEM)
                    fail_msg("k=%lu: alloc returned %s", k, pk_err_name(rc));
            }
            if (n)
                assert_int_equal(pk_mempool_free(mp, (char *)objs[0] + 1),
                                 PK_EINVAL);
            for (int i = 0; i < n; i++)
                assert_int_equal(pk_mempool_free(mp, objs[i]), 0);
            assert_int_equal(pk_mempool_trim(mp), 0);
            pk_mempool_destroy(mp);
        } else {
            assert_int_equal(rc, PK_ENOMEM);
        }
        ran = pk__alloc_fail_at(0);
        assert_int_equal(pk__alloc_live(), mh_live0());
        if (ran < k)
            break;
    }
    assert_true(k > 5 && k < 2000);
}

/* ---- a use after free under AddressSanitizer -------------------------------- */

/* Run as `test_mempool_debug --use-after-free`: reads a freed object.
 * In an ASan build this must end in ASan's report; returns 0 if it did
 * not (the parent then fails). */
static int
use_after_free(void)
{
    pk_mempool *mp;
    volatile char *p;
    void *v;
    char c;

    if (pk_mempool_create(&mp, &(pk_mempool_options){
            .object_size = 64, .flags = PK_MEMPOOL_DEBUG }) != 0 ||
        pk_mempool_alloc(mp, &v, 0) != 0)
        return 2;
    p = v;
    p[0] = 'x';
    pk_mempool_free(mp, v);
    c = p[10]; /* the use after free */
    fprintf(stderr, "no report: read %d\n", c);
    return 0;
}

static void
test_use_after_free_is_an_asan_report(void **state)
{
    int fds[2], status;
    char buf[65536];
    size_t len = 0;
    ssize_t r;
    pid_t pid;

    (void)state;
    if (!ASAN) {
        print_message("skipped: not built with AddressSanitizer (make "
                      "check-asan runs it)\n");
        return;
    }
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execl("/proc/self/exe", "test_mempool_debug", "--use-after-free",
              (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    while (len < sizeof buf - 1 &&
           (r = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = 0;
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!strstr(buf, "ERROR: AddressSanitizer: use-after-poison"))
        fail_msg("no ASan report in the child's stderr:\n%s", buf);
    assert_non_null(strstr(buf, "use_after_free"));
    assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, mh_setup, mh_teardown)
        T(test_double_free_is_reported_and_refused),
        T(test_foreign_pointers_are_reported_and_refused),
        T(test_leaks_are_reported_with_their_sites),
        T(test_poison_and_a_write_after_free),
        T(test_constructed_objects_keep_their_bytes),
        T(test_threads_freeing_each_others_objects_raise_nothing),
        T(test_every_allocation_failing_in_turn),
        T(test_use_after_free_is_an_asan_report),
#undef T
    };

    if (argc == 2 && strcmp(argv[1], "--use-after-free") == 0)
        return use_after_free();
    return cmocka_run_group_tests_name("mempool_debug", tests, NULL, NULL);
}
