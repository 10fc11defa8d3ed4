"""The egress gate: what may leave the enclave, and that a refusal sends nothing at all."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.egress import AUDIT_FIELDS, RELEASABLE_METRIC_KINDS, EgressGate, EgressRefused
from enclave.transport.errors import TransportTimeout
from enclave.transport.messages import (
    REGISTRY,
    AuditEvent,
    AuditLog,
    CertificateIssued,
    CheckpointBegin,
    CheckpointData,
    CheckpointEnd,
    Credentials,
    DatasetBegin,
    DatasetData,
    DatasetEnd,
    Error,
    Goodbye,
    Hello,
    JobResult,
    JobStart,
    Message,
    MetricRelease,
    TrainingJob,
    TrainingProgress,
)
from tests.support.channels import MemoryChannel, channel_pair
from tests.support.message_strategies import STRATEGIES

# Inbound-only types: credentials, the job, its spec and the relayed (sealed) data.
REFUSED = {Credentials, JobStart, TrainingJob, DatasetBegin, DatasetData, DatasetEnd}
# Leave unconditionally; AuditEvent, MetricRelease and AuditLog only under their rules
# (AuditLog's: tests/enclave/audit/test_gate.py).
ALLOWED = {Hello, Goodbye, Error, JobResult, TrainingProgress, CheckpointBegin, CheckpointData,
           CheckpointEnd, CertificateIssued}
RULED = {AuditEvent, MetricRelease, AuditLog}


def gate_and_parent() -> tuple[EgressGate, MemoryChannel]:
    enclave_end, parent_end = channel_pair()
    return EgressGate(enclave_end), parent_end


def assert_nothing_sent(parent: MemoryChannel) -> None:
    with pytest.raises(TransportTimeout):
        parent.recv(timeout=0)


def test_every_message_type_is_classified() -> None:
    # A new message type must be placed in one of these sets (and the gate) on purpose.
    assert REFUSED | ALLOWED | RULED == set(REGISTRY.types().values())
    assert not (REFUSED & ALLOWED or REFUSED & RULED or ALLOWED & RULED)


@pytest.mark.parametrize("cls", sorted(REFUSED, key=lambda c: c.TYPE_ID), ids=lambda c: c.__name__)
def test_inbound_types_never_leave(cls: type[Message]) -> None:
    @settings(max_examples=20, deadline=None)
    @given(STRATEGIES[cls])
    def check(msg: Message) -> None:
        gate, parent = gate_and_parent()
        with pytest.raises(EgressRefused, match=f"{cls.__name__} may not leave the enclave"):
            gate.send(msg)
        assert_nothing_sent(parent)

    check()


@pytest.mark.parametrize("cls", sorted(ALLOWED, key=lambda c: c.TYPE_ID), ids=lambda c: c.__name__)
def test_allowed_types_pass_unchanged(cls: type[Message]) -> None:
    @settings(max_examples=20, deadline=None)
    @given(STRATEGIES[cls])
    def check(msg: Message) -> None:
        gate, parent = gate_and_parent()
        gate.send(msg)
        assert parent.recv(timeout=0) == msg

    check()


def _value(field: str) -> Any:
    return 3 if field in {"records", "steps", "resumed_at"} else 0.5 if "epsilon" in field else "x"


@pytest.mark.parametrize("kind", sorted(AUDIT_FIELDS))
def test_each_audit_kind_may_carry_its_fields(kind: str) -> None:
    gate, parent = gate_and_parent()
    fields = {name: _value(name) for name in sorted(AUDIT_FIELDS[kind])}
    gate.audit(kind, **fields)
    gate.audit(kind)  # a subset, here none, is fine too
    assert parent.recv(timeout=0) == AuditEvent(kind, fields)
    assert parent.recv(timeout=0) == AuditEvent(kind, {})


@pytest.mark.parametrize(
    ("kind", "field"),
    [(kind, field) for kind in sorted(AUDIT_FIELDS)
     for field in sorted(set().union(*AUDIT_FIELDS.values(), {"loss", "train_accuracy", "plaintext"})
                         - AUDIT_FIELDS[kind])],
)
def test_an_audit_field_of_another_kind_is_refused(kind: str, field: str) -> None:
    gate, parent = gate_and_parent()
    allowed = {name: _value(name) for name in sorted(AUDIT_FIELDS[kind])}
    with pytest.raises(EgressRefused, match=f"audit event '{kind}' may not carry \\['{field}'\\]"):
        gate.audit(kind, **allowed, **{field: 1})
    assert_nothing_sent(parent)


@given(st.text(min_size=1, max_size=20).filter(lambda k: k not in AUDIT_FIELDS))
def test_an_unregistered_audit_kind_is_refused(kind: str) -> None:
    gate, parent = gate_and_parent()
    with pytest.raises(EgressRefused, match="is not registered"):
        gate.send(AuditEvent(kind, {}))
    assert_nothing_sent(parent)


@pytest.mark.parametrize("kind", sorted(RELEASABLE_METRIC_KINDS))
def test_releasable_metric_kinds_pass(kind: str) -> None:
    gate, parent = gate_and_parent()
    gate.send(MetricRelease(name="accuracy/holdout", value=0.9, kind=kind, step=10))
    assert parent.recv(timeout=0) == MetricRelease(name="accuracy/holdout", value=0.9, kind=kind, step=10)


@given(st.sampled_from(["train_eval", "private", "", "PUBLIC_EVAL"]) | st.text(max_size=20))
def test_other_metric_kinds_are_refused(kind: str) -> None:
    if kind in RELEASABLE_METRIC_KINDS:
        return
    gate, parent = gate_and_parent()
    with pytest.raises(EgressRefused, match="metric 'loss' of kind .* may not leave the enclave"):
        gate.send(MetricRelease(name="loss", value=0.1, kind=kind, step=1))
    assert_nothing_sent(parent)
