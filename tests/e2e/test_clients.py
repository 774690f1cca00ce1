"""Client compatibility: real client libraries, as their users write them,
against a real gateway whose model is the fake upstream over a real socket.

Each client is an adapter below, each feature a test parametrized over the
clients, so a result id reads ``test_<feature>[<client>]`` and the README's
client x feature table is these results (``scripts/compat_table.py`` prints
it from a run). A client that is not installed skips (``pytest.importorskip``);
a feature a client has no API for skips with ``n/a: <why>``; a client that
cannot be made to work is an xfail with the reason. The Node clients
(openai-node, the Vercel AI SDK) run tests/e2e/node/clients.mjs and skip without
``node`` or their packages.

What is checked is what crossed the wire: the answer the client parsed and the
request the upstream received (the fake records it). The OpenAI SDK's own
logprobs, ``n``, token-id embeddings and tools are in
tests/integration/test_compat.py and are not repeated here.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

# LiteLLM's own pydantic types warn about ``ReadOnly`` TypedDict items at import.
pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")

# LiteLLM fetches its model price list from the internet at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MASTER = "sk-master-clients"
ECHO = "alpha beta gamma"  # the fake echoes the last user message, word by word
WORDS = ["alpha", " beta", " gamma"]
ASK_WEATHER = "What is the weather in Paris?"  # the fake calls the first tool
TEXTS = ["The cat sat on the mat.", "Rain is expected tomorrow in Paris."]
LONG = " ".join(f"w{i}" for i in range(400))  # a stream that would take 8 s at 50 words/s


class Weather(BaseModel):
    """The structured answer: the fake's tool call arguments are {"city": "Paris"}."""

    city: str


def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    CALLED.append(city)
    return f"18C and sunny in {city}"


CALLED: list[str] = []


class NotApplicable(Exception):
    """The client has no API for this feature."""


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    config = {
        "auth": {"master_key": MASTER},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "cache": {"enabled": False},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1",
                             "api_key": "x"}},
        "models": {
            "gpt-x": {"provider": "oa", "model": "upstream-gpt"},
            "emb-up": {"provider": "oa", "kind": "embedding", "model": "fake-embedding"},
        },
    }
    with run_gateway(config, tmp_path_factory.mktemp("clients")) as running:
        yield running


@pytest.fixture(scope="module")
def tiktoken_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Clients that count tokens themselves (LangChain's OpenAIEmbeddings) call
    ``tiktoken.get_encoding``, which downloads its BPE file on first use. Put the
    file that ``bpe-openai`` ships where tiktoken's cache looks for it."""
    import tiktoken_ext.openai_public as public

    spec = importlib.util.find_spec("bpe_openai")
    assert spec is not None and spec.submodule_search_locations
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    cache = tmp_path_factory.mktemp("tiktoken")
    for name in ("cl100k_base", "o200k_base"):
        url = next(c for c in getattr(public, name).__code__.co_consts
                   if isinstance(c, str) and c.endswith(f"/{name}.tiktoken"))
        blob = gzip.decompress((data / f"{name}.tiktoken.gz").read_bytes())
        (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(blob)
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old


# -- adapters: one per client, the way its documentation says to use it -------------


class Client:
    """How one client library does each feature. Methods not overridden are n/a."""

    name = ""
    package = ""  # the module that must import, else the client's tests skip
    covered: dict[str, str] = {}  # feature -> the test elsewhere that covers it
    embeds_token_ids = False  # sends embedding inputs as token ids by default
    broken: dict[str, str] = {}  # feature -> why the client cannot do it (an xfail)
    streamed = WORDS  # the pieces a stream of ECHO gives

    def __init__(self, url: str) -> None:
        self.url = url  # the gateway's /v1

    @classmethod
    def available(cls) -> None:
        """Skip the client's tests if it is not installed."""
        pytest.importorskip(cls.package)

    def chat(self, text: str) -> str:
        raise NotApplicable("no chat API")

    def stream(self, text: str) -> list[str]:
        raise NotApplicable("no streaming API")

    def tools(self, text: str) -> tuple[str, dict[str, Any]]:
        raise NotApplicable("no tool calling API")

    def structured(self, text: str) -> Weather:
        raise NotApplicable("no response_format json_schema")

    def embed(self, texts: list[str]) -> list[list[float]]:
        raise NotApplicable("no embeddings API")

    def logprobs(self, text: str) -> list[str]:
        raise NotApplicable("no logprobs")

    def choices(self, text: str, n: int) -> list[str]:
        raise NotApplicable("no n > 1")

    def error(self) -> tuple[Callable[[], Any], type[BaseException]]:
        """A call the gateway answers 404 (unknown model), and the exception the
        client's users catch for it."""
        raise NotApplicable("no error type")

    def cancel(self, text: str) -> None:
        """Read two pieces of a stream, then close it early."""
        raise NotApplicable("no way to close a stream early")


class OpenAISync(Client):
    name, package = "openai", "openai"
    covered = {f: "tests/integration/test_compat.py" for f in
               ("tools", "embeddings", "logprobs", "n")}

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.client = openai.OpenAI(base_url=url, api_key=MASTER, max_retries=0)

    def chat(self, text: str) -> str:
        resp = self.client.chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": text}])
        return resp.choices[0].message.content or ""

    def stream(self, text: str) -> list[str]:
        with self.client.chat.completions.stream(
                model="gpt-x", messages=[{"role": "user", "content": text}]) as s:
            return [e.delta for e in s if e.type == "content.delta" and e.delta]

    def structured(self, text: str) -> Weather:
        resp = self.client.chat.completions.parse(
            model="gpt-x", messages=[{"role": "user", "content": text}],
            response_format=Weather)
        parsed = resp.choices[0].message.parsed
        assert parsed is not None
        return parsed

    def error(self) -> tuple[Callable[[], Any], type[BaseException]]:
        return (lambda: self.client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]),
            openai.NotFoundError)

    def cancel(self, text: str) -> None:
        s = self.client.chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": text}], stream=True)
        it = iter(s)
        next(it), next(it)
        s.close()


class OpenAIAsync(Client):
    name, package = "openai-async", "openai"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url

    def _client(self) -> openai.AsyncOpenAI:  # one per event loop
        return openai.AsyncOpenAI(base_url=self.url, api_key=MASTER, max_retries=0)

    def chat(self, text: str) -> str:
        async def go() -> str:
            async with self._client() as c:
                r = await c.chat.completions.create(
                    model="gpt-x", messages=[{"role": "user", "content": text}])
            return r.choices[0].message.content or ""
        return asyncio.run(go())

    def stream(self, text: str) -> list[str]:
        async def go() -> list[str]:
            async with self._client() as c:
                s = await c.chat.completions.create(
                    model="gpt-x", messages=[{"role": "user", "content": text}], stream=True)
                return [ch.choices[0].delta.content async for ch in s
                        if ch.choices and ch.choices[0].delta.content]
        return asyncio.run(go())

    def tools(self, text: str) -> tuple[str, dict[str, Any]]:
        async def go() -> Any:
            async with self._client() as c:
                return await c.chat.completions.create(
                    model="gpt-x", messages=[{"role": "user", "content": text}],
                    tools=[openai.pydantic_function_tool(Weather, name="get_weather")])
        import json
        call = (asyncio.run(go()).choices[0].message.tool_calls or [])[0]
        return call.function.name, json.loads(call.function.arguments)

    def structured(self, text: str) -> Weather:
        async def go() -> Any:
            async with self._client() as c:
                return await c.chat.completions.parse(
                    model="gpt-x", messages=[{"role": "user", "content": text}],
                    response_format=Weather)
        parsed = asyncio.run(go()).choices[0].message.parsed
        assert parsed is not None
        return parsed  # type: ignore[no-any-return]

    def embed(self, texts: list[str]) -> list[list[float]]:
        async def go() -> Any:
            async with self._client() as c:
                return await c.embeddings.create(model="emb-up", input=texts)
        return [d.embedding for d in asyncio.run(go()).data]

    def logprobs(self, text: str) -> list[str]:
        async def go() -> Any:
            async with self._client() as c:
                return await c.chat.completions.create(
                    model="gpt-x", messages=[{"role": "user", "content": text}],
                    logprobs=True, top_logprobs=2)
        lp = asyncio.run(go()).choices[0].logprobs
        return [e.token for e in lp.content or ()]

    def choices(self, text: str, n: int) -> list[str]:
        async def go() -> Any:
            async with self._client() as c:
                return await c.chat.completions.create(
                    model="gpt-x", messages=[{"role": "user", "content": text}], n=n)
        return [c.message.content or "" for c in asyncio.run(go()).choices]

    def error(self) -> tuple[Callable[[], Any], type[BaseException]]:
        async def go() -> None:
            async with self._client() as c:
                await c.chat.completions.create(
                    model="no-such-model", messages=[{"role": "user", "content": "x"}])
        return (lambda: asyncio.run(go())), openai.NotFoundError

    def cancel(self, text: str) -> None:
        async def go() -> None:
            async with self._client() as c:
                s = await c.chat.completions.create(
                    model="gpt-x", messages=[{"role": "user", "content": text}], stream=True)
                it = s.__aiter__()
                await it.__anext__()
                await it.__anext__()
                await s.close()
        asyncio.run(go())


class LangChain(Client):
    name, package = "langchain", "langchain_openai"
    embeds_token_ids = True  # OpenAIEmbeddings' default (check_embedding_ctx_length)

    def _llm(self, **kw: Any) -> Any:
        from langchain_openai import ChatOpenAI
        return ChatOpenAI(model="gpt-x", base_url=self.url, api_key=MASTER,  # type: ignore[arg-type]
                          max_retries=0, **kw)

    def chat(self, text: str) -> str:
        return str(self._llm().invoke(text).content)

    def stream(self, text: str) -> list[str]:
        return [str(c.content) for c in self._llm().stream(text) if c.content]

    def tools(self, text: str) -> tuple[str, dict[str, Any]]:
        msg = self._llm().bind_tools([get_weather]).invoke(text)
        (call,) = msg.tool_calls
        return call["name"], call["args"]

    def structured(self, text: str) -> Weather:
        out = self._llm().with_structured_output(Weather, method="json_schema").invoke(text)
        assert isinstance(out, Weather)
        return out

    def embed(self, texts: list[str]) -> list[list[float]]:
        from langchain_openai import OpenAIEmbeddings
        emb = OpenAIEmbeddings(model="emb-up", base_url=self.url, api_key=MASTER,  # type: ignore[arg-type]
                               max_retries=0)
        return emb.embed_documents(texts)

    def logprobs(self, text: str) -> list[str]:
        msg = self._llm(logprobs=True, top_logprobs=2).invoke(text)
        return [e["token"] for e in msg.response_metadata["logprobs"]["content"]]

    def choices(self, text: str, n: int) -> list[str]:
        from langchain_core.messages import HumanMessage
        result = self._llm(n=n).generate([[HumanMessage(text)]])
        return [g.text for g in result.generations[0]]

    def error(self) -> tuple[Callable[[], Any], type[BaseException]]:
        from langchain_openai import ChatOpenAI
        llm = ChatOpenAI(model="no-such-model", base_url=self.url, api_key=MASTER,  # type: ignore[arg-type]
                         max_retries=0)
        return (lambda: llm.invoke("x")), openai.NotFoundError

    def cancel(self, text: str) -> None:
        it = self._llm().stream(text)
        next(it), next(it)
        it.close()


class LiteLLM(Client):
    """The LiteLLM SDK as a client, its ``api_base`` pointing at Seawall."""

    name, package = "litellm", "litellm"

    def _call(self, **kw: Any) -> Any:
        import litellm
        base = {"model": "openai/gpt-x", "api_base": self.url, "api_key": MASTER,
                "num_retries": 0}
        return litellm.completion(**{**base, **kw})

    def chat(self, text: str) -> str:
        return str(self._call(messages=[{"role": "user", "content": text}])
                   .choices[0].message.content)

    def stream(self, text: str) -> list[str]:
        chunks = self._call(messages=[{"role": "user", "content": text}], stream=True)
        return [c.choices[0].delta.content for c in chunks
                if c.choices and c.choices[0].delta.content]

    def tools(self, text: str) -> tuple[str, dict[str, Any]]:
        import json
        resp = self._call(messages=[{"role": "user", "content": text}], tools=[WEATHER_TOOL])
        call = resp.choices[0].message.tool_calls[0]
        return call.function.name, json.loads(call.function.arguments)

    def structured(self, text: str) -> Weather:
        resp = self._call(messages=[{"role": "user", "content": text}],
                          response_format=Weather)
        return Weather.model_validate_json(resp.choices[0].message.content)

    def embed(self, texts: list[str]) -> list[list[float]]:
        import litellm
        resp = litellm.embedding(model="openai/emb-up", api_base=self.url, api_key=MASTER,
                                 input=texts)
        return [d["embedding"] for d in resp.data]

    def logprobs(self, text: str) -> list[str]:
        resp = self._call(messages=[{"role": "user", "content": text}], logprobs=True,
                          top_logprobs=2)
        return [e.token for e in resp.choices[0].logprobs.content]

    def choices(self, text: str, n: int) -> list[str]:
        resp = self._call(messages=[{"role": "user", "content": text}], n=n)
        return [c.message.content for c in resp.choices]

    def error(self) -> tuple[Callable[[], Any], type[BaseException]]:
        import litellm
        return (lambda: self._call(model="openai/no-such-model",
                                   messages=[{"role": "user", "content": "x"}]),
                litellm.NotFoundError)

    def cancel(self, text: str) -> None:
        chunks = self._call(messages=[{"role": "user", "content": text}], stream=True)
        next(chunks), next(chunks)
        chunks.completion_stream.close()


class Instructor(Client):
    """instructor structures answers through tool calls (its default mode) or
    ``response_format``; plain calls go straight to the openai client it wraps.
    Not in the ``clients`` extra: instructor 1.17 pins ``jiter<0.15``, which holds
    the openai SDK back (to 3.3; 3.63 needs jiter 0.16+). Install it by hand."""

    name, package = "instructor", "instructor"

    def _client(self, mode: Any = None) -> Any:
        import instructor
        raw = openai.OpenAI(base_url=self.url, api_key=MASTER, max_retries=0)
        return instructor.from_openai(raw, **({"mode": mode} if mode else {}))

    def tools(self, text: str) -> tuple[str, dict[str, Any]]:
        from pydantic import create_model
        model = create_model("get_weather", city=(str, ...))  # the tool is named after it
        out = self._client().chat.completions.create(
            model="gpt-x", response_model=model, max_retries=0,
            messages=[{"role": "user", "content": text}])
        return type(out).__name__, out.model_dump()

    streamed = ["Paris"]  # the fake sends the tool call's arguments in one piece

    def stream(self, text: str) -> list[str]:
        """Partial objects as the tool call's arguments stream in."""
        partials = self._client().chat.completions.create_partial(
            model="gpt-x", response_model=Weather, max_retries=0,
            messages=[{"role": "user", "content": text}])
        return [p.city for p in partials if p.city]

    def structured(self, text: str) -> Weather:
        import instructor
        out = self._client(instructor.Mode.JSON_SCHEMA).chat.completions.create(
            model="gpt-x", response_model=Weather, max_retries=0,
            messages=[{"role": "user", "content": text}])
        assert isinstance(out, Weather)
        return Weather.model_validate(out.model_dump())  # out is of a subclass

    def error(self) -> tuple[Callable[[], Any], type[BaseException]]:
        from instructor.core import InstructorRetryException
        return (lambda: self._client().chat.completions.create(
            model="no-such-model", response_model=Weather, max_retries=0,
            messages=[{"role": "user", "content": "x"}]), InstructorRetryException)


class PydanticAI(Client):
    name, package = "pydantic-ai", "pydantic_ai"

    def _model(self) -> Any:
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider
        client = openai.AsyncOpenAI(base_url=self.url, api_key=MASTER, max_retries=0)
        return OpenAIChatModel("gpt-x", provider=OpenAIProvider(openai_client=client))

    def _agent(self, **kw: Any) -> Any:
        from pydantic_ai import Agent
        return Agent(self._model(), **kw)

    def chat(self, text: str) -> str:
        return str(self._agent().run_sync(text).output)

    def stream(self, text: str) -> list[str]:
        async def go() -> list[str]:
            async with self._agent().run_stream(text) as result:
                return [d async for d in result.stream_text(delta=True, debounce_by=None)]
        return asyncio.run(go())

    def tools(self, text: str) -> tuple[str, dict[str, Any]]:
        from pydantic_ai.messages import ToolCallPart
        result = self._agent(tools=[get_weather]).run_sync(text)
        calls = [p for m in result.all_messages() for p in getattr(m, "parts", ())
                 if isinstance(p, ToolCallPart)]
        assert CALLED == ["Paris"] and len(calls) == 1  # called once, then answered
        assert result.output == text  # the fake's answer after the tool result
        return calls[0].tool_name, calls[0].args_as_dict()

    def structured(self, text: str) -> Weather:
        from pydantic_ai import NativeOutput
        out = self._agent(output_type=NativeOutput(Weather)).run_sync(text).output
        assert isinstance(out, Weather)
        return out

    def embed(self, texts: list[str]) -> list[list[float]]:
        from pydantic_ai.embeddings import Embedder
        from pydantic_ai.embeddings.openai import OpenAIEmbeddingModel
        from pydantic_ai.providers.openai import OpenAIProvider
        client = openai.AsyncOpenAI(base_url=self.url, api_key=MASTER, max_retries=0)
        model = OpenAIEmbeddingModel("emb-up", provider=OpenAIProvider(openai_client=client))
        result = Embedder(model).embed_documents_sync(texts)
        return [list(v) for v in result.embeddings]

    def logprobs(self, text: str) -> list[str]:
        from pydantic_ai.messages import ModelResponse
        from pydantic_ai.models.openai import OpenAIChatModelSettings
        result = self._agent().run_sync(text, model_settings=OpenAIChatModelSettings(
            openai_logprobs=True, openai_top_logprobs=2))
        resp = result.all_messages()[-1]
        assert isinstance(resp, ModelResponse)
        return [e["token"] for e in (resp.provider_details or {})["logprobs"]]

    def error(self) -> tuple[Callable[[], Any], type[BaseException]]:
        from pydantic_ai import Agent
        from pydantic_ai.exceptions import ModelHTTPError
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider
        client = openai.AsyncOpenAI(base_url=self.url, api_key=MASTER, max_retries=0)
        agent = Agent(OpenAIChatModel("no-such-model",
                                      provider=OpenAIProvider(openai_client=client)))
        return (lambda: agent.run_sync("x")), ModelHTTPError

    def cancel(self, text: str) -> None:
        async def go() -> None:
            async with self._agent().run_stream(text) as result:
                got = 0
                async for _ in result.stream_text(delta=True, debounce_by=None):
                    got += 1
                    if got == 2:
                        break
        asyncio.run(go())


class LlamaIndex(Client):
    """Not in the ``clients`` extra: llama-index-llms-openai requires openai < 3 (it
    would downgrade the SDK every other test uses) and brings about 150 MB
    (llama-index-core, nltk, SQLAlchemy, networkx). Install it by hand to run these."""

    name, package = "llamaindex", "llama_index.llms.openai_like"
    broken = {"cancel": "closing stream_chat()'s generator leaves the HTTP response open "
                        "(LlamaIndex iterates the openai stream without closing it), so "
                        "the gateway streams on to the end"}

    def _llm(self, **kw: Any) -> Any:
        from llama_index.llms.openai_like import OpenAILike
        return OpenAILike(model="gpt-x", api_base=self.url, api_key=MASTER, max_retries=0,
                          is_chat_model=True, is_function_calling_model=True,
                          context_window=8192, **kw)

    @staticmethod
    def _user(text: str) -> list[Any]:
        from llama_index.core.llms import ChatMessage
        return [ChatMessage(role="user", content=text)]

    def chat(self, text: str) -> str:
        return str(self._llm().chat(self._user(text)).message.content)

    def stream(self, text: str) -> list[str]:
        return [r.delta for r in self._llm().stream_chat(self._user(text)) if r.delta]

    def tools(self, text: str) -> tuple[str, dict[str, Any]]:
        from llama_index.core.tools import FunctionTool
        llm = self._llm()
        resp = llm.chat_with_tools([FunctionTool.from_defaults(fn=get_weather)], user_msg=text)
        (call,) = llm.get_tool_calls_from_response(resp, error_on_no_tool_call=True)
        return call.tool_name, call.tool_kwargs

    def structured(self, text: str) -> Weather:
        fmt = {"type": "json_schema", "json_schema": {
            "name": "Weather", "schema": Weather.model_json_schema()}}
        llm = self._llm(additional_kwargs={"response_format": fmt})
        return Weather.model_validate_json(str(llm.chat(self._user(text)).message.content))

    def logprobs(self, text: str) -> list[str]:
        resp = self._llm(logprobs=True, top_logprobs=2).chat(self._user(text))
        return [alts[0].token for alts in resp.logprobs or ()]

    def error(self) -> tuple[Callable[[], Any], type[BaseException]]:
        from llama_index.llms.openai_like import OpenAILike
        llm = OpenAILike(model="no-such-model", api_base=self.url, api_key=MASTER,
                         max_retries=0, is_chat_model=True)
        return (lambda: llm.chat(self._user("x"))), openai.NotFoundError

    def cancel(self, text: str) -> None:
        it = self._llm().stream_chat(self._user(text))
        next(it), next(it)
        it.close()


NODE_DIR = Path(__file__).parent / "node"


class NodeError(Exception):
    """An exception a Node client raised: its class name, status and message."""


class NodeClient(Client):
    """A Node client run by tests/e2e/node/clients.mjs, one feature per process.
    Skipped without ``node`` or without the packages ``setup.sh --dev`` installs."""

    error_class = ""  # the JS exception class a 404 raises

    @classmethod
    def available(cls) -> None:
        if shutil.which("node") is None:
            pytest.skip("node is not installed")
        if not (NODE_DIR / "node_modules").is_dir():
            pytest.skip("the Node clients are not installed (scripts/setup.sh --dev with npm)")

    def _run(self, feature: str, text: str) -> Any:
        proc = subprocess.run(["node", str(NODE_DIR / "clients.mjs"), self.name, feature,
                               self.url, MASTER, text], capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        if "na" in out:
            raise NotApplicable(out["na"])
        if "error" in out:
            e = out["error"]
            raise NodeError(f"{e['class']} ({e['status']}): {e['message']}")
        return out["result"]

    def chat(self, text: str) -> str:
        return str(self._run("chat", text))

    def stream(self, text: str) -> list[str]:
        return list(self._run("stream", text))

    def tools(self, text: str) -> tuple[str, dict[str, Any]]:
        name, args = self._run("tools", text)
        return name, args

    def structured(self, text: str) -> Weather:
        return Weather.model_validate(self._run("structured", text))

    def embed(self, texts: list[str]) -> list[list[float]]:
        return list(self._run("embeddings", json.dumps(texts)))

    def logprobs(self, text: str) -> list[str]:
        return list(self._run("logprobs", text))

    def choices(self, text: str, n: int) -> list[str]:
        assert n == 3  # the script asks for 3
        return list(self._run("n", text))

    def error(self) -> tuple[Callable[[], Any], type[BaseException]]:
        def call() -> None:
            try:
                self._run("errors", "x")
            except NodeError as e:
                assert str(e).startswith(f"{self.error_class} (404)"), str(e)
                raise
        return call, NodeError

    def cancel(self, text: str) -> None:
        assert self._run("cancel", text) == 2


class OpenAINode(NodeClient):
    name, error_class = "openai-node", "NotFoundError"


class AISDK(NodeClient):
    """The Vercel AI SDK with its OpenAI-compatible provider."""

    name, error_class = "ai-sdk", "APICallError"


WEATHER_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}

CLIENTS: list[type[Client]] = [OpenAISync, OpenAIAsync, LangChain, LlamaIndex, LiteLLM,
                               Instructor, PydanticAI, OpenAINode, AISDK]
FEATURES = ("chat", "stream", "tools", "structured", "embeddings", "logprobs", "n", "errors",
            "cancel")


@pytest.fixture(params=CLIENTS, ids=lambda c: c.name)
def client(request: pytest.FixtureRequest, gw: Running, upstream: FakeUpstreamClient
           ) -> Client:
    cls: type[Client] = request.param
    cls.available()
    upstream.reset()
    CALLED.clear()
    feature = request.node.originalname.removeprefix("test_")
    if feature in cls.covered:
        pytest.skip(f"covered by {cls.covered[feature]}")
    if feature in cls.broken:
        request.applymarker(pytest.mark.xfail(reason=cls.broken[feature], strict=True))
    return cls(gw.url + "/v1")


def run(feature: Callable[[], Any]) -> Any:
    try:
        return feature()
    except NotApplicable as e:
        pytest.skip(f"n/a: {e}")


def sent(upstream: FakeUpstreamClient) -> dict[str, Any]:
    """The last request body the upstream received."""
    body: dict[str, Any] = upstream.calls()["requests"][-1]
    return body


def test_chat(client: Client, upstream: FakeUpstreamClient) -> None:
    assert run(lambda: client.chat(ECHO)) == ECHO
    assert sent(upstream)["messages"][-1] == {"role": "user", "content": ECHO}


def test_stream(client: Client, upstream: FakeUpstreamClient) -> None:
    assert run(lambda: client.stream(ECHO)) == client.streamed  # piece by piece
    assert sent(upstream)["stream"] is True


def test_tools(client: Client, upstream: FakeUpstreamClient) -> None:
    name, args = run(lambda: client.tools(ASK_WEATHER))
    assert (name, args) == ("get_weather", {"city": "Paris"})
    assert [t["function"]["name"] for t in sent(upstream)["tools"]] == ["get_weather"]


def test_structured(client: Client, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"text": '{"city": "Paris"}'})
    assert run(lambda: client.structured("Which city? Answer in JSON.")) == Weather(city="Paris")
    fmt = sent(upstream)["response_format"]
    assert fmt["type"] == "json_schema"
    assert set(fmt["json_schema"]["schema"]["properties"]) == {"city"}


def test_embeddings(client: Client, upstream: FakeUpstreamClient,
                    tiktoken_offline: None) -> None:
    vectors = run(lambda: client.embed(TEXTS))
    assert len(vectors) == 2 and all(len(v) == 8 for v in vectors)
    assert vectors[0] != vectors[1]
    body = sent(upstream)
    assert body["model"] == "fake-embedding" and len(body["input"]) == 2
    if client.embeds_token_ids:  # passed through to the upstream as sent
        assert all(isinstance(t, int) for ids in body["input"] for t in ids)
    else:
        assert body["input"] == TEXTS


def test_logprobs(client: Client, upstream: FakeUpstreamClient) -> None:
    assert run(lambda: client.logprobs(ECHO)) == WORDS
    assert sent(upstream)["logprobs"] is True


def test_n(client: Client, upstream: FakeUpstreamClient) -> None:
    assert run(lambda: client.choices(ECHO, 3)) == [ECHO] * 3
    assert sent(upstream)["n"] == 3


def test_errors(client: Client) -> None:
    call, expected = run(client.error)
    with pytest.raises(expected) as e:
        call()
    assert "no-such-model" in str(e.value)


def test_cancel(client: Client, gw: Running, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"text": LONG, "tokens_per_s": 50})
    marker = f"cancel-{client.name}-{uuid.uuid4().hex[:8]}"
    run(lambda: client.cancel(marker))
    deadline = time.monotonic() + 5
    while True:
        rows = [t for t in gw.traces(50) if marker in str(t["input"])]
        if rows and rows[0]["status"] != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert rows, "no trace record for the cancelled stream"
    assert rows[0]["status"] == 499 and rows[0]["error_code"] == "client_closed_request"
    assert len((rows[0]["output"] or "").split()) < 200  # generation stopped early
