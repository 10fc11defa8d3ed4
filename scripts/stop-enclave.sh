#!/usr/bin/env bash
# make stop-enclave: terminate the enclave started by run-enclave.sh (or all of them)
# and stop `hermetic parent serve` and the S3 relay (vsock-proxy) by their PID files.
#   env: STATE (.hermetic), ALL (1 = nitro-cli terminate-enclave --all)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${STATE:-$root/.hermetic}
pidfile=$state/parent-serve.pid
status=0

if command -v nitro-cli >/dev/null 2>&1; then
    enclave_id=""
    if [ -f "$state/enclave.json" ]; then
        enclave_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("EnclaveID", ""))' \
            "$state/enclave.json" 2>/dev/null || true)
    fi
    if [ "${ALL:-0}" = 1 ]; then
        nitro-cli terminate-enclave --all || status=1
    elif [ -n "$enclave_id" ]; then
        nitro-cli terminate-enclave --enclave-id "$enclave_id" || status=1
    else
        echo "stop-enclave: no $state/enclave.json: nothing to terminate (ALL=1 terminates every enclave)" >&2
    fi
    [ $status = 0 ] && rm -f "$state/enclave.json"
else
    echo "stop-enclave: nitro-cli not found: no enclave to terminate here" >&2
fi

if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    # Only signal the process if it still is our parent serve (PIDs get reused).
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "parent serve"; then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop-enclave: parent serve (PID $pid) did not stop within 10 s" >&2
            status=1
        else
            echo "stop-enclave: parent serve (PID $pid) stopped" >&2
        fi
    else
        echo "stop-enclave: stale PID file $pidfile (no parent serve with PID $pid)" >&2
    fi
    [ $status = 0 ] && rm -f "$pidfile"
else
    echo "stop-enclave: no $pidfile: parent serve is not running" >&2
fi

s3_pidfile=$state/s3-relay.pid
if [ -f "$s3_pidfile" ]; then
    pid=$(cat "$s3_pidfile")
    # Only signal the process if it still is the S3 relay run-enclave started (PIDs get reused).
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "vsock-proxy 8001 "; then
        kill -TERM "$pid" && echo "stop-enclave: S3 relay (PID $pid) stopped" >&2
    else
        echo "stop-enclave: stale PID file $s3_pidfile (no S3 relay with PID $pid)" >&2
    fi
    rm -f "$s3_pidfile"
fi
exit $status
