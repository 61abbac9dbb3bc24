/* lib/kit/dlist.h - an intrusive doubly linked list with a head and a tail,
 * for the core's lists: pk_map's live units (map.c), the pool's idle
 * list, free slots and waiter queue (pool_int.h) and the group's budget
 * queue (pool_group.c), the thread pool's workers. A node lives in its owner
 * (PK__CONTAINER gets the owner back). Not thread-safe: the list's owner
 * locks it. */
#ifndef PK_LIB_DLIST_H
#define PK_LIB_DLIST_H

#include <stddef.h>

struct pk__dnode {
    struct pk__dnode *prev, *next;
};

struct pk__dlist {
    struct pk__dnode *head, *tail;
};

#define PK__CONTAINER(p, type, member) \
    ((type *)(void *)((char *)(p) - offsetof(type, member)))

static inline void
pk__dlist_push_head(struct pk__dlist *l, struct pk__dnode *n)
{
    n->prev = NULL;
    n->next = l->head;
    if (l->head)
        l->head->prev = n;
    else
        l->tail = n;
    l->head = n;
}

static inline void
pk__dlist_push_tail(struct pk__dlist *l, struct pk__dnode *n)
{
    n->next = NULL;
    n->prev = l->tail;
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
}

static inline void
pk__dlist_remove(struct pk__dlist *l, struct pk__dnode *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
}

/* Unlinks and returns the head, or NULL if the list is empty: for the
 * lists used as stacks or drained whole (the pool's free slots, a closing
 * pool's waiters). */
static inline struct pk__dnode *
pk__dlist_pop_head(struct pk__dlist *l)
{
    struct pk__dnode *n = l->head;

    if (n)
        pk__dlist_remove(l, n);
    return n;
}

#endif /* PK_LIB_DLIST_H */
