-- wrk script for bench/peers.sh MODE=tls-resume: every request asks the server to close the
-- connection, so wrk opens a new one (resuming its TLS session) for the next request.
wrk.headers["Connection"] = "close"
