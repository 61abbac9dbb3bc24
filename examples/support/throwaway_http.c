/* examples/support/throwaway_http.c - a throwaway nginx through
 * tests/support/http_server.sh (see the header): throwaway.c starts it
 * with its guard; this file reads the ports http_server.sh wrote and
 * names the CA file it made. */
#include "throwaway_http.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const struct throwaway_kind http_kind = {
    .script = "http_server.sh", .env = "PK_HTTP_SERVER", .name = "http",
    .open_top = 0, /* as root nginx's workers run as root (its config) */
};

void
throwaway_http_stop(struct throwaway_http *h)
{
    throwaway_stop(&h->t);
}

/* Reads "HTTP_PORT HTTPS_PORT" from DIR/ports; returns 0 or -1. */
static int
read_ports(struct throwaway_http *h)
{
    char path[sizeof h->t.dir + 8];
    FILE *f;
    int ok;

    snprintf(path, sizeof path, "%s/ports", h->t.dir);
    f = fopen(path, "r");
    if (!f)
        return -1;
    ok = fscanf(f, "%d %d", &h->http_port, &h->https_port) == 2 &&
         h->http_port > 0 && h->https_port > 0;
    fclose(f);
    return ok ? 0 : -1;
}

int
throwaway_http_start(struct throwaway_http *h, char *msg, size_t n)
{
    int rc;

    memset(h, 0, sizeof *h);
    rc = throwaway_start(&h->t, &http_kind, msg, n);
    if (rc != THROWAWAY_OK)
        return rc;
    snprintf(h->ca_file, sizeof h->ca_file, "%s/cert.pem", h->t.dir);
    if (read_ports(h) != 0 || access(h->ca_file, R_OK) != 0) {
        throwaway_message(&h->t, msg, n);
        if (!msg[0])
            snprintf(msg, n, "http_server.sh start left no ports or no "
                     "certificate in %s", h->t.dir);
        throwaway_http_stop(h);
        return THROWAWAY_FAILED;
    }
    return THROWAWAY_OK;
}
