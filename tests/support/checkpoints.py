"""A checkpoint authenticator for tests that seal checkpoints outside any enclave."""
from __future__ import annotations

from enclave.hazmat.checkpoint_key import CheckpointAuthKey
from enclave.training.checkpoint import CheckpointAuthenticator, CheckpointBinding

# What an enclave would derive from a dataset whose data key is all zeros.
TEST_AUTH = CheckpointAuthenticator(
    CheckpointAuthKey([("test-dataset", bytes(32))]),
    CheckpointBinding(pcr0="00" * 48, datasets=(("test-dataset", "11" * 32),)),
)
# A well-formed auth_tag for contexts built by hand.
TAG = "ab" * 32
