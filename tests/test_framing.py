"""The wire format without sockets: line framing, strict JSON decoding, envelope checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordd.api import framing
from coordd.api.errors import INVALID_REQUEST, PARSE_ERROR
from coordd.api.framing import BadMessage, FrameTooLong, LineFramer

LIMIT = 64

# -- LineFramer --------------------------------------------------------------------------

# A frame's bytes: anything but the newline; no trailing CR, which the framer strips (CRLF).
frame_bytes = st.binary(max_size=LIMIT).map(lambda b: b.replace(b"\n", b"").rstrip(b"\r"))


def feed_in_pieces(framer: LineFramer, stream: bytes, cuts: list[int]) -> list[bytes]:
    frames: list[bytes] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        frames += framer.feed(stream[start:cut])
        start = cut
    return frames


@given(
    messages=st.lists(frame_bytes, max_size=20),
    cut_fractions=st.lists(st.floats(min_value=0, max_value=1), max_size=30),
    crlf=st.booleans(),
)
def test_any_split_gives_the_same_frames(
    messages: list[bytes], cut_fractions: list[float], crlf: bool
) -> None:
    end = b"\r\n" if crlf else b"\n"
    stream = b"".join(message + end for message in messages)
    cuts = [int(f * len(stream)) for f in cut_fractions]
    framer = LineFramer(LIMIT + 1)  # +1: the CR of a CRLF counts towards the limit
    assert feed_in_pieces(framer, stream, cuts) == messages
    assert framer.pending == 0


@given(data=st.data(), messages=st.lists(frame_bytes, min_size=1, max_size=10))
def test_byte_by_byte_equals_all_at_once(data: Any, messages: list[bytes]) -> None:
    stream = b"".join(m + b"\n" for m in messages)
    tail = data.draw(frame_bytes)  # an incomplete last frame stays pending
    whole = stream + tail
    one = LineFramer(LIMIT)
    frames_at_once = one.feed(whole)
    other = LineFramer(LIMIT)
    frames_by_byte = [f for i in range(len(whole)) for f in other.feed(whole[i : i + 1])]
    assert frames_at_once == frames_by_byte == messages
    assert one.pending == other.pending == len(tail)


def test_crlf_and_empty_lines() -> None:
    framer = LineFramer(100)
    assert framer.feed(b'{"a":1}\r\n\r\n\n{"b":2}\n') == [b'{"a":1}', b"", b"", b'{"b":2}']


def test_frame_exactly_at_the_limit_passes() -> None:
    framer = LineFramer(10)
    assert framer.feed(b"x" * 10 + b"\n") == [b"x" * 10]
    assert framer.feed(b"y" * 10) == []  # pending exactly at the limit: still fine
    assert framer.feed(b"\n") == [b"y" * 10]


def test_frame_one_past_the_limit_is_refused() -> None:
    with pytest.raises(FrameTooLong):
        LineFramer(10).feed(b"x" * 11 + b"\n")


def test_frame_past_the_limit_after_good_frames_in_the_same_chunk() -> None:
    with pytest.raises(FrameTooLong):
        LineFramer(10).feed(b"ok\n" + b"x" * 11 + b"\n")


def test_partial_buffer_past_the_limit_is_refused_before_its_newline() -> None:
    framer = LineFramer(10)
    assert framer.feed(b"x" * 6) == []
    with pytest.raises(FrameTooLong):
        framer.feed(b"x" * 5)  # 11 bytes and no newline yet: no need to wait for more


# -- decode ------------------------------------------------------------------------------


def parse_error(frame: bytes) -> str:
    with pytest.raises(BadMessage) as info:
        framing.decode(frame)
    assert info.value.code == PARSE_ERROR
    response = info.value.response()
    assert response["id"] is None
    assert response["error"]["code"] == PARSE_ERROR
    return info.value.message


def test_invalid_utf8() -> None:
    assert "invalid UTF-8 at byte 8" in parse_error(b'{"a":"bc\xff"}')
    assert "invalid UTF-8" in parse_error(b'"\xed\xa0\x80"')  # a surrogate encoded raw


def test_invalid_json() -> None:
    message = parse_error(b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
    assert "line 1 column" in message
    assert "parse error" in parse_error(b"")
    assert "parse error" in parse_error(b"{} {}")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity(constant: str) -> None:
    message = parse_error(f'{{"x": [{constant}]}}'.encode())
    assert f"{constant} is not valid JSON" in message


def test_duplicate_keys() -> None:
    assert "duplicate key 'id'" in parse_error(b'{"id": 1, "method": "a", "id": 2}')
    assert "duplicate key 'b'" in parse_error(b'{"params": [{"a": {"b": 1, "b": 2}}]}')


def test_same_key_in_different_objects_is_fine() -> None:
    assert framing.decode(b'[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)])
def test_signed_64_bit_integers_pass(value: int) -> None:
    assert framing.decode(f'{{"n": {value}}}'.encode()) == {"n": value}


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**400])
def test_integers_past_64_bits_are_refused(value: int) -> None:
    assert "out of range" in parse_error(f'{{"n": {value}}}'.encode())


def test_float_overflow_is_refused() -> None:
    assert "number 1e400 is out of range" in parse_error(b'{"n": 1e400}')
    assert "out of range" in parse_error(b"[-1e400]")
    assert framing.decode(b"[1e300, 1.5]") == [1e300, 1.5]


def test_lone_surrogates_are_refused() -> None:
    assert "lone surrogate" in parse_error(rb'{"a": "\ud800"}')
    assert "lone surrogate" in parse_error(rb'{"a": ["ok", "x\udfffy"]}')
    assert "lone surrogate" in parse_error(rb'{"\ud83d": 1}')  # in a key
    assert "lone surrogate" in parse_error(rb'["\ude00\ud83d"]')  # a pair the wrong way round


def test_surrogate_pair_is_accepted() -> None:
    assert framing.decode(rb'{"a": "\ud83d\ude00"}') == {"a": "\U0001f600"}
    assert framing.decode(rb'{"a": "\\ud800"}') == {"a": "\\ud800"}  # an escaped backslash


def test_deep_nesting_is_refused_without_crashing() -> None:
    assert "nesting too deep" in parse_error(b"[" * 100_000)
    assert "nesting too deep" in parse_error(b"[" * 100_000 + b"]" * 100_000)
    assert "nesting too deep" in parse_error(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)


def test_moderate_nesting_is_fine() -> None:
    assert framing.decode(b"[" * 50 + b"]" * 50) is not None


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=20,
    )
)
def test_decode_round_trips_what_json_writes(value: Any) -> None:
    assert framing.decode(json.dumps(value).encode()) == value
    assert framing.decode(framing.encode(value).rstrip(b"\n")) == value


# -- check_request and split_batch -------------------------------------------------------


def invalid(message: Any) -> BadMessage:
    with pytest.raises(BadMessage) as info:
        framing.check_request(message)
    assert info.value.code == INVALID_REQUEST
    assert info.value.message.startswith("invalid request: ")
    return info.value


def test_spec_example_method_and_params_of_the_wrong_type() -> None:
    error = invalid({"jsonrpc": "2.0", "method": 1, "params": "bar"})
    assert '"method" must be a non-empty string' in error.message
    assert error.request_id is None


@pytest.mark.parametrize("member", [1, "x", None, True, [], [1]])
def test_a_member_that_is_not_an_object(member: Any) -> None:
    assert "expected an object" in invalid(member).message


def test_spec_example_batch_members_checked_one_by_one() -> None:
    for value in ([1], [1, 2, 3]):
        is_batch, members = framing.split_batch(value, 100)
        assert is_batch
        errors = [invalid(m) for m in members]
        assert len(errors) == len(value)
        assert all(e.response()["id"] is None for e in errors)


def test_spec_example_mixed_batch() -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "sum", "params": [1, 2, 4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"},
    ]
    _, members = framing.split_batch(batch, 100)
    outcomes = []
    for member in members:
        try:
            outcomes.append(framing.check_request(member)["method"])
        except BadMessage as exc:
            outcomes.append(exc.message)
    assert outcomes[3] == 'invalid request: "jsonrpc" must be "2.0"'
    assert outcomes[:3] + outcomes[4:] == ["sum", "notify_hello", "subtract", "foo.get", "get_data"]
    assert framing.is_notification(batch[1])
    assert not framing.is_notification(batch[0])


def test_missing_jsonrpc_keeps_the_id() -> None:
    error = invalid({"method": "server.status", "id": 7})
    assert '"jsonrpc" must be "2.0"' in error.message
    assert error.response()["id"] == 7


@pytest.mark.parametrize("version", ["1.0", "2", 2.0, None, ""])
def test_wrong_version(version: Any) -> None:
    assert '"jsonrpc" must be "2.0"' in invalid({"jsonrpc": version, "method": "m"}).message


@pytest.mark.parametrize("request_id", [{}, {"a": 1}, [], [1], True, False, 1.5])
def test_id_of_a_wrong_type_is_answered_with_a_null_id(request_id: Any) -> None:
    error = invalid({"jsonrpc": "2.0", "method": "m", "id": request_id})
    assert "id must be a string, an integer or null" in error.message
    assert error.response()["id"] is None


@pytest.mark.parametrize("request_id", ["abc", "", 0, -1, 2**63 - 1, None])
def test_good_ids(request_id: Any) -> None:
    message = {"jsonrpc": "2.0", "method": "m", "id": request_id}
    assert framing.check_request(message) is message


@pytest.mark.parametrize("method", ["", None, 1, [], {}, True])
def test_method_must_be_a_non_empty_string(method: Any) -> None:
    error = invalid({"jsonrpc": "2.0", "method": method, "id": 3})
    assert '"method" must be a non-empty string' in error.message
    assert error.response()["id"] == 3


def test_missing_method() -> None:
    assert '"method"' in invalid({"jsonrpc": "2.0", "id": 1}).message


@pytest.mark.parametrize("params", ["bar", 1, 1.5, True, None])
def test_params_must_be_structured(params: Any) -> None:
    error = invalid({"jsonrpc": "2.0", "method": "m", "params": params, "id": 4})
    assert '"params" must be an object or an array' in error.message
    assert error.response()["id"] == 4


@pytest.mark.parametrize("params", [[], {}, [1, "a"], {"a": 1}])
def test_structured_params_pass(params: Any) -> None:
    framing.check_request({"jsonrpc": "2.0", "method": "m", "params": params})


def test_extra_members_are_refused_by_name() -> None:
    error = invalid({"jsonrpc": "2.0", "method": "m", "id": 1, "result": 1, "error": {}})
    assert "unexpected member 'error'" in error.message
    assert error.response()["id"] == 1


def test_empty_batch() -> None:
    with pytest.raises(BadMessage) as info:
        framing.split_batch([], 10)
    assert info.value.code == INVALID_REQUEST
    assert info.value.message == "invalid request: empty batch"


def test_batch_at_and_past_the_limit() -> None:
    assert framing.split_batch([{}] * 10, 10) == (True, [{}] * 10)
    with pytest.raises(BadMessage) as info:
        framing.split_batch([{}] * 11, 10)
    assert info.value.code == INVALID_REQUEST
    assert "batch of 11 exceeds 10" in info.value.message


def test_a_single_request_is_not_a_batch() -> None:
    assert framing.split_batch({"a": 1}, 1) == (False, [{"a": 1}])


def test_encode_is_one_line() -> None:
    frame = framing.encode({"s": "line\nbreak\u2028", "n": 1})
    assert frame.endswith(b"\n")
    assert frame.count(b"\n") == 1
    assert framing.decode(frame[:-1]) == {"s": "line\nbreak\u2028", "n": 1}
