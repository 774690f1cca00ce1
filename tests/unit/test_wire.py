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
