"""Registry completeness: every message type is registered, has a strategy and round-trips."""
from __future__ import annotations

import pytest
from hypothesis import given, settings

from enclave.transport import messages
from enclave.transport.messages import REGISTRY, Message, decode_payload, encode_payload
from tests.support.frames import decode_frames, encode_frame
from tests.support.message_strategies import STRATEGIES

REGISTERED = sorted(REGISTRY.types().values(), key=lambda cls: cls.TYPE_ID)


def test_every_message_class_in_messages_is_registered() -> None:
    defined = {
        obj for obj in vars(messages).values()
        if isinstance(obj, type) and issubclass(obj, Message) and obj is not Message
        and obj.__module__ == messages.__name__
    }
    assert defined - set(REGISTERED) == set()
    assert set(REGISTERED) - defined == set()  # nothing registered from elsewhere either


def test_every_registered_type_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(REGISTERED)


@pytest.mark.parametrize("cls", REGISTERED, ids=lambda cls: cls.__name__)
def test_every_registered_type_round_trips(cls: type[Message]) -> None:
    @settings(max_examples=40, deadline=None)
    @given(STRATEGIES[cls])
    def check(msg: Message) -> None:
        assert type(msg) is cls
        assert decode_frames(encode_frame(msg)) == [msg]
        payload = encode_payload(msg)
        assert encode_payload(decode_payload(cls, payload)) == payload  # one encoding only

    check()
