"""The prompt registry without a server: validation, files, the store's
versions and labels, rendering and its sandbox, diffs, the pipeline stage on
a bare RequestContext, and the CLI through click's runner."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from click.testing import CliRunner

from seawall.api.wire import ChatCompletionRequest, convert
from seawall.errors import InvalidRequest, SeawallError
from seawall.pipeline.context import RequestContext
from seawall.prompts.cli import prompts as prompts_cli
from seawall.prompts.errors import (
    LabelError,
    MissingVariables,
    PromptNotFound,
    RenderFailed,
    SpecError,
)
from seawall.prompts.files import PromptFilesError, dump_yaml, load_file, load_files
from seawall.prompts.model import PromptSpec, parse_spec, spec_from_mapping
from seawall.prompts.registry import PromptRegistry
from seawall.prompts.render import compile_spec, environment
from seawall.prompts.stage import PromptStage
from seawall.prompts.wire import PromptRef

FIXTURES = Path(__file__).parent.parent / "fixtures" / "prompts"

GREETING: dict[str, Any] = {
    "template": "You help {{ customer_name }} with {{ product }}.",
    "temperature": 0.2, "max_tokens": 100,
}


@pytest.fixture
def registry(tmp_path: Path) -> Any:
    r = PromptRegistry(tmp_path / "prompts.db")
    yield r
    r.close()


def _spec(**fields: Any) -> PromptSpec:
    return parse_spec({**GREETING, **fields})


def _compiled(template: str, **fields: Any) -> Any:
    return compile_spec(parse_spec({"template": template, **fields}), environment(), "t@1")


# The model: validation with errors that name the field.


@pytest.mark.parametrize(("data", "field", "says"), [
    ({}, "template", "give `template` or `messages`"),
    ({"template": "a", "messages": [{"role": "user", "content": "b"}]}, "template", "not both"),
    ({"template": "  "}, "template", "must not be empty"),
    ({"messages": []}, "messages", "non-empty list"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "one of system"),
    ({"messages": [{"role": "user", "content": "x", "name": "n"}]}, "messages[0].name",
     "unknown field"),
    ({"template": "x", "temprature": 1}, "temprature", "did you mean `temperature`"),
    ({"template": "x", "temperature": 3}, "temperature", "<= 2"),
    ({"template": "x", "max_tokens": "many"}, "max_tokens", "Expected `int | null`, got `str`"),
    ({"template": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop", "length <= 4"),
    ({"template": "x", "variables": {"bad-name": None}}, "variables.bad-name", "identifier"),
    ({"template": "x", "variables": {"v": {"descr": "?"}}}, "variables.v.descr",
     "unknown field"),
    ({"template": "x", "metadata": ["a"]}, "metadata", "mapping"),
])
def test_invalid_definitions_name_the_field(data: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_spec(data)
    assert e.value.field == field
    assert says in str(e.value)


def test_names_and_the_template_shorthand() -> None:
    name, spec = spec_from_mapping(GREETING, "greeting")
    assert name == "greeting"  # the default (a file's stem) when there is no name field
    assert spec_from_mapping({**GREETING, "name": "other"}, "greeting")[0] == "other"
    with pytest.raises(SpecError, match="not a valid prompt name"):
        spec_from_mapping(GREETING, "has space")
    # ``template`` is one system message: both spellings are the same content.
    long = parse_spec({"messages": [{"role": "system", "content": GREETING["template"]}],
                       "temperature": 0.2, "max_tokens": 100})
    assert long.content_hash == spec.content_hash
    assert PromptSpec.from_dict(spec.to_dict()) == spec
    assert spec.document("greeting")["template"] == GREETING["template"]


def test_variables_short_and_long_forms() -> None:
    spec = _spec(variables={"customer_name": "Who", "product": {"default": "Seawall"}})
    assert spec.variables["customer_name"].description == "Who"
    assert spec.variables["customer_name"].required
    assert not spec.variables["product"].required
    assert spec.variables["product"].default == "Seawall"
    listed = _spec(variables=["customer_name", "product"])
    assert set(listed.variables) == {"customer_name", "product"} and listed.declared


# Rendering: strict variables and the sandbox.


def test_render_fills_variables_with_defaults_and_ignores_extras() -> None:
    c = _compiled("Hi {{ name }}, about {{ topic }}.",
                  variables={"name": None, "topic": {"default": "billing"}})
    assert c.render({"name": "Ana", "unused": 1}) == [
        {"role": "system", "content": "Hi Ana, about billing."}]
    assert c.render({"name": "Ana", "topic": "bugs"})[0]["content"] == "Hi Ana, about bugs."


def test_a_missing_variable_is_a_400_naming_every_missing_one() -> None:
    c = _compiled("{{ b }} {{ a }} {{ c }}", variables={"a": None, "b": None,
                                                         "c": {"default": ""}})
    with pytest.raises(MissingVariables) as e:
        c.render({})
    assert e.value.status == 400 and e.value.code == "prompt_variable_missing"
    assert e.value.names == ["a", "b"] and "a, b" in e.value.message
    assert e.value.param == "prompt.variables.a"
    # Without a variables section, the templates' variables are all required.
    with pytest.raises(MissingVariables, match="x"):
        _compiled("{{ x }}").render({})


def test_undefined_attributes_are_errors_not_empty_strings() -> None:
    with pytest.raises(RenderFailed, match="has no attribute 'name'") as e:
        _compiled("Dear {{ user.name }}").render({"user": {}})
    assert e.value.status == 400


@pytest.mark.parametrize("template", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ items.append(1) }}",  # the immutable sandbox: values cannot be changed
])
def test_the_sandbox_refuses_python_internals(template: str) -> None:
    with pytest.raises(RenderFailed, match="sandbox refused") as e:
        _compiled(template).render({"items": [1]})
    assert e.value.status == 400


def test_variables_are_values_never_templates() -> None:
    out = _compiled("Echo: {{ text }}").render({"text": "{{ ''.__class__ }} {{ 7 * 7 }}"})
    assert out[0]["content"] == "Echo: {{ ''.__class__ }} {{ 7 * 7 }}"


def test_a_message_that_renders_to_nothing_is_left_out() -> None:
    spec = parse_spec({"messages": [
        {"role": "system", "content": "Base.\n{% if strict %}\nBe strict.\n{% endif %}\n"},
        {"role": "system", "content": "{% if extra %}{{ extra }}{% endif %}"}],
        "variables": {"strict": {"default": False}, "extra": {"default": ""}}})
    c = compile_spec(spec, environment())
    assert c.render({}) == [{"role": "system", "content": "Base."}]
    assert [m["content"] for m in c.render({"strict": True, "extra": "More."})] == \
        ["Base.\nBe strict.", "More."]


def test_template_errors_are_caught_at_push_time(registry: PromptRegistry) -> None:
    with pytest.raises(SpecError) as e:
        registry.push("broken", {"messages": [{"role": "system", "content": "ok"},
                                              {"role": "user", "content": "{{ name "}]})
    assert e.value.field == "messages[1].content" and "syntax error on line 1" in str(e.value)
    with pytest.raises(SpecError, match="uses customer, which `variables` does not declare"):
        registry.push("undeclared", {"template": "{{ customer }}", "variables": {"other": None}})
    assert registry.list() == []


# The store: versions, dedupe, labels and rollback.


def test_push_versions_and_dedupes_identical_content(registry: PromptRegistry) -> None:
    first = registry.push("greeting", GREETING, source="prompts/greeting.yaml", actor="ana")
    assert first.created and first.version.version == 1
    assert [(m.label, m.from_version, m.to_version) for m in first.moves] == \
        [("production", None, 1)]  # a new prompt's first version is production
    again = registry.push("greeting", dict(GREETING))
    assert not again.created and again.version.version == 1 and again.moves == []
    changed = registry.push("greeting", {**GREETING, "temperature": 0.7})
    assert changed.created and changed.version.version == 2
    assert changed.moves == []  # production stays on v1 until promoted
    assert registry.get("greeting").version == 1
    assert registry.get("greeting", label="latest").version == 2
    assert registry.get("greeting", version=1).author == "ana"
    assert registry.get("greeting", version=1).source == "prompts/greeting.yaml"
    # Going back to old content is a new version: the newest always matches the file.
    assert registry.push("greeting", GREETING).version.version == 3


def test_push_moves_the_labels_it_is_given(registry: PromptRegistry) -> None:
    registry.push("greeting", GREETING, label_new=())
    with pytest.raises(PromptNotFound, match="has no label 'production'"):
        registry.get("greeting")
    out = registry.push("greeting", GREETING, ["staging"])  # unchanged, still labelled
    assert not out.created and [m.label for m in out.moves] == ["staging"]
    assert registry.get("greeting", label="staging").version == 1
    with pytest.raises(SpecError, match="not a valid label"):
        registry.push("greeting", GREETING, ["Staging"])
    with pytest.raises(SpecError, match="cannot be set"):
        registry.label("greeting", 1, "latest")


def test_rollback_walks_the_label_history_back(registry: PromptRegistry) -> None:
    for t in (0.1, 0.2, 0.3):
        registry.push("greeting", {**GREETING, "temperature": t}, ["production"], actor="ci")
    assert registry.get("greeting").version == 3
    back = registry.rollback("greeting", actor="oncall")
    assert (back.from_version, back.to_version, back.action, back.actor) == \
        (3, 2, "rollback", "oncall")
    assert registry.get("greeting").version == 2
    assert registry.rollback("greeting").to_version == 1  # again: one more step back
    with pytest.raises(LabelError, match="created at version 1"):
        registry.rollback("greeting")
    # A promotion after a rollback is a new move; rolling it back returns to v1.
    assert registry.label("greeting", 3, "production", actor="ana") is not None
    assert registry.label("greeting", 3, "production") is None  # already there
    assert registry.rollback("greeting").to_version == 1
    moves = registry.history("greeting").moves
    assert [(m.from_version, m.to_version, m.action) for m in moves] == [
        (None, 1, "push"), (1, 2, "push"), (2, 3, "push"), (3, 2, "rollback"),
        (2, 1, "rollback"), (1, 3, "label"), (3, 1, "rollback")]
    with pytest.raises(PromptNotFound, match="no label 'staging'"):
        registry.rollback("greeting", "staging")


def test_lookups_that_find_nothing_are_404_prompt_not_found(registry: PromptRegistry) -> None:
    registry.push("greeting", GREETING)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "nope"}, "No prompt named 'nope'"),
        ({"name": "greeting", "version": 9}, "has no version 9"),
        ({"name": "greeting", "label": "staging"}, "labels: production=v1")]
    for kwargs, says in cases:
        with pytest.raises(PromptNotFound, match=says) as e:
            registry.resolve(**kwargs)
        assert e.value.status == 404 and e.value.code == "prompt_not_found"
    with pytest.raises(PromptNotFound, match="has no version 4"):
        registry.label("greeting", 4, "staging")
    # A version wins over a label (an experiment arm may set one over the other).
    assert registry.get("greeting", label="staging", version=1).version == 1


def test_another_process_change_is_seen_by_the_next_lookup(tmp_path: Path) -> None:
    server, cli = PromptRegistry(tmp_path / "p.db"), PromptRegistry(tmp_path / "p.db")
    try:
        cli.push("greeting", GREETING)
        cli.push("greeting", {**GREETING, "temperature": 0.9}, ["production"])
        assert server.resolve("greeting").ref == "greeting@2"
        cli.rollback("greeting")
        assert server.resolve("greeting").ref == "greeting@1"
    finally:
        server.close()
        cli.close()


def test_lookup_cost_stays_far_below_half_a_millisecond(registry: PromptRegistry) -> None:
    """The per-request price of noticing CLI changes at once: one read of the
    generation row, then a dict hit (about 5 µs on a laptop)."""
    registry.push("greeting", GREETING)
    registry.resolve("greeting")
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        registry.resolve("greeting")
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 250e-6, f"{per_call * 1e6:.1f} µs per lookup"


def test_diff_is_a_unified_diff_of_the_files(registry: PromptRegistry) -> None:
    registry.push("greeting", GREETING)
    registry.push("greeting", {**GREETING, "template": "You help {{ customer_name }}.",
                               "temperature": 0.5})
    text = registry.diff("greeting", 1, 2)
    assert text.startswith("--- greeting@1\n+++ greeting@2\n")
    assert "-temperature: 0.2\n+temperature: 0.5\n" in text
    assert "+template: You help {{ customer_name }}." in text
    assert registry.diff("greeting", 2, 2) == ""


# Files.


def test_loading_the_fixture_folder(tmp_path: Path) -> None:
    files = load_files([FIXTURES])
    assert [f.name for f in files] == ["support-answer", "ticket-triage"]  # README skipped
    triage = files[1].spec
    assert triage.params == {"temperature": 0.0} and triage.messages[0].role == "system"
    assert "{% for q in queues %}" in triage.messages[0].content
    support = files[0].spec
    assert support.model == "m" and [m.role for m in support.messages] == ["system", "assistant"]
    # What `show` prints loads back as the same content.
    out = tmp_path / "support-answer.yaml"
    out.write_text(dump_yaml(support.document("support-answer")))
    assert load_file(out).spec.content_hash == support.content_hash


def test_file_errors_name_the_file_and_field_and_come_all_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("template: Hi\ntemprature: 1\n")
    (tmp_path / "b.yml").write_text("template: 'unclosed\n")
    (tmp_path / "c.md").write_text("---\ntemplate: x\n---\nbody\n")
    (tmp_path / "d.yaml").write_text("messages:\n- role: user\n  content: '{% if %}'\n")
    (tmp_path / "e.yaml").write_text("name: g\ntemplate: first\n")
    (tmp_path / "g.yaml").write_text("template: second\n")
    (tmp_path / "notes.md").write_text("# not a prompt\n")
    with pytest.raises(PromptFilesError) as e:
        load_files([tmp_path])
    problems = e.value.problems
    assert len(problems) == 5, problems
    assert problems[0].startswith(f"{tmp_path / 'a.yaml'}: temprature: unknown field")
    assert f"{tmp_path / 'b.yml'}: invalid YAML at line" in problems[1]
    assert "c.md: template: not allowed in front matter" in problems[2]
    assert "d.yaml: messages[0].content: template syntax error on line 1" in problems[3]
    assert problems[4] == f"{tmp_path / 'g.yaml'}: name: 'g' is already defined by " \
        f"{tmp_path / 'e.yaml'}"
    with pytest.raises(PromptFilesError, match="opens with YAML front matter"):
        load_file(tmp_path / "notes.md")  # named explicitly: an error, not a skip


# The request field and the stage.


def test_prompt_ref_validation() -> None:
    ok = msgspec.convert({"name": "support-answer", "variables": {"a": [1]}}, PromptRef)
    assert ok.label is None and ok.variables == {"a": [1]}
    for bad, says in [({"name": "x", "label": "a", "version": 2}, "not both"),
                      ({"name": "x", "label": "Prod"}, "regex"),
                      ({"name": "x", "version": 0}, ">= 1"),
                      ({"name": "x", "vars": {}}, "unknown field"),
                      ({"variables": {}}, "missing required field `name`")]:
        with pytest.raises(msgspec.ValidationError, match=says):
            msgspec.convert(bad, PromptRef)


def _ctx(body: dict[str, Any]) -> RequestContext:
    ctx = RequestContext(endpoint="chat.completions")
    ctx.raw = body
    ctx.model = body["model"]
    ctx.request = convert(body, ChatCompletionRequest)
    return ctx


async def test_stage_puts_the_prompt_first_and_lets_the_request_win(
        registry: PromptRegistry) -> None:
    registry.push("greeting", {**GREETING, "model": "big", "stop": ["\n\n"],
                               "max_completion_tokens": 50})
    registry.push("greeting", {**GREETING, "template": "v2 {{ customer_name }}", "model": "big"},
                  ["staging"])
    ctx = _ctx({"model": "m", "temperature": 1.0, "max_tokens": 10, "user": "u1",
                "messages": [{"role": "user", "content": "Where is my order?"}],
                "prompt": {"name": "greeting",
                           "variables": {"customer_name": "Ana", "product": "Seawall"}}})
    await PromptStage(registry).before(ctx)
    assert ctx.raw is not None and ctx.request is not None
    assert ctx.raw["messages"] == [
        {"role": "system", "content": "You help Ana with Seawall."},
        {"role": "user", "content": "Where is my order?"}]
    assert [(m.role, m.content) for m in ctx.request.messages] == \
        [(m["role"], m["content"]) for m in ctx.raw["messages"]]
    assert "prompt" not in ctx.raw  # never sent upstream
    # The request's temperature and token limit win; its limit counts for both names.
    assert ctx.raw["temperature"] == ctx.request.temperature == 1.0
    assert "max_completion_tokens" not in ctx.raw and ctx.request.max_completion_tokens is None
    assert ctx.raw["stop"] == ctx.request.stop == ["\n\n"]  # the prompt's, where unset
    assert ctx.raw["model"] == ctx.model == ctx.request.model == "m"  # the request's model
    assert ctx.prompt_version == "greeting@1"
    assert [s[0] for s in ctx.spans] == ["prompt"]
    # A label, and the prompt's model when the request asks for model "prompt".
    ctx = _ctx({"model": "prompt", "messages": [{"role": "user", "content": "hi"}],
                "prompt": {"name": "greeting", "label": "staging",
                           "variables": {"customer_name": "Bo"}}})
    await PromptStage(registry).before(ctx)
    assert ctx.prompt_version == "greeting@2" and ctx.model == "big"
    assert ctx.request is not None and ctx.request.model == "big"
    assert ctx.raw is not None and ctx.raw["messages"][0]["content"] == "v2 Bo"


class WiredRequest(ChatCompletionRequest):
    """ChatCompletionRequest with the proposed ``prompt`` field."""

    prompt: PromptRef | None = None


async def test_stage_with_the_request_field_wired(registry: PromptRegistry) -> None:
    registry.push("greeting", GREETING)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "prompt": {"name": "greeting", "variables": {"customer_name": "A", "product": "B"}}}
    ctx = RequestContext(endpoint="chat.completions", raw=body, model="m",
                         request=convert(body, WiredRequest))
    assert isinstance(ctx.request, WiredRequest) and ctx.request.prompt is not None
    await PromptStage(registry).before(ctx)
    assert isinstance(ctx.request, WiredRequest) and ctx.request.prompt is None
    assert [m.role for m in ctx.request.messages] == ["system", "user"]
    assert ctx.raw is not None and "prompt" not in ctx.raw
    assert ctx.prompt_version == "greeting@1"
    with pytest.raises(InvalidRequest, match=r"not both - at `\$.prompt`"):
        convert({**body, "prompt": {"name": "x", "label": "a", "version": 1}}, WiredRequest)


async def test_stage_after_an_experiment_arm_rewrote_the_request(
        registry: PromptRegistry) -> None:
    """The experiment stage (before this one) may point the prompt at another
    version and set the logical model in ctx.model and raw, not in the struct."""
    registry.push("greeting", {**GREETING, "model": "big"})
    registry.push("greeting", {**GREETING, "template": "v2 {{ customer_name }}"}, ["canary"])
    body = {"model": "prompt", "messages": [{"role": "user", "content": "hi"}],
            "prompt": {"name": "greeting", "version": 1,
                       "variables": {"customer_name": "A", "product": "B"}}}
    req = convert(body, WiredRequest)
    assert req.prompt is not None
    arm = msgspec.structs.replace(req.prompt, label="canary", version=None)
    ctx = RequestContext(endpoint="chat.completions", raw={**body, "model": "arm-model"},
                         model="arm-model", request=msgspec.structs.replace(req, prompt=arm))
    await PromptStage(registry).before(ctx)
    assert ctx.prompt_version == "greeting@2"
    assert ctx.model == "arm-model" and ctx.raw is not None and ctx.raw["model"] == "arm-model"
    # replace() runs PromptRef's check: an arm must not set both label and version.
    with pytest.raises(ValueError, match="not both"):
        msgspec.structs.replace(req.prompt, label="canary", version=1)


async def test_stage_errors_and_requests_without_a_prompt(registry: PromptRegistry) -> None:
    registry.push("greeting", GREETING)
    stage = PromptStage(registry)
    plain = _ctx({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    await stage.before(plain)
    assert plain.prompt_version is None and plain.spans == []
    cases: list[tuple[dict[str, Any], type[SeawallError], str]] = [
        ({"name": "nope"}, PromptNotFound, "prompt_not_found"),
        ({"name": "greeting", "variables": {"product": "x"}}, MissingVariables,
         "prompt_variable_missing"),
    ]
    with pytest.raises(InvalidRequest) as bad:  # validated with the rest of the request
        _ctx({"model": "m", "messages": [{"role": "user", "content": "hi"}],
              "prompt": {"name": "greeting", "version": 0}})
    assert bad.value.code == "invalid_value"
    for ref, err, code in cases:
        ctx = _ctx({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                    "prompt": ref})
        with pytest.raises(err) as e:
            await stage.before(ctx)
        assert e.value.code == code
        assert ctx.raw is not None and len(ctx.raw["messages"]) == 1  # left as it was
    ctx = _ctx({"model": "prompt", "messages": [{"role": "user", "content": "hi"}],
                "prompt": {"name": "greeting", "variables": {"customer_name": "a",
                                                             "product": "b"}}})
    with pytest.raises(InvalidRequest, match="sets no model") as e:
        await stage.before(ctx)
    assert e.value.code == "prompt_model_missing"


# The CLI.


def _run(config: Path, *args: str) -> Any:
    result = CliRunner().invoke(prompts_cli, [*args, "-c", str(config)],
                                env={"SEAWALL_CONFIG": "", "SEAWALL_ACTOR": "tester"})
    return result


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "seawall.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    return path


def test_cli_push_list_show_label_diff_rollback_history(config: Path, tmp_path: Path) -> None:
    r = _run(config, "push", str(FIXTURES))
    assert r.exit_code == 0, r.output
    assert "support-answer: v1 new (production → v1)" in r.output
    assert "ticket-triage: v1 new (production → v1)" in r.output
    assert (tmp_path / "data" / "prompts.db").exists()
    assert "support-answer: v1 unchanged" in _run(config, "push", str(FIXTURES)).output

    changed = tmp_path / "support-answer.yaml"
    changed.write_text((FIXTURES / "support-answer.yaml").read_text()
                       .replace("temperature: 0.2", "temperature: 0.4"))
    r = _run(config, "push", str(changed), "--label", "staging")
    assert r.exit_code == 0 and "support-answer: v2 new (staging → v2)" in r.output

    listing = _run(config, "list").output
    assert "support-answer" in listing and "production=v1, staging=v2" in listing
    shown = _run(config, "show", "support-answer", "--label", "staging").stdout
    assert shown.startswith("# support-answer@2  [staging]") and "temperature: 0.4" in shown
    assert "temperature: 0.2" in _run(config, "show", "support-answer").output
    diff = _run(config, "diff", "support-answer", "1", "2").output
    assert "-temperature: 0.2\n+temperature: 0.4" in diff

    assert "production v1 → v2" in _run(config, "label", "support-answer", "2",
                                        "production").output
    assert "production v2 → v1" in _run(config, "rollback", "support-answer").output
    history = _run(config, "history", "support-answer").output
    assert "rollback" in history and "tester" in history and "[production]" in history

    bad = _run(config, "rollback", "support-answer")
    assert bad.exit_code == 1 and "no earlier version" in bad.output
    missing = _run(config, "show", "nope")
    assert missing.exit_code == 1 and "No prompt named 'nope'" in missing.output
    both = _run(config, "show", "support-answer", "--version", "1", "--label", "x")
    assert both.exit_code == 2


def test_cli_push_of_invalid_files_pushes_nothing(config: Path, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "good.yaml").write_text("template: fine\n")
    (folder / "bad.yaml").write_text("template: '{{ x'\n")
    r = _run(config, "push", str(folder))
    assert r.exit_code == 1
    assert "bad.yaml: template: template syntax error" in r.output
    assert "no prompts" in _run(config, "list").output
    dry = _run(config, "push", "--dry-run", str(folder / "good.yaml"))
    assert dry.exit_code == 0 and "1 prompt file(s) valid: good" in dry.output
    assert "no prompts" in _run(config, "list").output
