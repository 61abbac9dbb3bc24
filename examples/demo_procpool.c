/* examples/demo_procpool.c - poolkit-demo's process pool row.
 *
 *   process     a process forked, run and reaped per task (the task's
 *               answer is its exit status), vs the same task sent to a
 *               pk_procpool worker and its future waited on: what a
 *               pooled worker process saves per task
 *
 * The task: demo_tiny_work (demo_rows.h). */
#include <poolkit/procpool.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "demo_rows.h"


/* The named task a worker runs: demo_tiny_work on the 4 bytes it is
 * given. */
static int
work_task(const void *data, size_t len, pk_future *self, pk_result *out,
          pk_error *err)
{
    unsigned in, *r = malloc(sizeof *r);

    (void)self;
    if (len != sizeof in || !r) {
        free(r);
        return pk_error_set(err, PK_EINVAL, 0, "want 4 bytes");
    }
    memcpy(&in, data, sizeof in);
    *r = demo_tiny_work(in);
    out->value = r;
    out->len = sizeof *r;
    out->free_fn = free;
    return 0;
}

struct proc_row {
    pk_procpool *pp;
    struct demo_result *out;
    unsigned seq;
};

static int
forked(void *arg)
{
    struct proc_row *r = arg;
    unsigned in = r->seq++;
    int status;
    pid_t pid = fork();

    if (pid < 0) {
        demo_note(r->out, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) /* the child: the task, then out (no stdio flush) */
        _exit((int)(demo_tiny_work(in) & 0x7f));
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            demo_note(r->out, "waitpid: %s", strerror(errno));
            return -1;
        }
    }
    if (!WIFEXITED(status) ||
        WEXITSTATUS(status) != (int)(demo_tiny_work(in) & 0x7f)) {
        demo_note(r->out, "child: bad exit status 0x%x", status);
        return -1;
    }
    return 0;
}

static int
pooled(void *arg)
{
    struct proc_row *r = arg;
    unsigned in = r->seq++, got = 0;
    pk_future *f;
    pk_result res;
    int rc = pk_procpool_submit(r->pp, "work", &in, sizeof in, &f);

    if (rc) {
        demo_note(r->out, "pk_procpool_submit: %s", pk_strerror(rc));
        return -1;
    }
    rc = pk_future_get(f, 10000, &res, NULL);
    if (rc == 0 && res.len == sizeof got)
        memcpy(&got, res.value, sizeof got);
    pk_future_release(f);
    if (rc || got != demo_tiny_work(in)) {
        demo_note(r->out, "pooled task: %s",
                  rc ? pk_strerror(rc) : "bad result");
        return -1;
    }
    return 0;
}

int
demo_row_process(struct demo_ctx *ctx, struct demo_result *out)
{
    struct proc_row r = { NULL, out, 1 };
    struct demo_pair pair = { forked, pooled, &r };
    pk_registry *reg;
    int rc = pk_registry_create(&reg);

    if (rc == 0)
        rc = pk_registry_register(reg, "work", work_task);
    if (rc == 0)
        rc = pk_procpool_create(&r.pp, &(pk_procpool_options){
                                           .registry = reg,
                                           .min_workers = 1,
                                           .max_workers = 1 });
    if (rc) {
        demo_note(out, "pk_procpool_create: %s", pk_strerror(rc));
        pk_registry_destroy(reg);
        return -1;
    }
    rc = demo_measure(ctx, &pair, out);
    pk_procpool_destroy(r.pp);
    pk_registry_destroy(reg);
    return rc;
}
