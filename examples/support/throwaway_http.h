/* examples/support/throwaway_http.h - a throwaway nginx for the examples
 * and the demo, started and removed through tests/support/http_server.sh.
 *
 * throwaway_http_start starts nginx on two free ports of 127.0.0.1, plain
 * HTTP and HTTPS, with a self-signed certificate made for it (its own CA:
 * give ca_file to the client and verification stays on), in a directory
 * of its own, with a guard process that removes it however the program
 * ends (examples/support/throwaway.h). http_server.sh's top comment lists
 * what it serves: / ("hello\n"), /big (10 MiB), /slow (256 KiB at
 * 64 KiB/s), /short, /drop, /redirect.
 *
 * Uses no libcurl, so it builds wherever the examples build. */
#ifndef POOLKIT_EXAMPLES_THROWAWAY_HTTP_H
#define POOLKIT_EXAMPLES_THROWAWAY_HTTP_H

#include <stddef.h>

#include "throwaway.h"

struct throwaway_http {
    struct throwaway t; /* t.dir: http_server.sh's DIR */
    int http_port;      /* http://127.0.0.1:http_port/ */
    int https_port;     /* https://127.0.0.1:https_port/ */
    char ca_file[96];   /* t.dir/cert.pem: the CA that signed the server's
                           certificate (the certificate itself) */
};

/* Starts nginx. Returns THROWAWAY_OK (h filled: stop it with
 * throwaway_http_stop), THROWAWAY_ABSENT (nginx, openssl or
 * http_server.sh is not here; nothing is left behind) or THROWAWAY_FAILED
 * (nothing is left behind either); msg says why on failure.
 * http_server.sh is found through $PK_HTTP_SERVER, then tests/support/
 * under the working directory, then the source tree the program was built
 * in. */
int throwaway_http_start(struct throwaway_http *h, char *msg, size_t n);

/* Stops nginx and removes its directory, waiting until that is done. Safe
 * to call twice. */
void throwaway_http_stop(struct throwaway_http *h);

#endif /* POOLKIT_EXAMPLES_THROWAWAY_HTTP_H */
