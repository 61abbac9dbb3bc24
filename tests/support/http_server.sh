#!/usr/bin/env bash
# tests/support/http_server.sh start|stop|reload|restart|clean|probe DIR -
# a throwaway nginx for the HTTP integration tests, the demo and the bench.
#
#   start DIR    first time: writes DIR/nginx.conf, a self-signed
#                certificate (DIR/cert.pem, DIR/key.pem; its own CA, so
#                DIR/cert.pem is the CA file a client must be given) and
#                the content, then starts nginx; later (after stop) starts
#                it again on the same ports. Prints "HTTP_PORT HTTPS_PORT"
#                and writes DIR/ports. nginx listens on 127.0.0.1 only;
#                its TLS port speaks HTTP/1.1 and HTTP/2 (ALPN).
#   stop DIR     stops it (nginx -s quit, then waits for the pid to go)
#   reload DIR   nginx -s reload (new workers; old keep-alive connections
#                are closed by the old workers once idle)
#   restart DIR  stop, then start
#   clean DIR    stops it if it runs and removes DIR
#   probe -      exit 0 if nginx and openssl are here, else say why, exit 3
#
# Locations (any method):
#   /            200 "hello\n"
#   /short       200 "short\n", keepalive_timeout 1s on its connection
#   /ka          200 "ka\n", keepalive_timeout 4s, and a `Keep-Alive:
#                timeout=2` header that says less than nginx keeps
#   /drop        closes the connection without a response (return 444)
#   /big         a 10 MiB file
#   /slow        a 256 KiB file sent at 64 KiB/s (4 s)
#   /redirect    302 to /
#   /cookie      200, and Set-Cookie: pk=1
# Access log DIR/access.log, one line a request:
#   method uri status connection connection_requests ssl_session_reused
#   cookie ("-" when none was sent)
# ($connection is nginx's connection serial number: two requests with the
# same one went over the same connection.)
#
# As root, nginx's workers would run as nobody: the config says `user
# root` instead, so they can read DIR (mode 700) and write its logs.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop|reload|restart|clean|probe DIR" >&2
    exit 2
fi

nginx=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)
if [ "$cmd" = probe ]; then
    [ -n "$nginx" ] || { echo "http_server: nginx not found (apt-get install nginx)" >&2; exit 3; }
    command -v openssl >/dev/null 2>&1 || { echo "http_server: openssl not found (apt-get install openssl)" >&2; exit 3; }
    echo "$nginx"
    exit 0
fi
[ -n "$nginx" ] || { echo "http_server: nginx not found (apt-get install nginx)" >&2; exit 3; }

conf=$dir/nginx.conf
pidf=$dir/nginx.pid

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running() { [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }

make_content() {
    mkdir -p "$dir/www" "$dir/tmp"
    printf 'hello\n' >"$dir/www/index.html"
    head -c $((10 * 1024 * 1024)) /dev/zero | tr '\0' 'x' >"$dir/www/big"
    head -c $((256 * 1024)) /dev/zero | tr '\0' 'y' >"$dir/www/slow"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
        -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1 ||
        { echo "http_server: openssl could not make a certificate" >&2; exit 1; }
}

write_conf() {
    local http=$1 https=$2 user_line=
    [ "$(id -u)" -eq 0 ] && user_line="user root;"
    cat >"$conf" <<EOF
$user_line
worker_processes 1;
daemon on;
pid $pidf;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    log_format pk '\$request_method \$uri \$status \$connection \$connection_requests \$ssl_session_reused \$http_cookie';
    access_log $dir/access.log pk;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_timeout 60s;
    keepalive_requests 100000;
    ssl_certificate $dir/cert.pem;
    ssl_certificate_key $dir/key.pem;
    ssl_session_cache shared:pk:1m;
    ssl_session_tickets off;
    client_max_body_size 64m;
    server {
        listen 127.0.0.1:$http;
        listen 127.0.0.1:$https ssl http2;
        root $dir/www;
        location = / { return 200 "hello\n"; }
        location = /short { keepalive_timeout 1s; return 200 "short\n"; }
        location = /ka { keepalive_timeout 4s 2s; return 200 "ka\n"; }
        location = /cookie { add_header Set-Cookie "pk=1; Path=/"; return 200 "cookie\n"; }
        location = /drop { return 444; }
        location = /redirect { return 302 /; }
        location = /big { }
        location = /slow { limit_rate 64k; }
    }
}
EOF
}

do_start() {
    local http https tries
    mkdir -p "$dir"
    chmod 700 "$dir"
    [ -f "$dir/cert.pem" ] || make_content
    if running; then
        cat "$dir/ports"
        return 0
    fi
    for tries in 1 2 3 4 5 6 7 8 9 10; do
        if [ -f "$dir/ports" ]; then
            read -r http https <"$dir/ports"
        else
            http=$((20000 + RANDOM % 30000))
            https=$((http + 1))
            { port_busy "$http" || port_busy "$https"; } && continue
        fi
        write_conf "$http" "$https"
        if "$nginx" -c "$conf" -p "$dir" -e "$dir/error.log" >/dev/null 2>&1; then
            echo "$http $https" >"$dir/ports"
            break
        fi
        [ -f "$dir/ports" ] && { echo "http_server: nginx could not start on $http/$https:" >&2; tail -n 20 "$dir/error.log" >&2; exit 1; }
        http=
    done
    [ -n "${http:-}" ] || { echo "http_server: no free ports after $tries tries" >&2; tail -n 20 "$dir/error.log" >&2 || true; exit 1; }
    for _ in $(seq 1 100); do
        port_busy "$http" && port_busy "$https" && break
        sleep 0.05
    done
    echo "$http $https"
}

do_stop() {
    running || return 0
    local pid
    pid=$(cat "$pidf")
    "$nginx" -c "$conf" -p "$dir" -e "$dir/error.log" -s quit >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null || true
}

case $cmd in
start) do_start ;;
stop) do_stop ;;
reload) running && "$nginx" -c "$conf" -p "$dir" -e "$dir/error.log" -s reload ;;
restart) do_stop; do_start ;;
clean)
    do_stop
    rm -rf "$dir"
    ;;
*) echo "usage: $0 start|stop|reload|restart|clean|probe DIR" >&2; exit 2 ;;
esac
