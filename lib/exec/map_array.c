/* lib/exec/map_array.c - pk_map_array: a map over an array, every outcome
 * collected; written on the public pk_map calls alone. */
#include <poolkit/executor.h>

#include <stddef.h>
#include <string.h>

/* codes[i] before item i was delivered (no PK_E* code is positive). */
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

/* Collects every outcome into results and codes. Returns 0, the first
 * failed item's code, or the map's error. */
static int
collect(pk_map *m, size_t n, void **results, int *codes)
{
    size_t first_bad = n, idx;
    int bad = 0, rc;
    pk_result r;

    for (;;) {
        memset(&r, 0, sizeof r);
        rc = pk_map_next(m, &r, &idx, NULL);
        if (rc == 1)
            return first_bad < n ? bad : 0;
        if (idx == PK_MAP_NO_INDEX) {
            for (size_t i = 0; codes && i < n; i++)
                if (codes[i] == NOT_DELIVERED)
                    codes[i] = rc;
            return rc;
        }
        results[idx] = rc == 0 ? r.value : NULL;
        if (codes)
            codes[idx] = rc;
        if (rc && idx < first_bad) {
            first_bad = idx;
            bad = rc;
        }
    }
}

int
pk_map_array(pk_executor *ex, pk_task_fn fn, void *const *args, size_t n,
             void **results, int *codes, const pk_map_options *o)
{
    struct array_input in = { fn, args, n, 0 };
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
    }
    end = collect(m, n, results, codes);
    pk_map_destroy(m);
    return end;
}
