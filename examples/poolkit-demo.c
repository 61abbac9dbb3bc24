/* examples/poolkit-demo.c - what pooling saves on this machine.
 *
 * Each row does the same work two ways, making the resource for every use
 * and reusing one from a pool, and prints the cost per operation both ways
 * and their ratio. `make demo` builds and runs it.
 *
 *   poolkit-demo                 every row (well under a minute)
 *   poolkit-demo --only socket   one row
 *   poolkit-demo --only pg       a group of rows (pg-unix, pg-tcp, pg-tls)
 *   poolkit-demo --svg out.svg   also draw the table as a bar chart
 *
 * Measuring: a row's two operations run in alternating timed batches of
 * about 10 ms each until the row's budget is spent; each way's figure is
 * the median batch, so a burst of noise on a shared machine lands on one
 * batch instead of the result. Rows slower than a second show a progress
 * bar on stderr when it is a terminal.
 *
 * Rows are entries of rows[] below; demo_rows.h says how to add one. */
#include <poolkit/pool.h>
#include <poolkit/version.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "demo_rows.h"

#define ROW_BUDGET_S 2.0  /* time per row, both ways together */
#define BATCH_NS 10000000 /* aim of one timed batch: 10 ms */
#define MAX_BATCHES 1024
#define MIN_BATCHES 5     /* per way, whatever the budget says */
#define BAR_AFTER_NS 1000000000u /* progress bar once a row takes 1 s */

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
demo_note(struct demo_result *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->note, sizeof out->note, fmt, ap);
    va_end(ap);
}

/* ---- the harness: timing and the progress bar -------------------------- */

struct demo_ctx {
    const char *row;   /* name shown on the bar */
    double budget_s;
    uint64_t start_ns; /* when the row started */
    int tty;           /* stderr is a terminal */
    int bar_shown;     /* something to clear on the terminal's line */
    int dots;          /* not a terminal: dots printed, one a second */
};

void
demo_setup_done(struct demo_ctx *ctx)
{
    ctx->start_ns = now_ns();
}

/* Past a second, a bar on a terminal; elsewhere (a pipe, a log) a dot a
 * second after the "measuring" line, so the output is never silent. */
static void
progress(struct demo_ctx *ctx, double frac)
{
    enum { W = 30 };
    char bar[W + 1];
    int fill;
    uint64_t ran = now_ns() - ctx->start_ns;

    if (ran < BAR_AFTER_NS)
        return;
    if (!ctx->tty) {
        while ((uint64_t)ctx->dots * BAR_AFTER_NS < ran) {
            fputc('.', stderr);
            ctx->dots++;
        }
        fflush(stderr);
        return;
    }
    frac = frac < 0 ? 0 : frac > 1 ? 1 : frac;
    fill = (int)(frac * W + 0.5);
    for (int i = 0; i < W; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[W] = '\0';
    fprintf(stderr, "\r  %-10s [%s] %3d%%", ctx->row, bar,
            (int)(frac * 100 + 0.5));
    fflush(stderr);
    ctx->bar_shown = 1;
}

/* Says what a row measures before its first figure arrives. */
static void
announce(struct demo_ctx *ctx, const char *what)
{
    if (ctx->tty) {
        fprintf(stderr, "  %-10s measuring: %.60s", ctx->row, what);
        ctx->bar_shown = 1;
    } else {
        fprintf(stderr, "measuring %s (about %.0f s): %s ", ctx->row,
                ctx->budget_s, what);
        ctx->dots = 1;
    }
    fflush(stderr);
}

static void
progress_clear(struct demo_ctx *ctx)
{
    if (!ctx->tty && ctx->dots) {
        fputc('\n', stderr);
        fflush(stderr);
        ctx->dots = 0;
    }
    if (ctx->bar_shown) {
        fprintf(stderr, "\r%90s\r", "");
        fflush(stderr);
        ctx->bar_shown = 0;
    }
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Runs fn n times; returns ns per call, or -1 with *rc set on failure. */
static double
batch(demo_op_fn fn, void *arg, long n, int *rc)
{
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        *rc = fn(arg);
        if (*rc)
            return -1;
    }
    return (double)(now_ns() - t0) / (double)n;
}

/* How many calls of fn make a batch of about BATCH_NS. */
static long
batch_size(demo_op_fn fn, void *arg, int *rc)
{
    long n = 1;
    for (;;) {
        double per = batch(fn, arg, n, rc);
        if (per < 0)
            return -1;
        if (per * (double)n >= BATCH_NS / 20 || n >= 1L << 24) {
            double want = BATCH_NS / (per > 1 ? per : 1);
            return want < 1 ? 1 : (long)want;
        }
        n *= 4;
    }
}

int
demo_measure(struct demo_ctx *ctx, const struct demo_pair *pair,
             struct demo_result *out)
{
    static double v[2][MAX_BATCHES];
    demo_op_fn fn[2] = { pair->per_use, pair->pooled };
    long n[2], ops[2] = { 0, 0 };
    uint64_t end;
    int rc = 0, k = 0;

    /* Sizing the batches doubles as the warm-up (the pooled way makes
     * its first resource here, outside the timed batches). */
    for (int w = 0; w < 2; w++) {
        n[w] = batch_size(fn[w], pair->arg, &rc);
        if (n[w] < 0)
            return rc;
    }
    end = ctx->start_ns + (uint64_t)(ctx->budget_s * 1e9);
    while (k < MAX_BATCHES && (k < MIN_BATCHES || now_ns() < end)) {
        for (int j = 0; j < 2; j++) {
            int w = (k + j) % 2; /* alternate which way goes first */
            v[w][k] = batch(fn[w], pair->arg, n[w], &rc);
            if (v[w][k] < 0)
                return rc;
            ops[w] += n[w];
        }
        k++;
        progress(ctx, (double)(now_ns() - ctx->start_ns) /
                          (ctx->budget_s * 1e9));
    }
    out->per_use_ns = median(v[0], k);
    out->pooled_ns = median(v[1], k);
    out->ops = ops[0] < ops[1] ? ops[0] : ops[1];
    return 0;
}

/* ---- row: a connection (a socketpair with a handshake) ----------------- */

/* A stand-in for a network connection: both ends of a socketpair, the
 * client end and the server end, in this process. Opening it costs a
 * socketpair() and a one-message handshake (hello, welcome); a use is one
 * request and its response; closing it closes both ends. */
struct conn {
    int fd[2]; /* [0] client end, [1] server end */
};

enum { MSG = 64 }; /* every message is MSG bytes */

static int
write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
read_all(int fd, char *buf, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, buf, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        buf += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One message each way: the client sends line, the server checks it
 * starts with expect and answers reply, the client reads the answer. */
static int
round_trip(struct conn *c, const char *line, const char *expect,
           const char *reply)
{
    char buf[MSG], out[MSG];

    memset(out, 0, sizeof out);
    snprintf(out, sizeof out, "%s", line);
    if (write_all(c->fd[0], out, MSG) || read_all(c->fd[1], buf, MSG))
        return -1;
    if (strncmp(buf, expect, strlen(expect)) != 0)
        return -1;
    memset(out, 0, sizeof out);
    snprintf(out, sizeof out, "%s", reply);
    if (write_all(c->fd[1], out, MSG) || read_all(c->fd[0], buf, MSG))
        return -1;
    return strncmp(buf, reply, MSG) == 0 ? 0 : -1;
}

static void
conn_close(struct conn *c)
{
    close(c->fd[0]);
    close(c->fd[1]);
}

/* Returns 0, or an errno value. */
static int
conn_open(struct conn *c)
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, c->fd) != 0)
        return errno;
    if (round_trip(c, "HELLO poolkit-demo/1", "HELLO ",
                   "WELCOME poolkit-demo/1") != 0) {
        int e = errno ? errno : EPROTO;
        conn_close(c);
        return e;
    }
    return 0;
}

/* The request and its response: what each operation does with its
 * connection, whichever way it got it. */
static int
conn_request(struct conn *c, unsigned long seq)
{
    char line[MSG], reply[MSG];

    snprintf(line, sizeof line, "GET /item/%lu", seq);
    snprintf(reply, sizeof reply, "OK item %lu", seq);
    return round_trip(c, line, "GET /item/", reply);
}

static int
conn_create_hook(void *user, void **res, pk_error *err)
{
    struct conn *c = malloc(sizeof *c);
    int e;

    (void)user;
    if (!c)
        return PK_ENOMEM;
    e = conn_open(c);
    if (e) {
        free(c);
        if (err) {
            err->code = PK_EADAPTER;
            err->sys = e;
            snprintf(err->msg, sizeof err->msg, "connect: %s", strerror(e));
        }
        return PK_EADAPTER;
    }
    *res = c;
    return 0;
}

static void
conn_destroy_hook(void *user, void *res)
{
    (void)user;
    conn_close(res);
    free(res);
}

struct socket_row {
    pk_pool *pool;
    struct demo_result *out;
    unsigned long seq;
};

static int
socket_per_use(void *arg)
{
    struct socket_row *s = arg;
    struct conn c;
    int e = conn_open(&c);

    if (e) {
        demo_note(s->out, "connect: %s", strerror(e));
        return -1;
    }
    if (conn_request(&c, s->seq++) != 0) {
        demo_note(s->out, "request failed: %s", strerror(errno));
        conn_close(&c);
        return -1;
    }
    conn_close(&c);
    return 0;
}

static int
socket_pooled(void *arg)
{
    struct socket_row *s = arg;
    pk_lease lease;
    pk_error err;
    int rc = pk_pool_acquire(s->pool, &lease, 5000, &err);

    if (rc) {
        demo_note(s->out, "pk_pool_acquire: %s%s%s", pk_strerror(rc),
                  rc == PK_EADAPTER ? ": " : "",
                  rc == PK_EADAPTER ? err.msg : "");
        return -1;
    }
    if (conn_request(lease.resource, s->seq++) != 0) {
        demo_note(s->out, "request failed: %s", strerror(errno));
        pk_pool_release(s->pool, &lease, PK_RELEASE_BROKEN);
        return -1;
    }
    return pk_pool_release(s->pool, &lease, PK_RELEASE_OK);
}

static int
demo_row_socket(struct demo_ctx *ctx, struct demo_result *out)
{
    struct socket_row s = { NULL, out, 0 };
    pk_pool_options o = { .create = conn_create_hook,
                          .destroy = conn_destroy_hook };
    struct demo_pair pair = { socket_per_use, socket_pooled, &s };
    int rc = pk_pool_create(&s.pool, &o);

    if (rc) {
        demo_note(out, "pk_pool_create: %s", pk_strerror(rc));
        return -1;
    }
    rc = demo_measure(ctx, &pair, out);
    pk_pool_destroy(s.pool);
    return rc;
}

/* ---- the rows ----------------------------------------------------------- */

static const struct demo_row rows[] = {
    { "socket", "socketpair + handshake; one request/response per use",
      demo_row_socket, NULL },
    { "thread", "pthread_create+join per task vs submit+wait on a "
                "pk_threadpool", demo_row_thread, NULL },
    { "process", "fork+waitpid per task vs submit+wait on a pk_procpool "
                 "worker", demo_row_process, NULL },
    { "io-scaling", "64 tasks each waiting 2 ms on a socket: 1 thread vs 16",
      demo_row_io_scaling, NULL },
    { "mem-obj", "64-byte object: malloc+free vs pk_mempool_alloc+free",
      demo_row_mem_obj, NULL },
    { "mem-arena", "1000 allocs of 16-112 B then free all, per alloc: "
                   "malloc+free vs pk_arena+reset",
      demo_row_mem_arena, NULL },
    { "mem-ctor", "5 KiB object (zeroed buffer, mutex, table): constructed "
                  "per use vs pk_mempool ctor",
      demo_row_mem_ctor, NULL },
    /* The transport first: a terminal shows 60 characters while a row
     * runs. */
    { "pg-unix", "SELECT 1, unix socket: PQconnectdb per query vs pk_pg_exec",
      demo_row_pg_unix, demo_pg_finish },
    { "pg-tcp", "SELECT 1, TCP loopback: PQconnectdb per query vs pk_pg_exec",
      demo_row_pg_tcp, demo_pg_finish },
    { "pg-tls", "SELECT 1, TCP + TLS: PQconnectdb per query vs pk_pg_exec",
      demo_row_pg_tls, demo_pg_finish },
    { "http", "GET /, HTTP: new curl easy handle per GET vs pk_http_exec",
      demo_row_http, demo_http_finish },
    { "https", "GET /, HTTPS: new curl easy handle per GET vs pk_http_exec",
      demo_row_https, demo_http_finish },
};
#define N_ROWS (sizeof rows / sizeof rows[0])

/* ---- the table ---------------------------------------------------------- */

/* Formats ns with a unit that keeps 2-4 significant digits. */
static void
fmt_time(char *buf, size_t n, double ns)
{
    if (ns < 1e3)
        snprintf(buf, n, "%.0f ns", ns);
    else if (ns < 1e6)
        snprintf(buf, n, "%.*f \xc2\xb5s", ns < 1e4 ? 2 : 1, ns / 1e3);
    else if (ns < 1e9)
        snprintf(buf, n, "%.*f ms", ns < 1e7 ? 2 : 1, ns / 1e6);
    else
        snprintf(buf, n, "%.2f s", ns / 1e9);
}

/* A decade tick label: 1 ns, 10 ns, 100 ns, 1 µs, ... */
static void
fmt_decade(char *buf, size_t n, int d)
{
    static const char *const unit[] = { "ns", "\xc2\xb5s", "ms", "s" };
    int u = d < 0 ? 0 : d / 3 > 3 ? 3 : d / 3;
    snprintf(buf, n, "%g %s", pow(10, d - 3 * u), unit[u]);
}

/* Columns shown on a terminal: UTF-8 continuation bytes take none. */
static int
cols(const char *s)
{
    int c = 0;
    for (; *s; s++)
        c += ((unsigned char)*s & 0xc0) != 0x80;
    return c;
}

static void
print_right(const char *s, int width)
{
    for (int i = cols(s); i < width; i++)
        putchar(' ');
    fputs(s, stdout);
}

static void
print_header(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    printf("poolkit-demo %s: what pooling saves on this machine "
           "(%ld CPU%s)\n\n",
           PK_VERSION_STRING, cpus, cpus == 1 ? "" : "s");
    printf("  %-10s %14s %12s %9s   %s\n", "row", "made per use", "pooled",
           "ratio", "per operation");
    fflush(stdout); /* before the rows' progress on stderr */
}

/* A skip or failure for the same reason as the row above says so
 * instead of repeating the reason (the rows of a group share one). */
static void
print_row(const struct demo_row *row, const struct demo_result *r, int rc)
{
    static char last[sizeof r->note]; /* the reason printed last */
    char a[32], b[32], x[32];

    printf("  %-10s ", row->name);
    if (rc || r->skipped) {
        const char *how = rc ? "failed" : "skipped";
        if (last[0] && strcmp(last, r->note) == 0) {
            printf("%s: as above\n", how);
        } else {
            printf("%s: %s\n", how, r->note);
            snprintf(last, sizeof last, "%s", r->note);
        }
    } else {
        last[0] = '\0';
        fmt_time(a, sizeof a, r->per_use_ns);
        fmt_time(b, sizeof b, r->pooled_ns);
        snprintf(x, sizeof x, "%.1f\xc3\x97", r->per_use_ns / r->pooled_ns);
        print_right(a, 14);
        putchar(' ');
        print_right(b, 12);
        putchar(' ');
        print_right(x, 9);
        printf("   %s\n", row->what);
    }
    fflush(stdout);
}

/* The row's result if it ran and succeeded, else NULL. */
static const struct demo_result *
row_ok(const char *name, const int *ran, const struct demo_result *res,
       const int *rcs)
{
    for (size_t i = 0; i < N_ROWS; i++)
        if (strcmp(rows[i].name, name) == 0)
            return ran[i] && !rcs[i] && !res[i].skipped ? &res[i] : NULL;
    return NULL;
}

/* Lines that read across rows or explain one, under the table. */
static void
print_notes(const int *ran, const struct demo_result *res, const int *rcs)
{
    const struct demo_result *t = row_ok("thread", ran, res, rcs);
    const struct demo_result *p = row_ok("process", ran, res, rcs);
    char a[32], b[32];

    if (t && p) {
        fmt_time(a, sizeof a, p->per_use_ns);
        fmt_time(b, sizeof b, t->per_use_ns);
        printf("A new process (fork+waitpid, %s) costs %.1f\xc3\x97 a new "
               "thread (pthread_create+join, %s) here.\n",
               a, p->per_use_ns / t->per_use_ns, b);
    }
    if (row_ok("io-scaling", ran, res, rcs))
        printf("io-scaling: wall time per task on a pool of 1 thread vs 16; "
               "the ratio is the speed-up.\n");
    /* What rows that ran had to say (the server they measured, say). */
    for (size_t i = 0; i < N_ROWS; i++)
        if (row_ok(rows[i].name, ran, res, rcs) && res[i].note[0])
            printf("%s: %s\n", rows[i].name, res[i].note);
}

/* ---- the chart ---------------------------------------------------------- */

static void
svg_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* Draws the table as horizontal bars on a log scale: two bars per row
 * (made per use, pooled), the ratio at the right, into f, which it closes.
 * Returns 0 or errno. */
static int
write_svg(FILE *f, const int *ran, const struct demo_result *res,
          const int *rcs)
{
    const double x0 = 170, x1 = 700, bar_h = 16, row_h = 58, top = 78;
    double lo = INFINITY, hi = 0, l0, l1;
    char buf[32];
    size_t n = 0;
    double height;

    for (size_t i = 0; i < N_ROWS; i++) {
        if (!ran[i])
            continue;
        n++;
        if (rcs[i] || res[i].skipped)
            continue;
        lo = fmin(lo, fmin(res[i].per_use_ns, res[i].pooled_ns));
        hi = fmax(hi, fmax(res[i].per_use_ns, res[i].pooled_ns));
    }
    if (!(hi > 0)) {
        lo = 1;
        hi = 10;
    }
    l0 = floor(log10(lo));
    l1 = ceil(log10(hi));
    if (l1 <= l0)
        l1 = l0 + 1;
    height = top + (double)n * row_h + 40;

    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"860\" "
            "height=\"%.0f\" viewBox=\"0 0 860 %.0f\" "
            "font-family=\"sans-serif\" font-size=\"13\">\n"
            "<rect width=\"860\" height=\"%.0f\" fill=\"white\"/>\n"
            "<text x=\"20\" y=\"28\" font-size=\"16\" font-weight=\"bold\">"
            "poolkit-demo %s: cost per operation (log scale)</text>\n"
            "<rect x=\"20\" y=\"42\" width=\"12\" height=\"12\" "
            "fill=\"#d9534f\"/><text x=\"38\" y=\"53\">made per use</text>\n"
            "<rect x=\"140\" y=\"42\" width=\"12\" height=\"12\" "
            "fill=\"#2b7bb9\"/><text x=\"158\" y=\"53\">pooled "
            "(pk_pool)</text>\n",
            height, height, height, PK_VERSION_STRING);
    /* Decade grid lines. */
    for (double d = l0; d <= l1; d++) {
        double x = x0 + (d - l0) / (l1 - l0) * (x1 - x0);
        fmt_decade(buf, sizeof buf, (int)d);
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" "
                "stroke=\"#ddd\"/>\n<text x=\"%.1f\" y=\"%.0f\" "
                "text-anchor=\"middle\" fill=\"#666\" font-size=\"11\">"
                "%s</text>\n",
                x, top - 8, x, height - 30, x, height - 14, buf);
    }
    double y = top;
    for (size_t i = 0; i < N_ROWS; i++) {
        if (!ran[i])
            continue;
        fprintf(f, "<text x=\"20\" y=\"%.0f\" font-weight=\"bold\">",
                y + bar_h + 2);
        svg_text(f, rows[i].name);
        fprintf(f, "</text>\n");
        if (rcs[i] || res[i].skipped) {
            fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" fill=\"#888\">%s: ",
                    x0, y + bar_h + 2, rcs[i] ? "failed" : "skipped");
            svg_text(f, res[i].note);
            fprintf(f, "</text>\n");
            y += row_h;
            continue;
        }
        const double v[2] = { res[i].per_use_ns, res[i].pooled_ns };
        const char *color[2] = { "#d9534f", "#2b7bb9" };
        for (int k = 0; k < 2; k++) {
            double w = (log10(v[k]) - l0) / (l1 - l0) * (x1 - x0);
            double by = y + k * (bar_h + 4);
            fmt_time(buf, sizeof buf, v[k]);
            fprintf(f,
                    "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.1f\" "
                    "height=\"%.0f\" fill=\"%s\"/>\n"
                    "<text x=\"%.1f\" y=\"%.0f\" font-size=\"11\">%s</text>\n",
                    x0, by, w < 1 ? 1 : w, bar_h, color[k], x0 + w + 4,
                    by + bar_h - 4, buf);
        }
        fprintf(f,
                "<text x=\"%.0f\" y=\"%.0f\" font-size=\"15\" "
                "font-weight=\"bold\">%.1f\xc3\x97</text>\n",
                x1 + 60, y + bar_h + 4, v[0] / v[1]);
        fprintf(f, "<text x=\"20\" y=\"%.0f\" fill=\"#666\" "
                   "font-size=\"10\">", y + 2 * bar_h + 10);
        svg_text(f, rows[i].what);
        fprintf(f, "</text>\n");
        y += row_h;
    }
    fprintf(f, "</svg>\n");
    errno = 0;
    if (ferror(f) | (fclose(f) != 0))
        return errno ? errno : EIO;
    return 0;
}

/* ---- main --------------------------------------------------------------- */

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: poolkit-demo [--only NAME] [--svg FILE] [--help]\n"
            "Shows what pooling saves on this machine: each row does the "
            "same work\nmaking a resource per use and reusing one from a "
            "pool.\n"
            "  --only NAME  run one row, or a group (pg: every pg-* row)\n"
            "  --svg FILE   also write the table as an SVG bar chart\n"
            "  --help       this text\n"
            "rows:\n");
    for (size_t i = 0; i < N_ROWS; i++)
        fprintf(f, "  %-10s %s\n", rows[i].name, rows[i].what);
}

static int
bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "poolkit-demo: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\ntry 'poolkit-demo --help'\n");
    return 2;
}

/* Does --only ONLY select the row called name: the row itself, or
 * ONLY is its group (the name's part before a dash)? */
static int
selected(const char *name, const char *only)
{
    size_t n = strlen(only);
    return strcmp(name, only) == 0 ||
           (strncmp(name, only, n) == 0 && name[n] == '-');
}

/* Each distinct finish function of the rows that ran, once. */
static void
finish_rows(const int *ran)
{
    for (size_t i = 0; i < N_ROWS; i++) {
        size_t j;
        if (!ran[i] || !rows[i].finish)
            continue;
        for (j = 0; j < i; j++)
            if (ran[j] && rows[j].finish == rows[i].finish)
                break;
        if (j == i)
            rows[i].finish();
    }
}

/* Reads `--opt VALUE` or `--opt=VALUE` at argv[*i]; NULL if not opt. */
static const char *
opt_value(int argc, char **argv, int *i, const char *opt, int *missing)
{
    size_t n = strlen(opt);
    const char *a = argv[*i];

    if (strncmp(a, opt, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

int
main(int argc, char **argv)
{
    static struct demo_result res[N_ROWS];
    int ran[N_ROWS] = { 0 }, rcs[N_ROWS] = { 0 };
    const char *only = NULL, *svg = NULL;
    FILE *svg_file = NULL;
    int failed = 0;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v;
        int missing = 0;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if ((v = opt_value(argc, argv, &i, "--only", &missing)))
            only = v;
        else if ((v = opt_value(argc, argv, &i, "--svg", &missing)))
            svg = v;
        else if (missing)
            return bad_usage("option '%s' needs a value", arg);
        else
            return bad_usage("unknown option '%s'", arg);
        if (!*v)
            return bad_usage("option '%s' needs a value", arg);
    }
    if (only) {
        size_t i;
        for (i = 0; i < N_ROWS; i++)
            if (selected(rows[i].name, only))
                break;
        if (i == N_ROWS) {
            fprintf(stderr, "poolkit-demo: no row named '%s'; rows:", only);
            for (i = 0; i < N_ROWS; i++)
                fprintf(stderr, " %s", rows[i].name);
            fprintf(stderr, "\n");
            return 2;
        }
    }
    /* Open the chart file now: a bad path should not cost a full run. */
    if (svg) {
        svg_file = fopen(svg, "w");
        if (!svg_file) {
            fprintf(stderr, "poolkit-demo: cannot write %s: %s\n", svg,
                    strerror(errno));
            return 1;
        }
    }
    /* A demo that dies of SIGPIPE says nothing; a failed write says why. */
    signal(SIGPIPE, SIG_IGN);

    print_header();
    for (size_t i = 0; i < N_ROWS; i++) {
        struct demo_ctx ctx = { rows[i].name, ROW_BUDGET_S, now_ns(),
                                isatty(2), 0, 0 };
        if (only && !selected(rows[i].name, only))
            continue;
        ran[i] = 1;
        announce(&ctx, rows[i].what);
        rcs[i] = rows[i].run(&ctx, &res[i]);
        progress_clear(&ctx);
        print_row(&rows[i], &res[i], rcs[i]);
        failed |= rcs[i] != 0;
    }
    finish_rows(ran);
    printf("\nratio = made per use / pooled: how many times cheaper the "
           "pooled way is.\nEach figure is the median of alternating ~10 ms "
           "batches (about %.0f s per row).\n",
           ROW_BUDGET_S);
    print_notes(ran, res, rcs);
    if (svg) {
        int e = write_svg(svg_file, ran, res, rcs);
        if (e) {
            fprintf(stderr, "poolkit-demo: cannot write %s: %s\n", svg,
                    strerror(e));
            return 1;
        }
        printf("chart written to %s\n", svg);
    }
    return failed ? 1 : 0;
}
