"""Array codec and request protocol: round trips, shared vectors, reply splitting, routing."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mi_widgets.transport import Cancelled, Reply, RequestRouter, decode_array, encode_array, split_reply
from mi_widgets.transport.codec import MAX_CODE, NONFINITE_CODE

FIXTURES = Path(__file__).parent / "fixtures"
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)
# 0-d arrays break uint8 quantisation (see test_uint8_zero_dim_array); keep the properties about the rest
shapes_nd = hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6)


def bits(a: np.ndarray) -> np.ndarray:
    return a.view({2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


# ----- codec round trips --------------------------------------------------------------------


@FAST
@given(hnp.arrays(np.float32, shapes, elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_float32_round_trip_is_bit_exact(values: np.ndarray) -> None:
    header, data = encode_array(values, "float32")
    assert header == {"dtype": "float32", "shape": list(values.shape), "buffer": 0}
    assert len(data) == values.size * 4
    out = decode_array(header, [data])
    assert out.dtype == np.float32 and out.shape == values.shape
    np.testing.assert_array_equal(bits(out), bits(values))  # NaN, inf and -0.0 included


@FAST
@given(
    hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        shapes,
        elements=st.floats(min_value=-1e6, max_value=1e6) | st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 7e4]),
    )
)
def test_float16_equals_numpy_half_cast(values: np.ndarray) -> None:
    header, data = encode_array(values, "float16")
    out = decode_array(header, [data])
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16)
    assert out.dtype == np.float16 and out.shape == values.shape
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(out), nan)
    np.testing.assert_array_equal(bits(out)[~nan], bits(expected)[~nan])  # inf, overflow-to-inf, -0.0 kept


@FAST
@given(
    hnp.arrays(np.float32, shapes_nd, elements=st.floats(min_value=-1000, max_value=1000, width=32)),
    st.one_of(
        st.none(),
        st.tuples(st.floats(-100, 100), st.floats(0, 200)).map(lambda t: (t[0], t[0] + t[1])),
    ),
)
def test_uint8_quantisation_within_half_a_step(values: np.ndarray, value_range: Any) -> None:
    header, data = encode_array(values, "uint8", value_range=value_range)
    codes = np.frombuffer(data, np.uint8)
    assert codes.size == values.size and (codes <= MAX_CODE).all()  # finite values never use the NaN code
    lo, hi = header["range"]
    if value_range is None and values.size:
        assert (lo, hi) == (float(values.min()), float(values.max()))
    elif value_range is not None:
        assert (lo, hi) == (float(value_range[0]), float(value_range[1]))
    out = decode_array(header, [data])
    assert out.dtype == np.float32 and out.shape == values.shape
    expected = np.clip(values.astype(np.float64), lo, hi)
    step = (hi - lo) / MAX_CODE
    assert np.all(np.abs(out - expected) <= step / 2 + 1e-5 * max(1.0, abs(lo), abs(hi)))


@FAST
@given(hnp.arrays(np.float32, shapes_nd, elements=st.sampled_from([0.0, 0.5, 1.0, np.nan, np.inf, -np.inf])))
def test_uint8_nonfinite_is_code_255_and_decodes_to_nan(values: np.ndarray) -> None:
    header, data = encode_array(values, "uint8", value_range=(0.0, 1.0))
    codes = np.frombuffer(data, np.uint8).reshape(values.shape)
    finite = np.isfinite(values)
    np.testing.assert_array_equal(codes == NONFINITE_CODE, ~finite)
    np.testing.assert_array_equal(codes[finite], np.rint(values[finite] * MAX_CODE).astype(np.uint8))
    out = decode_array(header, [data])
    np.testing.assert_array_equal(np.isnan(out), ~finite)


@pytest.mark.parametrize("value", [0.25, float("nan")])
def test_uint8_zero_dim_array(value: float) -> None:
    # a 0-d array (e.g. a scalar score) has shape [] and must quantise like any other array
    header, data = encode_array(np.array(value, dtype=np.float32), "uint8", value_range=(0.0, 1.0))
    assert header["shape"] == [] and len(data) == 1
    out = decode_array(header, [data])
    assert out.shape == ()
    if np.isnan(value):
        assert data == bytes([NONFINITE_CODE]) and np.isnan(out)
    else:
        assert abs(float(out) - value) <= 0.5 / MAX_CODE


def test_uint8_auto_range_of_all_nonfinite_and_constant() -> None:
    header, data = encode_array(np.array([np.nan, np.inf]), "uint8")
    assert header["range"] == [0.0, 1.0] and data == bytes([255, 255])
    header, data = encode_array(np.full(3, 2.5), "uint8")
    assert header["range"] == [2.5, 2.5]
    np.testing.assert_array_equal(decode_array(header, [data]), np.full(3, 2.5, np.float32))


@FAST
@given(hnp.arrays(np.int64, shapes, elements=st.integers(-(2**31), 2**31 - 1)))
def test_int32_round_trip_is_exact(values: np.ndarray) -> None:
    header, data = encode_array(values, "int32")
    out = decode_array(header, [data])
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, values)


def test_buffers_are_little_endian_and_index_is_honoured() -> None:
    header, data = encode_array(np.array([1.0], dtype=">f4"), "float32", buffer_index=2)
    assert header["buffer"] == 2 and data == np.array([1.0], "<f4").tobytes()
    np.testing.assert_array_equal(decode_array(header, [b"", b"xx", data]), [1.0])
    header, data = encode_array(np.array([258]), "int32")
    assert data == bytes([2, 1, 0, 0])


def test_torch_tensors_encode_like_numpy() -> None:
    t = torch.linspace(0, 1, 12).reshape(3, 4)
    for dtype in ("float32", "float16", "uint8"):
        assert encode_array(t, dtype) == encode_array(t.numpy(), dtype)
    grad = torch.ones(3, requires_grad=True) * 2  # needs detach
    assert decode_array(*_one(encode_array(grad, "float32"))).tolist() == [2.0, 2.0, 2.0]
    bf16 = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
    assert decode_array(*_one(encode_array(bf16, "float16"))).tolist() == [1.5, -2.0]
    memview = decode_array(*_one(encode_array(t, "float32", buffer_index=0)))
    np.testing.assert_array_equal(memview, t.numpy())


def _one(encoded: tuple[dict[str, Any], bytes]) -> tuple[dict[str, Any], list[Any]]:
    header, data = encoded
    return header, [memoryview(data)]


@pytest.mark.parametrize(
    "header, buffers, pattern",
    [
        ({"dtype": "float64", "shape": [1]}, [bytes(8)], r"dtype must be one of .*float32.*got 'float64'"),
        ({"shape": [1]}, [bytes(4)], r"dtype must be one of .*got None"),
        ({"dtype": "float32", "shape": [1], "buffer": 1}, [bytes(4)], r"buffer 1, but the message has 1 buffer"),
        ({"dtype": "float32", "shape": [1], "buffer": -1}, [bytes(4)], r"buffer -1"),
        ({"dtype": "float32", "shape": [2, 3]}, [bytes(20)], r"holds 20 bytes.*float32 with shape \[2, 3\] needs 24"),
        ({"dtype": "float16", "shape": [4]}, [bytes(9)], r"holds 9 bytes.*needs 8"),
        ({"dtype": "int32", "shape": [1]}, [], r"message has 0 buffer"),
    ],
)
def test_bad_headers_name_expected_and_got(header: dict[str, Any], buffers: list[bytes], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        decode_array(header, buffers)


def test_bad_encode_arguments() -> None:
    with pytest.raises(ValueError, match=r"wire dtype must be one of .*got 'float64'"):
        encode_array(np.zeros(2), "float64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"value_range must be finite with lo <= hi"):
        encode_array(np.zeros(2), "uint8", value_range=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"value_range must be finite"):
        encode_array(np.zeros(2), "uint8", value_range=(0.0, float("nan")))


# ----- shared vectors ------------------------------------------------------------------------


def _make_vectors() -> Any:
    spec = importlib.util.spec_from_file_location("make_vectors", FIXTURES / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_vectors_match_what_python_produces() -> None:
    built = _make_vectors().build()
    assert set(built) == {
        "codec_vectors.json",
        "colormap_vectors.json",
        "event_vectors.json",
        "export_vectors.json",
        "protocol_vectors.json",
    }
    for name, text in built.items():
        committed = (FIXTURES / name).read_text()
        assert committed == text, f"{name} is stale: run `python tests/fixtures/make_vectors.py`"


def test_codec_vectors_decode_to_their_decoded_values() -> None:
    import base64

    cases = json.loads((FIXTURES / "codec_vectors.json").read_text())
    assert len(cases) >= 10 and {c["dtype"] for c in cases} == {"float32", "float16", "uint8", "int32"}
    for case in cases:
        out = decode_array(case["header"], [base64.b64decode(case["bytes"])])
        expected = np.array([float(v) for v in case["decoded"]], dtype=np.float64).reshape(case["shape"])
        np.testing.assert_array_equal(out.astype(np.float64), expected, err_msg=case["name"])


# ----- split_reply ---------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=8), st.integers(1, 40), st.data())
def test_split_reply_properties(sizes: list[int], limit: int, data: st.DataObject) -> None:
    buffers = [bytes(data.draw(st.binary(min_size=n, max_size=n))) for n in sizes]
    messages = split_reply("r:1", {"x": 1}, buffers, limit)
    n = len(messages)
    assert n >= 1
    totals = [sum(memoryview(s).nbytes for s in slices) for _, slices in messages]
    assert all(t <= limit for t in totals)
    assert all(t == limit for t in totals[:-1]), "all but the last message are full"
    assert n <= max(1, -(-sum(sizes) // limit)) + (1 if sizes and sizes[-1] == 0 else 0)
    for index, (content, _) in enumerate(messages):
        assert content["type"] == "response" and content["id"] == "r:1"
        assert content["part"] == index and content["parts"] == n
        if index == 0:
            assert content["ok"] is True and content["result"] == {"x": 1} and content["buffer_lengths"] == sizes
        else:
            assert set(content) == {"type", "id", "part", "parts"}
    blob = b"".join(bytes(s) for _, slices in messages for s in slices)
    rebuilt, offset = [], 0
    for length in messages[0][0]["buffer_lengths"]:
        rebuilt.append(blob[offset : offset + length])
        offset += length
    assert offset == len(blob) and rebuilt == buffers


def test_split_reply_without_buffers_and_bad_limit() -> None:
    assert split_reply(7, {}, []) == [
        ({"type": "response", "id": 7, "part": 0, "parts": 1, "ok": True, "result": {}, "buffer_lengths": []}, [])
    ]
    with pytest.raises(ValueError, match="max_message_bytes must be positive, got 0"):
        split_reply(7, {}, [b"x"], 0)


def test_split_reply_matches_protocol_vectors() -> None:
    import base64

    for case in json.loads((FIXTURES / "protocol_vectors.json").read_text()):
        buffers = [base64.b64decode(b) for b in case["buffers"]]
        messages = split_reply("c1:5", {"answer": 42}, buffers, case["max_message_bytes"])
        got = [{"content": c, "buffers": [base64.b64encode(bytes(p)).decode() for p in parts]} for c, parts in messages]
        assert got == case["messages"]


# ----- RequestRouter -------------------------------------------------------------------------


class Outbox(list):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def __call__(self, content: dict[str, Any], buffers: list[Any]) -> None:
        with self.lock:
            self.append((content, list(buffers)))

    def of(self, rid: Any, kind: str | None = None) -> list[tuple[dict[str, Any], list[Any]]]:
        return [(c, b) for c, b in list(self) if c.get("id") == rid and (kind is None or c["type"] == kind)]

    def wait_response(self, rid: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            responses = self.of(rid, "response")
            if responses and len(responses) == responses[0][0]["parts"]:
                return responses[0][0]
            assert time.monotonic() < deadline, f"no response to {rid!r}: {list(self)}"
            time.sleep(0.002)


def req(rid: Any, method: str, params: Any = None) -> dict[str, Any]:
    message = {"type": "request", "id": rid, "method": method}
    if params is not None:
        message["params"] = params
    return message


@pytest.fixture
def router() -> Any:
    out = Outbox()
    r = RequestRouter(out)
    r.out = out  # type: ignore[attr-defined]
    yield r
    r.close()


def test_unknown_method_names_known_methods(router: Any) -> None:
    router.add("pattern", lambda p, b, c: Reply())
    router.add("overview", lambda p, b, c: Reply())
    assert router.handle(req("a", "nope")) is True
    [(content, buffers)] = router.out
    assert content["ok"] is False and content["id"] == "a" and content["part"] == 0 and content["parts"] == 1
    assert content["error"]["type"] == "UnknownMethod"
    assert "'nope'" in content["error"]["message"] and "overview, pattern" in content["error"]["message"]
    assert buffers == []
    router.handle(req("b", None))
    assert router.out[-1][0]["error"]["type"] == "UnknownMethod"


def test_handler_error_is_reported_and_router_keeps_serving(router: Any) -> None:
    def boom(params: dict[str, Any], buffers: Any, ctx: Any) -> Reply:
        raise ValueError(f"bad layer {params['layer']}")

    router.add("boom", boom)
    router.add("echo", lambda p, b, c: Reply({"echo": p, "n": [bytes(x) for x in b]}))
    router.handle(req("1", "boom", {"layer": 9}))
    error = router.out[-1][0]
    assert error["ok"] is False and error["error"] == {"type": "ValueError", "message": "bad layer 9"}
    router.handle(req("2", "boom", {}))
    assert router.out[-1][0]["error"]["type"] == "KeyError"
    router.handle(req("3", "echo", {"q": 1}), [b"ab"])
    ok = router.out[-1][0]
    assert ok["ok"] is True and ok["result"] == {"echo": {"q": 1}, "n": [b"ab"]}
    router.handle(req("4", "echo"))  # params missing -> {}
    assert router.out[-1][0]["result"]["echo"] == {}


def test_handlers_get_buffers_as_memoryviews(router: Any) -> None:
    seen = []
    router.add("m", lambda p, b, c: seen.extend(b) or Reply())
    router.handle(req("x", "m"), [b"abc", bytearray(b"de")])
    assert all(isinstance(v, memoryview) for v in seen) and [bytes(v) for v in seen] == [b"abc", b"de"]


@pytest.mark.parametrize("message", ["hello", None, 3, [], {}, {"type": "other"}, {"type": "response", "id": 1}])
def test_non_protocol_messages_return_false(router: Any, message: Any) -> None:
    assert router.handle(message) is False
    assert router.out == []


def test_cancel_of_unknown_request_is_accepted_quietly(router: Any) -> None:
    assert router.handle({"type": "cancel", "id": "nobody"}) is True
    assert router.out == []


def test_reply_arrays_are_decodable(router: Any) -> None:
    def two(params: dict[str, Any], buffers: Any, ctx: Any) -> Reply:
        reply = Reply({"k": 1})
        reply.result["a"] = reply.add_array(np.arange(6, dtype=np.float32).reshape(2, 3), "float32")
        reply.result["b"] = reply.add_array(np.array([1, -2]), "int32")
        return reply

    router.add("two", two)
    router.handle(req("t", "two"))
    content, buffers = router.out[-1]
    assert content["result"]["a"]["buffer"] == 0 and content["result"]["b"]["buffer"] == 1
    np.testing.assert_array_equal(decode_array(content["result"]["a"], buffers), np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(decode_array(content["result"]["b"], buffers), [1, -2])


def test_background_handler_runs_on_worker_with_progress_first(router: Any) -> None:
    threads = []

    def slow(params: dict[str, Any], buffers: Any, ctx: Any) -> Reply:
        threads.append(threading.current_thread())
        for i in range(3):
            ctx.progress(i + 1, 3, f"step {i + 1}")
        return Reply({"done": True})

    router.add("slow", slow, background=True)
    assert router.handle(req("bg", "slow")) is True
    response = router.out.wait_response("bg")
    assert response["ok"] is True and response["result"] == {"done": True}
    assert threads and threads[0] is not threading.current_thread()
    assert threads[0].name.startswith("mi_widgets")
    kinds = [c["type"] for c, _ in router.out.of("bg")]
    assert kinds == ["progress", "progress", "progress", "response"]
    assert [(c["done"], c["total"], c["label"]) for c, _ in router.out.of("bg", "progress")] == [
        (1, 3, "step 1"),
        (2, 3, "step 2"),
        (3, 3, "step 3"),
    ]


def test_main_thread_stays_free_while_background_runs(router: Any) -> None:
    gate = threading.Event()
    router.add("wait", lambda p, b, c: (gate.wait(5), Reply({"w": 1}))[1], background=True)
    router.add("quick", lambda p, b, c: Reply({"q": 1}))
    router.handle(req("w", "wait"))
    router.handle(req("q", "quick"))  # answered while "w" is still blocked
    assert router.out.of("q", "response")[0][0]["result"] == {"q": 1}
    assert router.out.of("w") == []
    gate.set()
    assert router.out.wait_response("w")["result"] == {"w": 1}


@pytest.mark.parametrize("checkpoint", ["progress", "raise_if_cancelled"])
def test_cancel_stops_background_handler_at_next_checkpoint(router: Any, checkpoint: str) -> None:
    started, release = threading.Event(), threading.Event()
    finished = []

    def long(params: dict[str, Any], buffers: Any, ctx: Any) -> Reply:
        started.set()
        release.wait(5)
        for i in range(1000):
            if checkpoint == "progress":
                ctx.progress(i, 1000)
            else:
                ctx.raise_if_cancelled()
        finished.append(True)
        return Reply({"finished": True})

    router.add("long", long, background=True)
    router.handle(req("L", "long"))
    assert started.wait(5)
    assert router.handle({"type": "cancel", "id": "L"}) is True
    release.set()
    response = router.out.wait_response("L")
    assert response["ok"] is False and response["error"]["type"] == "Cancelled"
    assert "L" in response["error"]["message"] and "long" in response["error"]["message"]
    assert finished == []
    assert router.out.of("L", "progress") == []
    # the worker is free again
    router.add("after", lambda p, b, c: Reply({"ok": 1}), background=True)
    router.handle(req("A", "after"))
    assert router.out.wait_response("A")["result"] == {"ok": 1}


def test_cancelled_exception_from_handler_is_a_cancelled_reply(router: Any) -> None:
    def give_up(params: dict[str, Any], buffers: Any, ctx: Any) -> Reply:
        raise Cancelled("superseded")

    router.add("g", give_up)
    router.handle(req("g1", "g"))
    assert router.out[-1][0]["error"] == {"type": "Cancelled", "message": "superseded"}


def test_close_cancels_in_flight_requests(router: Any) -> None:
    started = threading.Event()

    def spin(params: dict[str, Any], buffers: Any, ctx: Any) -> Reply:
        started.set()
        for _ in range(5000):
            ctx.raise_if_cancelled()
            time.sleep(0.001)
        return Reply()

    router.add("spin", spin, background=True)
    router.handle(req("s", "spin"))
    assert started.wait(5)
    router.close()
    assert router.out.wait_response("s")["error"]["type"] == "Cancelled"


def test_big_replies_are_split() -> None:
    out = Outbox()
    router = RequestRouter(out, max_message_bytes=10)
    payload = bytes(range(25))
    router.add("big", lambda p, b, c: Reply({"n": 25}, [payload, b"xyz"]))
    router.handle(req("B", "big"))
    messages = out.of("B")
    assert [c["part"] for c, _ in messages] == [0, 1, 2] and all(c["parts"] == 3 for c, _ in messages)
    assert all(sum(memoryview(s).nbytes for s in b) <= 10 for _, b in messages)
    assert messages[0][0]["buffer_lengths"] == [25, 3] and messages[0][0]["result"] == {"n": 25}
    blob = b"".join(bytes(s) for _, b in messages for s in b)
    assert blob == payload + b"xyz"


# ----- lower-triangle layout (causal patterns travel at half the bytes) ---------------------


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 12), batch=st.integers(1, 3), dtype=st.sampled_from(["float32", "float16"]))
def test_lower_layout_round_trips_causal_matrices(n: int, batch: int, dtype: str) -> None:
    rng = np.random.default_rng(n * 7 + batch)
    dense = np.tril(rng.random((batch, n, n))).astype(np.float32)
    header, data = encode_array(dense, dtype, layout="lower")
    assert header["layout"] == "lower" and header["shape"] == [batch, n, n]
    assert len(data) == batch * n * (n + 1) // 2 * np.dtype(dtype).itemsize
    np.testing.assert_array_equal(decode_array(header, [data]), dense.astype(dtype))


def test_lower_layout_rejects_non_square_and_wrong_sizes() -> None:
    with pytest.raises(ValueError, match="square trailing dimensions"):
        encode_array(np.zeros((2, 3)), "float16", layout="lower")
    header, data = encode_array(np.tril(np.ones((4, 4))), "float16", layout="lower")
    with pytest.raises(ValueError, match="lower-triangle layout of shape \\[4, 4\\] needs 20"):
        decode_array(header, [data[:-2]])
    with pytest.raises(ValueError, match="layout must be"):
        decode_array({**header, "layout": "upper"}, [data])


# ----- events --------------------------------------------------------------------------------


def test_event_matches_vectors_and_router_push_sends_it() -> None:
    import base64

    from mi_widgets.transport.protocol import event_message

    (case,) = json.loads((FIXTURES / "event_vectors.json").read_text())
    buffers = [base64.b64decode(b) for b in case["buffers"]]
    out = decode_array(case["content"]["result"]["W"], buffers)
    np.testing.assert_array_equal(out.reshape(-1), np.array(case["decoded"], dtype=np.float32))
    outbox = Outbox()
    router = RequestRouter(outbox)
    reply = Reply({"step": 3})
    reply.result["x"] = reply.add_array(np.arange(4, dtype=np.float32), "float32")
    router.push("frame", reply)
    ((content, parts),) = outbox
    assert content == {"type": "event", "event": "frame", "result": reply.result, "buffer_lengths": [16]}
    assert bytes(parts[0]) == np.arange(4, dtype=np.float32).tobytes()
    with pytest.raises(ValueError, match="event 'big' carries 8 bytes, over the 4-byte limit"):
        event_message("big", {}, [b"12345678"], 4)
    with pytest.raises(ValueError, match="event name must be a non-empty string"):
        event_message("", {}, [])


def test_router_stamps_replies_with_the_revision_their_handler_started_from() -> None:
    sent: list[dict[str, Any]] = []
    state = {"revision": 7}
    router = RequestRouter(lambda content, buffers: sent.append(content), revision=lambda: state["revision"])

    def read(params: dict[str, Any], buffers: Any, ctx: Any) -> Reply:
        state["revision"] = 8  # the data moved on while the handler ran: the reply is still for 7
        return Reply({"value": 1})

    def remake(params: dict[str, Any], buffers: Any, ctx: Any) -> Reply:
        return Reply({"revision": 42})  # a handler that made new data names its own

    router.add("read", read)
    router.add("remake", remake)
    router.handle({"type": "request", "id": "a", "method": "read", "params": {}}, [])
    router.handle({"type": "request", "id": "b", "method": "remake", "params": {}}, [])
    assert [c["result"]["revision"] for c in sent] == [7, 42]
    unstamped: list[dict[str, Any]] = []
    plain = RequestRouter(lambda content, buffers: unstamped.append(content))
    plain.add("read", read)
    plain.handle({"type": "request", "id": "c", "method": "read", "params": {}}, [])
    assert "revision" not in unstamped[0]["result"]


def test_endpoints_are_declared_once_on_the_widget_class() -> None:
    """``@endpoint`` routes a request to a method; a subclass's declaration of a method name wins."""
    from mi_widgets.transport.protocol import Context, Reply
    from mi_widgets.widgets.base import ProtocolWidget, endpoint

    class Base(ProtocolWidget):
        _esm = "export default {}"

        @endpoint("ping")
        def _ping(self, params: dict, buffers: list, ctx: Context) -> Reply:
            return Reply({"from": "base"})

        @endpoint("slow", background=True)
        def _slow(self, params: dict, buffers: list, ctx: Context) -> Reply:
            return Reply({"thread": threading.current_thread().name})

    class Child(Base):
        @endpoint("ping")
        def _ping_child(self, params: dict, buffers: list, ctx: Context) -> Reply:
            return Reply({"from": "child"})

    sent: list[dict] = []
    w = Child()
    w._send_message = lambda content, buffers: sent.append(content)  # type: ignore[method-assign]
    w._router._send = w._send_message
    w._router.handle({"type": "request", "id": "a", "method": "ping", "params": {}})
    assert sent[-1]["result"] == {"from": "child", "revision": 0}
    w._router.handle({"type": "request", "id": "b", "method": "slow", "params": {}})
    deadline = time.monotonic() + 5
    while len(sent) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sent[-1]["result"]["thread"].startswith("mi_widgets")
    w._router.handle({"type": "request", "id": "c", "method": "nope", "params": {}})
    assert sent[-1]["error"]["type"] == "UnknownMethod" and "ping, slow" in sent[-1]["error"]["message"]
    w.close()


def test_no_widget_syncs_binary_state() -> None:
    """Colab and some hosts cannot open a widget whose synced state holds binary data: bulk data goes through
    requests and events, never traits."""
    import anywidget
    import traitlets

    import mi_widgets as mw

    classes = [obj for name in mw.__all__ if isinstance(obj := getattr(mw, name), type)]
    widgets = [cls for cls in classes if issubclass(cls, anywidget.AnyWidget)]
    assert len(widgets) >= 13
    inherited = set(anywidget.AnyWidget.class_traits())  # ipywidgets' own (layout, ...), anywidget's _esm/_css
    for cls in widgets:
        for name, trait in cls.class_traits(sync=True).items():
            if name in inherited:
                continue
            assert not isinstance(trait, (traitlets.Bytes, traitlets.CBytes)), f"{cls.__name__}.{name} is binary"
            assert trait.metadata.get("to_json") is None, f"{cls.__name__}.{name} has a custom serialiser"


def test_uint8_quantisation_of_a_span_near_float32_max_does_not_overflow() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = np.array([-3e38, 0.0, 3e38], dtype=np.float32)
        header, data = encode_array(values, "uint8", buffer_index=0)
    assert np.frombuffer(bytes(data), dtype=np.uint8).tolist() == [0, 127, MAX_CODE]
