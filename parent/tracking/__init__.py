"""Host-side tracking of what the enclave released: TensorBoard event files and MLflow runs.

Trackers are fed only from the messages the parent already receives (`feed.ReleaseFeed`),
so a value can reach a tracker only after the enclave's egress gate let it out. The
enclave never imports this package nor the tracking libraries (import-linter contract).
Nothing is re-exported here: `hermetic train` names the default MLflow URI without
loading the message types.
"""
