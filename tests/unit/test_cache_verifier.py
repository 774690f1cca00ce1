"""The semantic cache's verifier: two texts with the same words but other roles are
refused, and paraphrases that only move or coordinate words pass
(bench/cache_eval.py and bench/nearmiss.py measure it on many pairs)."""

from __future__ import annotations

import pytest
import yaml

from seawall.cache.guard import FalseHitGuard
from seawall.cache.verify import CandidateVerifier


@pytest.fixture(scope="module")
def verifier() -> CandidateVerifier:
    return CandidateVerifier()


# (check that must refuse, query, cached question it must not be served from)
REFUSED = [
    # who did what to whom
    ("swap", "Did Arsenal beat Chelsea?", "Did Chelsea beat Arsenal?"),
    ("swap", "Why did the cat chase the dog?", "Why did the dog chase the cat?"),
    ("swap", "Acme bought Globex in 1990.", "Globex bought Acme in 1990."),
    ("swap", "In 2004, Alice succeeded Bob as head coach of Porto.",
     "In 2004, Bob succeeded Alice as head coach of Porto."),
    # which place / which came first
    ("swap", "What are the cheapest flights from New York to Florida?",
     "What are the cheapest flights from Florida to New York?"),
    ("swap", "How do I convert a PDF file to Word?", "How do I convert a Word file to PDF?"),
    ("swap", "Did the Renaissance happen before the Reformation?",
     "Did the Reformation happen before the Renaissance?"),
    ("swap", "Vera was born in Paris in 1901 and moved to Oslo at the age of 5.",
     "Vera was born in Oslo in 1901 and moved to Paris at the age of 5."),
    ("swap", "The station was opened in 1911 and closed in 1962.",
     "The station was opened in 1962 and closed in 1911."),
    ("swap", "The river rises in Peru and, after crossing several mountain ranges, flows "
     "into the sea in Chile.", "The river rises in Chile and, after crossing several "
     "mountain ranges, flows into the sea in Peru."),
    ("swap", "Bill Gates donated $28 billion when he was worth $50 billion.",
     "Bill Gates donated $50 billion when he was worth $28 billion."),
    ("swap", "Is a 3:2 program for computer science worth it?",
     "Is a 2:3 program for computer science worth it?"),
    # which entity holds which role
    ("swap", "Is Priya the teacher of Hiro?", "Is Hiro the teacher of Priya?"),
    ("swap", "Is Python better than Java for beginners?",
     "Is Java better than Python for beginners?"),
    ("swap", "Alice is the mother of Bob, who later became mayor of Lima.",
     "Bob is the mother of Alice, who later became mayor of Lima."),
    ("wh-role", "Who is the father of Alice?", "Whose father is Alice?"),
    ("wh-role", "Who did Alice beat in the final?", "Who beat Alice in the final?"),
    # a direction reversed around a word the swap check skips ("US" is a stop word)
    ("direction", "What are good calling cards from US to India?",
     "What are good calling cards from India to US?"),
    ("direction", "How do I translate this to English?", "How do I translate English to this?"),
    ("direction", "How do you convert 16 into a fraction?",
     "How do you convert a fraction into 16?"),
    # the same numbers bound to other words
    ("number-order", "I am 18 and have been in a relationship for 8 months. What should I do?",
     "I am 8 and have been in a relationship for 18 months. What should I do?"),
    ("number-order", "A car travels 40 km at 80 km/h, then 40 km at 40 km/h. Its speed over 80 km?",
     "A car travels 80 km at 40 km/h, then 80 km at 80 km/h. Its speed over 40 km?"),
    # the same names in another order, one of them said twice
    ("name-order", "Would scientists who do an AMA on Reddit answer on Quora if they knew Quora?",
     "Would scientists who do an AMA on Quora answer on Reddit if they knew Reddit?"),
    ("name-order", "Alice sent Bob a letter. Did Bob reply to Alice?",
     "Bob sent Alice a letter. Did Alice reply to Bob?"),
    # one more negation among the same words
    ("polarity", "How can I verify a Gmail account without a phone?",
     "How can't I verify a Gmail account without a phone?"),
]

# (query, cached question): the same question, which the verifier must serve.
SERVED = [
    # coordinations swap freely
    ("What is the difference between Java and Python?",
     "What is the difference between Python and Java?"),
    ("Should I learn Greek or Latin?", "Should I learn Latin or Greek?"),
    ("Which came first, the chicken or the egg?", "Which came first, the egg or the chicken?"),
    ("Acme was founded by Bob and Alice in Oslo.", "Acme was founded by Alice and Bob in Oslo."),
    ("Which came first, the fall of Rome or the First World War?",
     "Which came first, the First World War or the fall of Rome?"),
    # a phrase moved, each keeping its preposition
    ("What are the cheapest flights to Oslo from Paris?",
     "What are the cheapest flights from Paris to Oslo?"),
    ("Katz was born in 1947 in Sweden and moved to New York at the age of 1.",
     "Katz was born in Sweden in 1947 and moved to New York at the age of 1."),
    ("In 1990, Acme bought Globex.", "Acme bought Globex in 1990."),
    ("The 1975 season of the NBA was the 30th season of the National Basketball Association.",
     "The 1975 season of the National Basketball Association was the 30th season of the NBA."),
    # a yes/no question's negative form asks the same thing
    ("Isn't it worth doing an MBA without any work experience?",
     "Is it worth doing an MBA without any work experience?"),
    # the same roles in other words
    ("Was Bob defeated by Alice?", "Did Alice defeat Bob?"),
    ("Is Hiro Priya's teacher?", "Is Hiro the teacher of Priya?"),
    ("How do I learn Python quickly?", "How can I learn Python fast?"),
    ("What is the best way to learn French?", "What is the best way to learn French?"),
    ("Who is the best football player?", "Who is the best football player ever?"),
    # "to" as an infinitive, not a direction
    ("What is the best way to learn chess?", "How does one learn to play chess?"),
    ("Is it hard to learn Java after Python?", "Is Java hard to learn after Python?"),
    # a direction said the other way round, same ends
    ("How do I get to Oslo from Paris by train?", "How do I get from Paris to Oslo by train?"),
    ("How do I upgrade to Windows 8.1 from Windows 8?",
     "How do I update Windows from version 8 to 8.1?"),
    # coordinated numbers trade places freely
    ("How will the ban of 500 and 1000 rupee notes affect the economy?",
     "How will the ban of 1000 and 500 rupee notes affect the economy?"),
    ("Should I get the 2015 MacBook Pro or the 2016 MacBook Pro?",
     "Should I buy the 2016 or 2015 MacBook Pro?"),
    # a number or a name said again moves nothing
    ("What was the GDP of India in 2016 and what was it in 2015?",
     "What was India's GDP in 2016 and in 2015?"),
    ("Did Oscar warn Farid?", "Was Farid warned by Oscar?"),
    ("Is Quora better than Reddit? Why do people use Quora?",
     "Why do people use Quora, and is Quora better than Reddit?"),
]


@pytest.mark.parametrize(("check", "query", "cached"), REFUSED)
def test_refuses_swapped_roles(verifier: CandidateVerifier, check: str, query: str,
                               cached: str) -> None:
    assert verifier.check(query, cached) == check
    assert verifier.check(cached, query) == check  # either side may be the cached one


@pytest.mark.parametrize(("query", "cached"), SERVED)
def test_serves_paraphrases(verifier: CandidateVerifier, query: str, cached: str) -> None:
    assert verifier.check(query, cached) is None
    assert verifier.check(cached, query) is None


def test_refuses_what_the_guard_serves() -> None:
    """Long statements and wh-questions with the same words: the facet guard (its
    ``order`` check looks at short bridges only) serves these; the verifier refuses."""
    guard, verifier = FalseHitGuard(), CandidateVerifier()
    pairs = [(q, c) for check, q, c in REFUSED if check == "wh-role" or "born" in q
             or "station" in q]
    assert len(pairs) == 4
    for query, cached in pairs:
        assert guard.check(query, cached) is None
        assert verifier.check(query, cached) is not None
    assert guard.check(*next((q, c) for k, q, c in REFUSED if k == "polarity")) is None


def test_year_before_in_is_a_year_not_inches() -> None:
    """ "born in 1947 in Sweden": the year is not 1947 inches (the number check refused
    this paraphrase before)."""
    assert FalseHitGuard().check("Katz was born in 1947 in Sweden.",
                                 "Katz was born in Sweden in 1947.") is None


def test_checks_can_be_chosen(verifier: CandidateVerifier) -> None:
    only_wh = CandidateVerifier(["wh-role"])
    assert only_wh.check("Did Arsenal beat Chelsea?", "Did Chelsea beat Arsenal?") is None
    assert CandidateVerifier([]).check("Who is the father of Alice?",
                                       "Whose father is Alice?") is None
    with pytest.raises(ValueError, match="unknown verifier check"):
        CandidateVerifier(["grammar"])


def test_settings_per_model_and_unknown_checks() -> None:
    """On by default for every model; ``models.NAME.cache.verify: off`` turns it off for
    one; an unknown check name is a configuration error that names the key."""
    from seawall.cache.policy import ModelCachePolicy
    from seawall.config import ConfigError, parse_settings

    # YAML reads an unquoted ``off`` as false: it means off.
    s = parse_settings(yaml.safe_load("""
        providers: {f: {type: openai, base_url: "http://127.0.0.1:1"}}
        models: {a: {provider: f}, b: {provider: f, cache: {verify: off}}}"""), env={})
    a = ModelCachePolicy.resolve(s.cache, s.models["a"].cache)
    b = ModelCachePolicy.resolve(s.cache, s.models["b"].cache)
    assert a.verify == CandidateVerifier.CHECKS and b.verify == ()
    with pytest.raises(ConfigError, match=r"cache.semantic.verify.checks.*'grammar'"):
        parse_settings({"cache": {"semantic": {"verify": {"checks": ["grammar"]}}}}, env={})
    # The verifier model must be a declared chat model; verify: off drops it too.
    with pytest.raises(ConfigError, match=r"cache.semantic.verify.model: 'judge'"):
        parse_settings({"cache": {"semantic": {"verify": {"model": "judge"}}}}, env={})
    s = parse_settings(yaml.safe_load("""
        cache: {semantic: {verify: {model: a}}}
        providers: {f: {type: openai, base_url: "http://127.0.0.1:1"}}
        models: {a: {provider: f}, b: {provider: f, cache: {verify: off}}}"""), env={})
    assert ModelCachePolicy.resolve(s.cache, s.models["a"].cache).verify_model == "a"
    assert ModelCachePolicy.resolve(s.cache, s.models["b"].cache).verify_model is None


def test_heavy_reordering_is_refused_in_bounded_work(verifier: CandidateVerifier) -> None:
    """A long text against itself reversed: refused (no paraphrase reorders that much),
    after a bounded number of comparisons rather than all ~80,000 pairs."""
    words = " ".join(f"w{i}" for i in range(400))
    assert verifier.check(words, " ".join(reversed(words.split()))) == "swap"


def test_verifier_model_answers_are_read_precision_first() -> None:
    """Only a yes serves; no, anything else, an error or no answer in time refuses
    (tests/integration/test_cache_verifier_model.py runs it through the gateway)."""
    import asyncio
    from dataclasses import dataclass
    from typing import Any

    from seawall.cache.model_verify import ModelVerifier

    @dataclass
    class Said:
        text: str

    def answering(reply: str | Exception, delay: float = 0.0) -> Any:
        async def ask(model: str, messages: list[dict[str, Any]], *, timeout_s: float,
                      max_tokens: int) -> Said:
            await asyncio.sleep(delay)
            if isinstance(reply, Exception):
                raise reply
            return Said(reply)
        return ask

    def verdict(reply: str | Exception, delay: float = 0.0) -> str | None:
        v = ModelVerifier(answering(reply, delay), timeout_s=0.2)
        return asyncio.run(v.check("judge", "Is it safe?", "Is it not safe?"))

    assert verdict("Yes") is None and verdict(" **yes**, same") is None
    assert verdict("No.") == "model" and verdict("no") == "model"
    assert verdict("Question 1: Is it not safe?") == "model-unclear"
    assert verdict("") == "model-unclear"
    assert verdict(RuntimeError("upstream down")) == "model-error"
    assert verdict("yes", delay=5.0) == "model-timeout"
