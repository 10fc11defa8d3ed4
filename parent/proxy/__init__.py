"""The parent proxy: the KMS relay, dataset streaming and the job session with the enclave."""
from __future__ import annotations

from parent.proxy.credentials import CredentialsRefresher, ExpiredCredentials, RefreshPolicy
from parent.proxy.relay import KmsRelay, TargetNotAllowed, is_allowed
from parent.proxy.session import EnclaveError, ParentSession, SessionOutcome
from parent.proxy.streamer import DEFAULT_FRAME_SIZE, StreamSummary, stream_dataset

__all__ = [
    "CredentialsRefresher", "ExpiredCredentials", "RefreshPolicy",
    "KmsRelay", "TargetNotAllowed", "is_allowed",
    "EnclaveError", "ParentSession", "SessionOutcome",
    "DEFAULT_FRAME_SIZE", "StreamSummary", "stream_dataset",
]
