#!/usr/bin/env bash
# make run-enclave: start the enclave from eif/hermetic.eif, then the parent's KMS relay
# (`hermetic parent serve`) and the budget ledger's S3 relay (AWS's vsock-proxy on vsock
# port 8001 to s3.REGION.amazonaws.com:443) in the background.
#   env: CPUS (2), MEMORY_MIB (8192), CID (16), EIF (eif/hermetic.eif), AWS_REGION
#        (us-east-1), DEBUG_MODE (1 = nitro-cli --debug-mode: PCRs read as zero, KMS
#        will refuse), STATE (.hermetic: enclave.json, parent-serve.pid/.log),
#        ALLOWLIST (file for parent serve; default: only kms.REGION.amazonaws.com:443),
#        HERMETIC (default .venv/bin/hermetic), RELAY (1; 0 = another relay already owns
#        vsock port 8000, e.g. the AWS vsock-proxy unit the Terraform user data installs),
#        S3_RELAY (1; 0 = do not start the S3 relay: S3 ledgers unreachable, unless the
#        Terraform unit hermetic-s3-vsock-proxy serves vsock port 8001)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cpus=${CPUS:-2}
memory=${MEMORY_MIB:-8192}
cid=${CID:-16}
eif=${EIF:-$root/eif/hermetic.eif}
region=${AWS_REGION:-us-east-1}
state=${STATE:-$root/.hermetic}
hermetic=${HERMETIC:-$root/.venv/bin/hermetic}

if ! command -v nitro-cli >/dev/null 2>&1; then
    echo "run-enclave: nitro-cli not found: run this on a Nitro Enclaves-enabled instance" \
         "with aws-nitro-enclaves-cli installed (see eif/README.md)" >&2
    exit 1
fi
if [ ! -f "$eif" ]; then
    echo "run-enclave: $eif not found: run 'make eif' first" >&2
    exit 1
fi
# Vsock port 8000 has one listener. On an instance set up by the Terraform user data a
# systemd unit already serves it (hermetic-vsock-proxy or hermetic-parent), or AWS's own
# nitro-enclaves-vsock-proxy may: then our parent serve could not bind it. Say so before
# the enclave starts.
if [ "${RELAY:-1}" != 0 ] && command -v systemctl >/dev/null 2>&1; then
    for unit in hermetic-vsock-proxy hermetic-parent nitro-enclaves-vsock-proxy; do
        if systemctl is-active --quiet "$unit.service" 2>/dev/null; then
            echo "run-enclave: $unit.service already serves vsock port 8000: run with RELAY=0" \
                 "(make run-enclave RELAY=0 ...), or stop it first (systemctl stop $unit)" >&2
            exit 1
        fi
    done
fi
mkdir -p "$state"
pidfile=$state/parent-serve.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "run-enclave: parent serve already runs (PID $(cat "$pidfile")): 'make stop-enclave' first" >&2
    exit 1
fi
if [ -f "$state/s3-relay.pid" ] && kill -0 "$(cat "$state/s3-relay.pid")" 2>/dev/null; then
    echo "run-enclave: the S3 relay already runs (PID $(cat "$state/s3-relay.pid")): 'make stop-enclave' first" >&2
    exit 1
fi

debug=()
if [ "${DEBUG_MODE:-0}" = 1 ]; then
    echo "run-enclave: DEBUG MODE: the console is readable and PCR0/1/2 are all zero;" \
         "key policies will (rightly) refuse this enclave" >&2
    debug=(--debug-mode)
fi
nitro-cli run-enclave --cpu-count "$cpus" --memory "$memory" --enclave-cid "$cid" \
    --eif-path "$eif" "${debug[@]}" > "$state/enclave.json.tmp"
mv -f "$state/enclave.json.tmp" "$state/enclave.json"
cat "$state/enclave.json"

# The enclave reads and writes its budget ledgers in S3 through vsock port 8001: without
# a relay there, every job on a sealed dataset is refused (its ledger is unreachable).
s3_host=s3.$region.amazonaws.com
s3_pidfile=$state/s3-relay.pid
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet hermetic-s3-vsock-proxy.service 2>/dev/null; then
    echo "run-enclave: hermetic-s3-vsock-proxy.service serves the S3 relay (vsock port 8001)" >&2
elif [ "${S3_RELAY:-1}" = 0 ]; then
    echo "run-enclave: S3_RELAY=0: no S3 relay on vsock port 8001; jobs on S3 ledgers will be refused" >&2
elif ! command -v vsock-proxy >/dev/null 2>&1; then
    echo "run-enclave: vsock-proxy not found (aws-nitro-enclaves-cli): no S3 relay on vsock port 8001;" \
         "jobs on S3 ledgers will be refused" >&2
else
    # One allow-list entry: the relay can reach the regional S3 endpoint and nothing else.
    printf 'allowlist:\n- {address: %s, port: 443}\n' "$s3_host" > "$state/vsock-proxy-s3.yaml"
    nohup vsock-proxy 8001 "$s3_host" 443 --config "$state/vsock-proxy-s3.yaml" \
        </dev/null >/dev/null 2>>"$state/s3-relay.log" &
    echo $! > "$s3_pidfile"
    echo "run-enclave: S3 relay started (vsock port 8001 -> $s3_host:443, PID $!), logs in $state/s3-relay.log" >&2
fi

if [ "${RELAY:-1}" = 0 ]; then
    echo "run-enclave: RELAY=0: not starting parent serve; vsock port 8000 must already be served" >&2
    exit 0
fi
allow=()
if [ -n "${ALLOWLIST:-}" ]; then
    allow=(--allowlist "$ALLOWLIST")
fi
nohup "$hermetic" parent serve --kms-relay vsock://3:8000 --region "$region" "${allow[@]}" \
    --pid-file "$pidfile" --log-file "$state/parent-serve.log" </dev/null >/dev/null 2>>"$state/parent-serve.log" &
echo "run-enclave: parent serve started (PID $!), logs in $state/parent-serve.log" >&2
echo "run-enclave: submit jobs with: $hermetic parent run --enclave vsock://$cid:5000 --kms-relay tcp://127.0.0.1:0 --kms-target kms.$region.amazonaws.com:443 --region $region --dataset ID=s3://... --spec job.toml" >&2
