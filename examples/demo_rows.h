/* examples/demo_rows.h - how a row plugs into poolkit-demo.
 *
 * A row is the same work done two ways: making the resource for each use,
 * and reusing one from a pool. The row sets itself up, hands the two
 * one-operation functions to demo_measure() (which alternates timed
 * batches of each, draws the progress bar and fills the result) and tears
 * itself down. A row that cannot run here (no server binaries, say) sets
 * skipped and says in note how to enable it.
 *
 * To add a row: write `int demo_row_<name>(struct demo_ctx *,
 * struct demo_result *)`, in poolkit-demo.c or in an examples/demo_*.c of
 * its own (the Makefile links every demo_*.c into poolkit-demo; declare
 * the function below), and add {name, what, function} to the rows[] table
 * in poolkit-demo.c, in the order the rows should print.
 *
 * Rows that share something costly (a server) are a group: names that
 * share a prefix before a dash (pg-unix, pg-tcp, pg-tls), which
 * `--only pg` runs together. The first row of the group that runs sets
 * the shared thing up; the rows' `finish` function releases it once, after
 * the last row ran (whatever the rows returned). */
#ifndef POOLKIT_DEMO_ROWS_H
#define POOLKIT_DEMO_ROWS_H

#include <stddef.h>

struct demo_ctx; /* opaque: progress bar and time budget */

struct demo_result {
    double per_use_ns; /* one operation, the resource made for it */
    double pooled_ns;  /* one operation, the resource from a pool */
    long ops;          /* operations timed each way */
    int skipped;       /* 1: the row could not run here (see note) */
    char note[256];    /* why skipped and how to enable; or an error */
};

/* One operation. Returns 0, or nonzero on failure (after writing why into
 * the result's note through demo_note). */
typedef int (*demo_op_fn)(void *arg);

struct demo_pair {
    demo_op_fn per_use; /* make, use once, unmake */
    demo_op_fn pooled;  /* acquire, use once, release */
    void *arg;
};

/* Times both functions in alternating batches for the row's budget and
 * fills out->per_use_ns, pooled_ns and ops with the median batch.
 * Returns 0, or the first nonzero code an operation returned. */
int demo_measure(struct demo_ctx *ctx, const struct demo_pair *pair,
                 struct demo_result *out);

/* Starts the row's time budget and progress bar again: a row calls it
 * when a slow set-up (starting a server) is done, so the set-up does not
 * eat the measuring time. */
void demo_setup_done(struct demo_ctx *ctx);

/* Writes a printf-style message into out->note: why a row was skipped or
 * failed, or, from a row that ran, a line printed under the table. */
void demo_note(struct demo_result *out, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* The tiny task of the thread and process rows: a few rounds of
 * xorshift over a seed, checked by the caller, so a broken way cannot
 * look fast. */
static inline unsigned
demo_tiny_work(unsigned x)
{
    x |= 1;
    for (int i = 0; i < 64; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
    }
    return x;
}

struct demo_row {
    const char *name; /* --only NAME; short, lower case */
    const char *what; /* one line: the resource and the operation */
    /* Returns 0 (out filled, or out->skipped set), nonzero on error
     * (out->note says what failed). */
    int (*run)(struct demo_ctx *ctx, struct demo_result *out);
    /* Optional: called once after all rows ran, if this row ran; rows
     * that share a finish function get one call. */
    void (*finish)(void);
};

/* Rows defined outside poolkit-demo.c. */
/* demo_threads.c: thread, io-scaling */
int demo_row_thread(struct demo_ctx *ctx, struct demo_result *out);
int demo_row_io_scaling(struct demo_ctx *ctx, struct demo_result *out);
/* demo_procpool.c: process */
int demo_row_process(struct demo_ctx *ctx, struct demo_result *out);
/* demo_mempool.c: mem-obj, mem-arena, mem-ctor */
int demo_row_mem_obj(struct demo_ctx *ctx, struct demo_result *out);
int demo_row_mem_arena(struct demo_ctx *ctx, struct demo_result *out);
int demo_row_mem_ctor(struct demo_ctx *ctx, struct demo_result *out);
/* demo_pg.c: pg-unix, pg-tcp, pg-tls (skipped when built without libpq);
 * demo_pg_finish stops the server the first of them started */
int demo_row_pg_unix(struct demo_ctx *ctx, struct demo_result *out);
int demo_row_pg_tcp(struct demo_ctx *ctx, struct demo_result *out);
int demo_row_pg_tls(struct demo_ctx *ctx, struct demo_result *out);
void demo_pg_finish(void);
/* demo_http.c: http, https (skipped when built without libcurl);
 * demo_http_finish stops the server the first of them started */
int demo_row_http(struct demo_ctx *ctx, struct demo_result *out);
int demo_row_https(struct demo_ctx *ctx, struct demo_result *out);
void demo_http_finish(void);

#endif /* POOLKIT_DEMO_ROWS_H */
