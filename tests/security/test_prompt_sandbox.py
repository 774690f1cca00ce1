"""Jinja2 sandbox escapes and resource bombs in prompt templates.

Templates are written by the operator (``seawall prompts push``, which calls
``PromptRegistry.push``, used here in-process); a client only names a prompt
and sends variables. Both paths are tried: a hostile template is refused at
push or answered 400 at render, quickly, with nothing of Python's internals
in the answer; a hostile *variable* is plain text, never template code."""

from __future__ import annotations

import time
from typing import Any

import pytest

from seawall.prompts.errors import SpecError
from tests.gateway import Running
from tests.security.conftest import Tenant
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(120)

ESCAPES = {
    "mro": "{{ ''.__class__.__mro__ }}",
    "globals": "{{ cycler.__init__.__globals__ }}",
    "subclasses": "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "self": "{{ self.__init__.__globals__ }}",
    "attr": "{{ x|attr('__class__') }}",
    "format": "{{ '{0.__class__}'.format(x) }}",
    "mutate": "{{ xs.append(1) }}",
    "range": "{% for i in range(10**9) %}a{% endfor %}",
    "repeat": "{{ 'a' * 10**9 }}",
    "repeat-var": "{{ x * 1000000000 }}",
    "list": "{{ [x] * 10**9 }}",
    "power": "{{ 99999 ** 99999 }}",
    "center": "{{ x|center(10**9) }}",
    "indent": "{{ x|indent(10**9) }}",
    "printf": "{{ '%0999999999d'|format(1) }}",
    "lipsum": "{{ lipsum(10**6) }}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "loop-output": "{% for a in xs %}{% for b in xs %}{{ x * 1000 }}{% endfor %}{% endfor %}",
}


def ask(t: Tenant, prompt: dict[str, Any]) -> Any:
    return t.http.post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "prompt": prompt})


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_hostile_templates_are_refused(gw: Running, mallory: Tenant,
                                       upstream: FakeUpstreamClient, name: str) -> None:
    template = ESCAPES[name]
    try:
        gw.services.prompts.push(f"evil-{name}", {"model": "m", "messages": [
            {"role": "system", "content": template}]})
    except SpecError:
        return  # refused at push: fine
    t0 = time.monotonic()
    r = ask(mallory, {"name": f"evil-{name}", "variables": {
        "x": "abcdefghij", "xs": list(range(3000)), "n": 1}})
    assert time.monotonic() - t0 < 10  # bounded, not a loop held for minutes
    assert r.status_code == 400, r.text[:300]
    for leak in ("<class", "__globals__", "builtins", "os.", "subprocess"):
        assert leak not in r.text
    assert upstream.calls()["calls"] == 0  # nothing was sent upstream


def test_variables_are_values_never_templates(gw: Running, mallory: Tenant,
                                              upstream: FakeUpstreamClient) -> None:
    gw.services.prompts.push("quote-it", {"model": "m", "messages": [
        {"role": "system", "content": "Quote: {{ q }}"}]})
    payloads = ["{{ 7 * 7 }}", "{{ ''.__class__.__mro__ }}", "{% for i in range(9) %}x{% endfor %}",
                "{{ cycler.__init__.__globals__.os.popen('id').read() }}"]
    for p in payloads:
        r = ask(mallory, {"name": "quote-it", "variables": {"q": p}})
        assert r.status_code == 200, r.text
        sent = upstream.calls()["requests"][-1]["messages"][0]["content"]
        assert sent == f"Quote: {p}"


def test_a_variable_cannot_be_a_callable_or_an_object(gw: Running, mallory: Tenant) -> None:
    """Variables arrive as JSON: strings, numbers, lists, objects. An object
    is a dict, whose methods the immutable sandbox refuses to call to mutate."""
    gw.services.prompts.push("use-obj", {"model": "m", "messages": [
        {"role": "system", "content": "{{ o.update({'a': 1}) }}{{ o }}"}]})
    r = ask(mallory, {"name": "use-obj", "variables": {"o": {"k": "v"}}})
    assert r.status_code == 400, r.text
