# Shared setup of the side-by-side benchmarks, sourced by bench/peers.sh and bench/idle.sh
# (not run on its own): installs the tools, makes the TLS certificate, and writes the
# backend, nginx and HAProxy configs of one mode so that every script measures the same
# proxies configured the same way.
#
#   bench_tools                  installs nginx, haproxy, wrk, h2load, ab, openssl, taskset
#                                with apt-get when one is missing
#   bench_tls_cert [DIR]         an ECDSA P-256 certificate for localhost/127.0.0.1 in DIR
#                                (default target/bench-tls): cert.pem, key.pem; kept if there
#   bench_port_free PORT         fails when something already listens on 127.0.0.1:PORT (the
#                                gateway's SO_REUSEPORT socket would silently share it)
#   bench_backend_conf W [PORT]  writes W/backend.conf: one nginx worker answering 1 KiB on
#                                127.0.0.1:PORT (default 9101)
#   bench_configs W MODE         writes W/backend.conf, W/nginx.conf, W/haproxy.cfg (and
#                                W/haproxy.pem in TLS modes) for MODE: plain, tls, tls-new,
#                                tls-resume, h2c, h2
#
# Ports: backend 127.0.0.1:9101, nginx 9201, HAProxy 9202 (the gateway's configs use 9200).
# Settings read by bench_configs (defaults are what bench/peers.sh measures):
#   MAXCONN (4000)          connections a proxy accepts (HAProxy maxconn, file-descriptor
#                           limits; nginx worker_connections 4096 unset, 2 x MAXCONN set)
#   IDLE_TIMEOUT (unset)    when set (e.g. 600s), the idle keep-alive timeout of nginx and
#                           HAProxy on the client side; otherwise their defaults (nginx 75s,
#                           HAProxy `timeout client 30s`)
#
# Equivalence of the proxies, in every mode:
#   - one worker each (nginx master_process off, HAProxy nbthread 1; the gateway's configs
#     say workers: 1), no access log;
#   - the upstream side is plain HTTP/1.1 with keep-alive (nginx `keepalive 128` with
#     HTTP/1.1 and an empty Connection header, HAProxy `http-reuse always`);
#   - TLS modes: TLS 1.3 only, the same ECDSA P-256 certificate, ALPN offering h2 and
#     http/1.1 (nginx `ssl http2`, HAProxy `alpn h2,http/1.1`, the gateway `tls.h2: true`).
#     Clients that send no ALPN (wrk, ab) get HTTP/1.1 from all three; h2load asks for h2.
#     Cipher suite and key exchange are the client's first choice on all three
#     (TLS_AES_256_GCM_SHA384 or TLS_AES_128_GCM_SHA256, X25519); peers.sh prints them;
#   - h2c: prior-knowledge HTTP/2 on a plain listener (nginx `listen ... http2`, HAProxy
#     `proto h2`; the gateway's plain listener accepts the preface by default).

bench_tools() {
  export PATH=$PATH:/usr/sbin
  local t need=()
  for t in nginx haproxy wrk h2load ab openssl taskset; do command -v $t >/dev/null || need+=($t); done
  [ ${#need[@]} -eq 0 ] && return 0
  local pk="nginx haproxy wrk nghttp2-client apache2-utils openssl util-linux"
  echo "installing: $pk" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pk >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pk >/dev/null; }
}

bench_tls_cert() {
  local dir=${1:-target/bench-tls}
  mkdir -p "$dir"
  [ -f "$dir/cert.pem" ] && [ -f "$dir/key.pem" ] && return 0
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" -days 3650 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1
}

bench_port_free() {
  if ss -Htln "sport = :$1" | grep -q .; then
    echo "127.0.0.1:$1 is already in use:" >&2; ss -tlnp "sport = :$1" >&2; return 1
  fi
}

bench_backend_conf() {
  local W=$1 port=${2:-9101} body
  body=$(head -c 1024 /dev/zero | tr '\0' 'x')
  mkdir -p "$W/logs"
  cat > "$W/backend.conf" <<NG
worker_processes 1; daemon off; master_process off; pid $W/backend.pid; error_log $W/logs/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$port; location / { default_type text/plain; return 200 "$body"; } } }
NG
}

bench_configs() {
  local W=$1 mode=$2 tls_dir
  local maxconn=${MAXCONN:-4000} nofile hard
  # File descriptors: nginx asks for them itself (capped at the hard limit, which only
  # CAP_SYS_RESOURCE can raise); HAProxy asks for two per connection and, with a limit set
  # here, keeps going with what it gets (`no strict-limits`) instead of refusing to start.
  nofile=$((maxconn + 1000)); hard=$(ulimit -Hn)
  [ "$hard" = unlimited ] || [ $nofile -le $hard ] || nofile=$hard
  local ha_limits=""; [ -z "${MAXCONN:-}" ] || ha_limits="no strict-limits"
  # nginx closes idle keep-alive connections once fewer than 1/16 of worker_connections are
  # free, so with a limit set here it gets twice as many slots (they cost no fds).
  local ngx_conns=4096; [ -z "${MAXCONN:-}" ] || ngx_conns=$((maxconn * 2))
  mkdir -p "$W/logs"
  tls_dir=$(cd "${TLS_DIR:-target/bench-tls}" 2>/dev/null && pwd) || tls_dir=
  local ngx_listen ha_bind
  case $mode in
    plain) ngx_listen="listen 127.0.0.1:9201;"; ha_bind="bind 127.0.0.1:9202";;
    h2c) ngx_listen="listen 127.0.0.1:9201 http2;"; ha_bind="bind 127.0.0.1:9202 proto h2";;
    tls|tls-new|tls-resume|h2)
      [ -n "$tls_dir" ] && [ -f "$tls_dir/cert.pem" ] || { echo "no certificate: run bench_tls_cert first" >&2; return 1; }
      cat "$tls_dir/cert.pem" "$tls_dir/key.pem" > "$W/haproxy.pem"
      ngx_listen="listen 127.0.0.1:9201 ssl http2; ssl_protocols TLSv1.3;
    ssl_certificate $tls_dir/cert.pem; ssl_certificate_key $tls_dir/key.pem;"
      ha_bind="bind 127.0.0.1:9202 ssl crt $W/haproxy.pem ssl-min-ver TLSv1.3 alpn h2,http/1.1";;
    *) echo "unknown mode $mode" >&2; return 2;;
  esac
  local ngx_idle="" ha_idle="timeout client 30s"
  if [ -n "${IDLE_TIMEOUT:-}" ]; then
    ngx_idle="keepalive_timeout $IDLE_TIMEOUT;"
    ha_idle="timeout client $IDLE_TIMEOUT
  timeout http-keep-alive $IDLE_TIMEOUT"
  fi
  bench_backend_conf "$W" 9101
  cat > "$W/nginx.conf" <<NG
worker_processes 1; daemon off; master_process off; pid $W/nginx.pid; error_log $W/logs/nginx.err;
worker_rlimit_nofile $nofile;
events { worker_connections $ngx_conns; }
http { access_log off; keepalive_requests 1000000; $ngx_idle
  upstream be { server 127.0.0.1:9101; keepalive 128; }
  server { $ngx_listen
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NG
  cat > "$W/haproxy.cfg" <<HA
global
  nbthread 1
  maxconn $maxconn
  $ha_limits
defaults
  mode http
  timeout connect 5s
  $ha_idle
  timeout server 30s
  http-reuse always
frontend fe
  $ha_bind
  default_backend be
backend be
  server s1 127.0.0.1:9101
HA
}
