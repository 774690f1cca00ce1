"""Strings and JSON sent to Postgres carry no NUL (seawall/store/pg.py): the
JSON escape of NUL is replaced, a literal backslash-u text is not."""

from __future__ import annotations

import json

from seawall.store.pg import _json_dumps, _no_nul


def test_text_without_nul() -> None:
    assert _no_nul("a\x00b\x00") == "a\ufffdb\ufffd"
    assert _no_nul("plain") == "plain"


def test_json_without_nul_escape_but_with_literal_backslashes() -> None:
    value = {"a": "x\x00y", "b": "\\u0000", "c": "\\\x00", "k\x00": ["\x00"]}
    out = _json_dumps(value)
    assert "\\u0000" not in out.replace("\\\\u0000", "")
    assert json.loads(out) == {"a": "x\ufffdy", "b": "\\u0000", "c": "\\\ufffd",
                               "k\ufffd": ["\ufffd"]}
