"""Wire validation: bad input becomes an InvalidRequest naming the field."""

import pytest

from seawall.api.wire import ChatCompletionRequest, convert, decode_json_object
from seawall.errors import InvalidRequest


def test_valid_request_keeps_parameters() -> None:
    raw = decode_json_object(b'{"model":"m","messages":[{"role":"user","content":"hi"}],'
                             b'"max_completion_tokens":5,"stop":["x"],"seed":1,"logprobs":true}')
    req = convert(raw, ChatCompletionRequest)
    assert req.output_limit == 5 and req.stop_list == ["x"] and req.seed == 1
    assert raw["logprobs"] is True  # unknown fields survive in the raw dict


@pytest.mark.parametrize("body,param", [
    (b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":"5"}', "max_tokens"),
    (b'{"model":"m","messages":[{"role":"wizard","content":"hi"}]}', "messages[0].role"),
    (b'{"model":"m","messages":[]}', "messages"),
    (b'{"messages":[{"role":"user","content":"hi"}]}', None),
    (b'{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":3}', "temperature"),
])
def test_invalid_fields_name_the_param(body: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as e:
        convert(decode_json_object(body), ChatCompletionRequest)
    assert e.value.status == 400
    if param:
        assert e.value.param == param


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1,2]", b'"text"'])
def test_malformed_json_is_invalid_json(body: bytes) -> None:
    with pytest.raises(InvalidRequest) as e:
        decode_json_object(body)
    assert e.value.code == "invalid_json"


def test_retry_after_is_rounded_up_with_a_precise_ms_header() -> None:
    from seawall.errors import RateLimited
    assert RateLimited("x", retry_after=4.1).headers() == {"retry-after": "5",
                                                           "retry-after-ms": "4100"}
    assert RateLimited("x", retry_after=2).headers() == {"retry-after": "2",
                                                         "retry-after-ms": "2000"}
    assert RateLimited("x", retry_after=0.0004).headers() == {"retry-after": "1",
                                                              "retry-after-ms": "1"}
    assert RateLimited("x", retry_after=float("inf")).headers()["retry-after"] == "86400"
    assert RateLimited("x").headers() == {}


def _chat(**extra: object) -> ChatCompletionRequest:
    return convert({"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra},
                   ChatCompletionRequest)


def test_n_and_top_logprobs_are_bounded() -> None:
    assert _chat(n=8).choices == 8 and _chat().choices == 1
    for bad in ({"n": 9}, {"n": 0}, {"top_logprobs": 21}, {"top_logprobs": -1}):
        with pytest.raises(InvalidRequest) as e:
            _chat(**bad)
        assert e.value.param == next(iter(bad))


@pytest.mark.parametrize("value,inputs", [
    ("a", ["a"]),
    (["a", "b"], ["a", "b"]),
    ([1, 2], [[1, 2]]),
    ([[1, 2], [3]], [[1, 2], [3]]),
])
def test_embedding_inputs_text_or_token_ids(value: object, inputs: object) -> None:
    from seawall.api.wire import EmbeddingRequest
    assert convert({"model": "m", "input": value}, EmbeddingRequest).inputs == inputs


def test_gatherer_folds_choices_and_logprobs_by_index() -> None:
    from seawall.providers.base import Gatherer, make_chunk
    g = Gatherer()
    entry = {"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": []}
    for i in (1, 0):
        g.add(make_chunk("c", "m", 1, {"role": "assistant", "content": ""}, index=i))
        g.add(make_chunk("c", "m", 1, {"content": f"x{i}"}, index=i,
                         logprobs={"content": [entry], "refusal": None}))
        g.add(make_chunk("c", "m", 1, {"content": "y"}, index=i,
                         logprobs={"content": [entry], "refusal": None}))
        g.add(make_chunk("c", "m", 1, finish_reason="length" if i else "stop", index=i))
    out = g.completion()
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert [c["message"]["content"] for c in out["choices"]] == ["x0y", "x1y"]
    assert [c["finish_reason"] for c in out["choices"]] == ["stop", "length"]
    assert out["choices"][0]["logprobs"] == {"content": [entry, entry], "refusal": None}
    assert g.size > len("x0yx1y")  # logprobs count toward the answer-size cap


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**25])
def test_integers_orjson_cannot_write_are_refused(number: int) -> None:
    # Found by fuzzing: msgspec decodes them, and forwarding the body upstream
    # (orjson) then failed with a 500.
    import orjson
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"x":{"y":[%d]}}' % number
    with pytest.raises(InvalidRequest) as e:
        decode_json_object(body)
    assert e.value.status == 400 and e.value.code == "number_out_of_range"
    for edge in (2**64 - 1, -(2**63), 1234567890123456789):  # in range: kept
        ok = decode_json_object(b'{"seed": %d, "note": "%d"}' % (edge, number))
        assert orjson.loads(orjson.dumps(ok)) == {"seed": edge, "note": str(number)}


def test_embedding_dimensions_are_bounded() -> None:
    from seawall.api.wire import MAX_DIMENSIONS, EmbeddingRequest
    assert convert({"model": "e", "input": "a", "dimensions": 8}, EmbeddingRequest).dimensions == 8
    for bad in (0, -3, MAX_DIMENSIONS + 1):
        with pytest.raises(InvalidRequest) as e:
            convert({"model": "e", "input": "a", "dimensions": bad}, EmbeddingRequest)
        assert e.value.param == "dimensions"


def test_header_values_are_printable_ascii() -> None:
    # Found by fuzzing: a prompt version (client-supplied) outside latin-1 in
    # the x-seawall-prompt-version header was a 500.
    from seawall.api.http import header_value
    assert header_value("v2-prod") == "v2-prod"
    assert header_value("v\U000a3fa4\r\nset-cookie: x") == "v???set-cookie: x"
    assert len(header_value("x" * 500)) == 200
