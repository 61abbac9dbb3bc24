/* lib/exec/map_array.c - pk_map_array: a map over an array, every outcome
 * collected; written on the public pk_map calls alone. */
#include <poolkit/executor.h>

#include <stddef.h>
#include <string.h>

/* codes[i] and errs[i].code before item i was delivered (no PK_E* code
 * is positive). */
#define NOT_DELIVERED 1

struct array_input {
    pk_task_fn fn;
    void *const *args;
    size_t n, i;
};

static int
array_next(void *user, pk_task *task)
{
    struct array_input *in = user;

    if (in->i == in->n)
        return 1;
    task->fn = in->fn;
    task->arg = in->args[in->i++];
    return 0;
}

/* Where the outcomes go: each array optional but results. */
struct array_out {
    void **results;
    int *codes;
    pk_error *errs;
};

/* Gives every item the map never delivered the map's error. */
static void
fill_undelivered(const struct array_out *o, size_t n, const pk_error *e)
{
    for (size_t i = 0; i < n; i++) {
        if (o->codes && o->codes[i] == NOT_DELIVERED)
            o->codes[i] = e->code;
        if (o->errs && o->errs[i].code == NOT_DELIVERED)
            o->errs[i] = *e;
    }
}

/* Collects every outcome into o. Returns 0, the first failed item's
 * code, or the map's error. */
static int
collect(pk_map *m, size_t n, const struct array_out *o)
{
    size_t first_bad = n, idx;
    int bad = 0, rc;
    pk_result r;
    pk_error e;

    for (;;) {
        memset(&r, 0, sizeof r);
        rc = pk_map_next(m, &r, &idx, &e);
        if (rc == 1)
            return first_bad < n ? bad : 0;
        if (idx == PK_MAP_NO_INDEX) {
            fill_undelivered(o, n, &e);
            return rc;
        }
        o->results[idx] = rc == 0 ? r.value : NULL;
        if (o->codes)
            o->codes[idx] = rc;
        if (o->errs && rc)
            o->errs[idx] = e;
        else if (o->errs)
            pk_error_clear(&o->errs[idx]);
        if (rc && idx < first_bad) {
            first_bad = idx;
            bad = rc;
        }
    }
}

int
pk_map_array(pk_executor *ex, pk_task_fn fn, void *const *args, size_t n,
             void **results, int *codes, pk_error *errs,
             const pk_map_options *o)
{
    struct array_input in = { fn, args, n, 0 };
    struct array_out out = { results, codes, errs };
    pk_map_options ao;
    pk_map *m;
    int rc, end;

    if (!ex || !fn || (n && (!args || !results)))
        return PK_EINVAL;
    if (n == 0)
        return 0;
    if (o)
        ao = *o;
    else
        memset(&ao, 0, sizeof ao);
    ao.release = NULL; /* the tasks are ours */
    if (!ao.total_hint)
        ao.total_hint = n;
    rc = pk_map_create(&m, ex, array_next, &in, &ao);
    if (rc)
        return rc;
    /* NOT_DELIVERED marks what the map never delivered. */
    for (size_t i = 0; i < n; i++) {
        results[i] = NULL;
        if (codes)
            codes[i] = NOT_DELIVERED;
        if (errs) {
            pk_error_clear(&errs[i]);
            errs[i].code = NOT_DELIVERED;
        }
    }
    end = collect(m, n, &out);
    pk_map_destroy(m);
    return end;
}
