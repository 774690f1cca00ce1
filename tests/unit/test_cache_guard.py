"""The semantic cache's false-hit guard: each check refuses what it should and lets
paraphrases through (bench/cache_eval.py measures it on real question pairs)."""

from __future__ import annotations

import pytest

from seawall.cache.guard import FalseHitGuard


@pytest.fixture(scope="module")
def guard() -> FalseHitGuard:
    return FalseHitGuard()


# (check that must fail, query, cached question it must not be served from)
REFUSED = [
    ("negation", "How do I enable 2FA?", "How do I disable 2FA?"),
    ("negation", "Are nail clippers allowed on planes?",
     "Why are nail clippers not allowed on planes?"),
    ("negation", "How can I not have a job and be happy?",
     "How can I have a job and not be happy?"),
    ("negation", "What is it like to live a life full of regrets?",
     "What is it like to live a life without regrets?"),
    ("negation", "How do I increase my weight?", "How do I decrease my weight?"),
    ("opposite", "What is the best thing about yourself?",
     "What is the worst thing about yourself?"),
    ("opposite", "What should I eat before a run?", "What should I eat after a run?"),
    ("number", "Where can I buy Jordan 6 shoes?", "Where can I buy Jordan 5 shoes?"),
    ("number", "How do I get 10 CGPA in class 11?", "How do I get 10 CGPA in class 9?"),
    ("number", "Is a 2GB RAM phone enough?", "Is a 1GB RAM phone enough?"),
    ("number", "Why is the iPhone 6 so expensive?", "Why is the iPhone so expensive?"),
    ("number", "How does the HP LaserJet M604n print?", "How does the HP LaserJet M604dn print?"),
    ("unit", "How long does it take to run 5 km?", "How long does it take to run 5 miles?"),
    ("unit", "Is 16 GB of storage enough?", "Is 16 TB of storage enough?"),
    ("date", "What happened in 2011?", "What happened in 2012?"),
    ("date", "When are the results of the July exam declared?",
     "When are the results of the October exam declared?"),
    ("date", "What are the chances of WW3 in 2017?", "What are the chances of WW3?"),
    ("entity", "Was George W. Bush a good president?", "Was George H.W. Bush a good president?"),
    ("entity", "What are the nudity laws in Vermont?", "What are the nudity laws in Maryland?"),
    ("entity", "How do I install Python on Ubuntu?", "How do I install Python on Windows?"),
    ("code", "What does os.path.join return?", "What does os.path.split return?"),
    ("code", "Why is my_var undefined?", "Why is other_var undefined?"),
    ("quote", 'How do you say "good morning" in French?', 'How do you say "good night" in French?'),
    ("order", "Is it safe to drive from Texas to California?",
     "Is it safe to drive from California to Texas?"),
    ("order", "Why is Messi better than Ronaldo?", "Why is Ronaldo better than Messi?"),
    ("context", "What is the solution to this math problem?",
     "How do I solve this math problem?"),
    ("context", "Who is this girl in the picture?", "Who is the girl in this picture?"),
]

# Paraphrases: casing, punctuation, word order, contractions, plural/singular, UK/US
# spelling, a dropped or added filler word.
SERVED = [
    ("How do I enable 2FA?", "how do i enable 2fa"),
    ("What's the best way to learn Python?", "What is the best way to learn python?"),
    ("What are the best places to visit in Goa?", "Which are the best places to visit in goa?"),
    ("What is the colour of the sky?", "What is the color of the sky?"),
    ("How do I organise my notes?", "How do I organize my notes?"),
    ("What are the symptoms of a hyperextended knee?",
     "What are the symptoms of hyperextended knees?"),
    ("What is the difference between a mocktail and a cocktail?",
     "What is the difference between a cocktail and a mocktail?"),
    ("Why can't I understand myself?", "Why do I not understand myself?"),
    ("Why doesn't Spotify work in India?", "Why isn't Spotify available in India?"),
    ("How do I know if a guy has a crush on me?",
     "How do I know if a guy has a crush on me or not?"),
    ("How can I make money as a thirteen year old?", "How can I make money as a 13 year old?"),
    ("What is the best laptop under 30K?", "Which is the best laptop under 30,000?"),
    ("What happens on my 1st date?", "What happens on my first date?"),
    ("Do U.S. citizens need a visa for Canada?", "Do USA citizens need a visa for Canada?"),
    ("Why do people hate Hilary Clinton?", "Why do people hate Hillary Clinton?"),
    ("How do I earn money online without investment?",
     "How can I earn money online without any investment?"),
    ("Can I become an engineer after B.Tech?", "Can I become an engineer after B.Tech"),
    ("I lied to my girlfriend.What should I do?", "I lied to my girlfriend. What should I do?"),
    ("Why is Donald Trump so popular?", "Why is donald trump so popular?"),
    ("How do I learn ML?", "How do I learn Machine Learning?"),
    ("Is 2 GB of RAM enough?", "Is 2GB RAM enough?"),
]


@pytest.mark.parametrize(("check", "query", "candidate"), REFUSED)
def test_refuses_false_hit(guard: FalseHitGuard, check: str, query: str,
                           candidate: str) -> None:
    assert guard.check(query, candidate) == check
    assert guard.check(candidate, query) == check  # symmetric


@pytest.mark.parametrize(("check", "query", "candidate"), REFUSED)
def test_each_check_alone_catches_its_case_and_only_it(check: str, query: str,
                                                       candidate: str) -> None:
    assert FalseHitGuard([check]).check(query, candidate) == check
    others = [c for c in FalseHitGuard.CHECKS if c != check]
    # The other checks may also notice (the 2FA pair differs in one word only, which is
    # the point); what matters is that this check is the one that catches it.
    assert FalseHitGuard(others).check(query, candidate) in (None, *others)


@pytest.mark.parametrize(("query", "candidate"), SERVED)
def test_serves_paraphrase(guard: FalseHitGuard, query: str, candidate: str) -> None:
    assert guard.check(query, candidate) is None
    assert guard.check(candidate, query) is None


@pytest.mark.parametrize("check", FalseHitGuard.CHECKS)
def test_every_check_has_a_refused_example(check: str) -> None:
    assert any(c == check for c, _, _ in REFUSED)


def test_identical_text_is_served(guard: FalseHitGuard) -> None:
    text = "How do I disable 2FA on my account in 2024?"
    assert guard.check(text, text) is None


def test_checks_subset_and_order() -> None:
    assert FalseHitGuard([]).check("How do I enable 2FA?", "How do I disable 2FA?") is None
    only_numbers = FalseHitGuard(["number"])
    assert only_numbers.checks == ("number",)
    assert only_numbers.check("How do I enable 2FA?", "How do I disable 2FA?") is None
    assert only_numbers.check("Jordan 6 shoes", "Jordan 5 shoes") == "number"
    assert FalseHitGuard().checks == FalseHitGuard.CHECKS
    assert FalseHitGuard(reversed(FalseHitGuard.CHECKS)).checks == FalseHitGuard.CHECKS


def test_unknown_check_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'spelling'") as err:
        FalseHitGuard(["number", "spelling"])
    for name in FalseHitGuard.CHECKS:
        assert name in str(err.value)


def test_check_names() -> None:
    assert set(FalseHitGuard.CHECKS) >= {"negation", "number", "unit", "date", "entity",
                                         "code", "quote", "opposite", "order", "context"}
