#!/bin/bash
# Hermetic parent instance bootstrap (Amazon Linux 2023), rendered by Terraform.
# Installs the Nitro Enclaves CLI, sizes the enclave allocator, configures the enclave's
# KMS relay (vsock-proxy, or `hermetic parent serve`) with an allow-list holding only
# this region's KMS endpoint, the budget ledger's S3 relay (vsock-proxy) with one holding
# only this region's S3 endpoint, and installs the systemd unit of the parent proxy.
# Packages come from the regional Amazon Linux repositories through the S3 gateway
# endpoint: the instance has no internet route.
set -euo pipefail
exec > >(tee -a /var/log/hermetic-bootstrap.log) 2>&1

dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel python3.11 python3.11-pip make

# ------------------------------------------------------------------ enclave allocator
# Memory and CPUs are taken from the parent at boot and given to enclaves only.
install -d -m 0755 /etc/nitro_enclaves
cat > /etc/nitro_enclaves/allocator.yaml <<'EOF'
---
memory_mib: ${enclave_memory_mib}
cpu_count: ${enclave_cpu_count}
EOF
systemctl enable --now nitro-enclaves-allocator.service

# ------------------------------------------------------------------ users and settings
useradd --system --home-dir /var/lib/hermetic --shell /sbin/nologin hermetic || true
usermod -aG ne hermetic || true
usermod -aG ne ec2-user || true
install -d -m 0755 /etc/hermetic /opt/hermetic
install -d -m 0750 -o hermetic -g hermetic /var/lib/hermetic

# Read by operators and scripts (`. /etc/hermetic/parent.env`) so every tool agrees on
# the enclave's size, CID, the relay port and the deployment's buckets.
cat > /etc/hermetic/parent.env <<'EOF'
AWS_REGION=${region}
AWS_DEFAULT_REGION=${region}
HERMETIC_KMS_HOST=${kms_endpoint_host}
HERMETIC_KMS_RELAY_PORT=${vsock_proxy_port}
HERMETIC_KMS_RELAY=${kms_relay}
HERMETIC_S3_HOST=${s3_endpoint_host}
HERMETIC_S3_RELAY_PORT=${s3_relay_port}
ENCLAVE_CPU_COUNT=${enclave_cpu_count}
ENCLAVE_MEMORY_MIB=${enclave_memory_mib}
ENCLAVE_CID=${enclave_cid}
HERMETIC_EIF=/opt/hermetic/hermetic.eif
HERMETIC_SEALED_BUCKET=${sealed_bucket}
HERMETIC_RESULTS_BUCKET=${results_bucket}
HERMETIC_ARTIFACTS_BUCKET=${artifacts_bucket}
EOF
chmod 0644 /etc/hermetic/parent.env

# ------------------------------------------------------------------ KMS relay allow-lists
# The enclave's only way out: TCP over vsock port ${vsock_proxy_port} to the regional KMS
# endpoint, which private DNS resolves to the KMS interface endpoint. Each allow-list
# holds exactly one entry, so the relay cannot be pointed anywhere else.
cat > /etc/nitro_enclaves/vsock-proxy.yaml <<'EOF'
allowlist:
- {address: ${kms_endpoint_host}, port: 443}
EOF
cat > /etc/hermetic/kms-allowlist <<'EOF'
${kms_endpoint_host}:443
EOF
# The budget ledger's way out: vsock port ${s3_relay_port} to the regional S3 endpoint
# (through the S3 gateway endpoint). Its own allow-list, again with one entry.
cat > /etc/nitro_enclaves/vsock-proxy-s3.yaml <<'EOF'
allowlist:
- {address: ${s3_endpoint_host}, port: 443}
EOF

# Two interchangeable relays for vsock port ${vsock_proxy_port}; Conflicts= keeps them
# exclusive (the port can have one listener), and both conflict with AWS's own
# nitro-enclaves-vsock-proxy.service from aws-nitro-enclaves-cli, which serves the same
# port. systemd applies Conflicts= both ways: starting AWS's unit stops ours, and
# starting ours stops it; with both enabled at boot, ours starts and AWS's does not.
cat > /etc/systemd/system/hermetic-vsock-proxy.service <<'EOF'
[Unit]
Description=vsock-proxy for the Hermetic enclave (KMS only)
After=network-online.target nitro-enclaves-allocator.service
Wants=network-online.target
Conflicts=hermetic-parent.service nitro-enclaves-vsock-proxy.service

[Service]
Type=simple
ExecStart=/usr/bin/vsock-proxy ${vsock_proxy_port} ${kms_endpoint_host} 443 --config /etc/nitro_enclaves/vsock-proxy.yaml
Restart=on-failure
RestartSec=5
DynamicUser=yes
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_VSOCK AF_UNIX
CapabilityBoundingSet=
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
EOF

# The S3 relay has a vsock port of its own, so it runs beside whichever KMS relay is chosen.
cat > /etc/systemd/system/hermetic-s3-vsock-proxy.service <<'EOF'
[Unit]
Description=vsock-proxy for the Hermetic enclave (S3 only: the budget ledger)
After=network-online.target nitro-enclaves-allocator.service
Wants=network-online.target

[Service]
Type=simple
ExecStart=/usr/bin/vsock-proxy ${s3_relay_port} ${s3_endpoint_host} 443 --config /etc/nitro_enclaves/vsock-proxy-s3.yaml
Restart=on-failure
RestartSec=5
DynamicUser=yes
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_VSOCK AF_UNIX
CapabilityBoundingSet=
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
EOF

# The parent proxy: untrusted by design and still locked down; it relays ciphertext only.
# It logs one JSON object per line to the journal (journalctl -u hermetic-parent).
cat > /etc/systemd/system/hermetic-parent.service <<'EOF'
[Unit]
Description=Hermetic parent proxy (hermetic parent serve: the enclave's KMS relay)
After=network-online.target nitro-enclaves-allocator.service
Wants=network-online.target
Conflicts=hermetic-vsock-proxy.service nitro-enclaves-vsock-proxy.service
ConditionPathExists=/opt/hermetic/venv/bin/hermetic

[Service]
Type=simple
User=hermetic
Group=hermetic
EnvironmentFile=/etc/hermetic/parent.env
WorkingDirectory=/var/lib/hermetic
ExecStart=/opt/hermetic/venv/bin/hermetic parent serve --kms-relay vsock://3:${vsock_proxy_port} --region ${region} --allowlist /etc/hermetic/kms-allowlist
Restart=on-failure
RestartSec=5
StateDirectory=hermetic
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
DevicePolicy=closed
DeviceAllow=/dev/vsock rw
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_VSOCK AF_UNIX
LockPersonality=yes
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
EOF

# ------------------------------------------------------------------ release installer
# The EIF, the source tree and the parent's wheels are uploaded to the artifacts
# bucket after `terraform apply` (docs/DEPLOY.md); this pulls and installs them.
cat > /usr/local/sbin/hermetic-install <<'EOF'
#!/bin/bash
set -euo pipefail
release="s3://${artifacts_bucket}/release"
staging=$(mktemp -d /opt/hermetic/.release.XXXXXX)
trap 'rm -rf "$staging"' EXIT
aws s3 cp --region ${region} --recursive "$release/" "$staging/"
for f in hermetic.eif measurements.json hermetic-src.tar.gz; do
  test -f "$staging/$f" || { echo "hermetic-install: $release/$f is missing" >&2; exit 1; }
done
rm -rf /opt/hermetic/src /opt/hermetic/venv /opt/hermetic/public
install -d -m 0755 /opt/hermetic/src
tar -xzf "$staging/hermetic-src.tar.gz" -C /opt/hermetic/src
python3.11 -m venv /opt/hermetic/venv
/opt/hermetic/venv/bin/pip install --no-index --find-links "$staging/wheelhouse" \
  -r /opt/hermetic/src/requirements-build.txt -r /opt/hermetic/src/requirements.txt
/opt/hermetic/venv/bin/pip install --no-index --no-deps --no-build-isolation /opt/hermetic/src
install -m 0644 "$staging/hermetic.eif" /opt/hermetic/hermetic.eif
install -m 0644 "$staging/measurements.json" /opt/hermetic/measurements.json
if [ -d "$staging/public" ]; then cp -r "$staging/public" /opt/hermetic/public; fi
/opt/hermetic/venv/bin/hermetic measure-eif /opt/hermetic/hermetic.eif
if systemctl is-enabled --quiet hermetic-parent.service; then systemctl restart hermetic-parent.service; fi
echo "hermetic-install: installed /opt/hermetic/venv and /opt/hermetic/hermetic.eif"
EOF
chmod 0750 /usr/local/sbin/hermetic-install

# ------------------------------------------------------------------ start the relays
systemctl daemon-reload
systemctl enable --now hermetic-s3-vsock-proxy.service
if [ "${kms_relay}" = "hermetic" ]; then
  systemctl enable hermetic-parent.service # starts once hermetic-install has run
else
  systemctl enable --now hermetic-vsock-proxy.service
fi
echo "hermetic bootstrap done: upload a release and run hermetic-install (docs/DEPLOY.md)"
