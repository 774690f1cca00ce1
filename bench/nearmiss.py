#!/usr/bin/env python3
"""Hard near-miss pairs for the semantic cache: two texts with almost every word in
common that mean different things (roles, order, numbers, negation swapped), next to
pairs that keep their meaning (coordinations swapped, phrases moved, passives,
synonyms, real QQP duplicates).

Why: MiniLM scores both kinds about 0.96-0.97, so the cosine threshold cannot tell
them apart; the verifier (seawall/cache/verify.py) must. This set is what it is tuned
on. It is generated on the fly (deterministic, seeded), never stored in the package:

- ``qqp``: edits of QQP *dev* questions (id < 60000; research licence, read in place)
  plus real QQP dev duplicates as positives;
- ``templates``: sentences built from word lists written here (Apache-2.0 with the
  project), questions and Wikipedia-style statements.

Usage::

    .venv/bin/python bench/nearmiss.py --show 20        # print a sample
    .venv/bin/python bench/nearmiss.py --stats          # counts per kind

Each pair is (first, second, same_meaning, kind): the first is cached, the second
asked, as an outside check through the API would do.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DATA = Path("/work/shared/data/qqp_gptcache/qqp_pairs.jsonl.gz")
DEV_CUTOFF = 60_000


@dataclass(frozen=True)
class NearPair:
    first: str
    second: str
    same: bool
    kind: str


# ------------------------------------------------------------------ word lists

PEOPLE = ("Alice", "Bob", "Carlos", "Diana", "Emma", "Farid", "Grace", "Hiro", "Ivan",
          "Julia", "Kofi", "Laura", "Mohan", "Nadia", "Oscar", "Priya", "Quinn", "Rosa",
          "Samuel", "Tara", "Umar", "Vera", "Walter", "Yuki", "Zane")
PLACES = ("Paris", "London", "Berlin", "Madrid", "Tokyo", "Chicago", "Toronto", "Sydney",
          "Mumbai", "Cairo", "Lisbon", "Denver", "Boston", "Seattle", "Dublin", "Oslo",
          "Vienna", "Prague", "Lagos", "Lima", "Delhi", "Austin", "Miami", "Zurich")
COUNTRIES = ("France", "Germany", "Spain", "Japan", "Canada", "Brazil", "India", "Kenya",
             "Mexico", "Norway", "Egypt", "Peru", "Italy", "Chile", "Poland", "Ghana")
TEAMS = ("Arsenal", "Chelsea", "Liverpool", "Barcelona", "Juventus", "Ajax", "Porto",
         "Celtic", "Benfica", "Napoli", "Everton", "Valencia")
COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Wonka",
             "Stark", "Wayne", "Tyrell", "Cyberdyne", "Soylent")
# Verbs whose subject and object play different roles: (present, past, participle).
VERBS = (("beat", "beat", "beaten"), ("defeat", "defeated", "defeated"),
         ("hire", "hired", "hired"), ("sue", "sued", "sued"),
         ("follow", "followed", "followed"), ("teach", "taught", "taught"),
         ("replace", "replaced", "replaced"), ("pay", "paid", "paid"),
         ("call", "called", "called"), ("invite", "invited", "invited"),
         ("interview", "interviewed", "interviewed"), ("train", "trained", "trained"),
         ("coach", "coached", "coached"), ("mentor", "mentored", "mentored"),
         ("help", "helped", "helped"), ("warn", "warned", "warned"))
ROLES = ("father", "mother", "teacher", "boss", "manager", "doctor", "lawyer", "coach",
         "mentor", "landlord", "sponsor", "guardian")
COMPARATIVES = ("older", "taller", "richer", "faster", "stronger", "younger", "smarter")
THINGS = ("Python", "Java", "Rust", "Excel", "Linux", "Windows", "Android", "Kotlin",
          "Swift", "Ruby", "Scala", "Haskell")
FORMATS = ("PDF", "Word", "Excel", "JPEG", "PNG", "MP3", "MP4", "CSV", "HTML", "JSON")
EVENTS = ("the French Revolution", "the American Revolution", "the First World War",
          "the Great Depression", "the Renaissance", "the Reformation",
          "the Industrial Revolution", "the Cold War", "the moon landing",
          "the fall of Rome", "the printing press", "the steam engine")
YEARS = tuple(range(1850, 2021, 7))
SYNONYMS = (("How can I", "How do I"), ("buy", "purchase"), ("big", "large"),
            ("quickly", "fast"), ("begin", "start"), ("film", "movie"),
            ("What is the best way to", "How do I best"), ("smart", "intelligent"),
            ("car", "automobile"), ("job", "position"), ("hard", "difficult"))


# ------------------------------------------------------------------ templates


def _two(rng: random.Random, pool: tuple[str, ...]) -> tuple[str, str]:
    a, b = rng.sample(pool, 2)
    return a, b


def templates(rng: random.Random, n: int) -> Iterator[NearPair]:
    """``n`` pairs per generator below, questions and statements."""
    for _ in range(n):
        a, b = _two(rng, PEOPLE)
        v, past, part = rng.choice(VERBS)
        yield NearPair(f"Did {a} {v} {b}?", f"Did {b} {v} {a}?", False, "t-agent-swap")
        yield NearPair(f"Why did {a} {v} {b} last year?", f"Why did {b} {v} {a} last year?",
                       False, "t-agent-swap")
        yield NearPair(f"Did {a} {v} {b}?", f"Was {b} {part} by {a}?", True, "t-passive")
        t1, t2 = _two(rng, TEAMS)
        yield NearPair(f"When did {t1} beat {t2} in the final?",
                       f"When did {t2} beat {t1} in the final?", False, "t-agent-swap")
        c1, c2 = _two(rng, COMPANIES)
        y = rng.choice(YEARS)
        yield NearPair(f"{c1} bought {c2} in {y}.", f"{c2} bought {c1} in {y}.", False,
                       "t-agent-swap")
        yield NearPair(f"{c1} bought {c2} in {y}.", f"In {y}, {c1} bought {c2}.", True,
                       "t-move")
        p, q = _two(rng, PLACES)
        yield NearPair(f"What are the cheapest flights from {p} to {q}?",
                       f"What are the cheapest flights from {q} to {p}?", False, "t-order-swap")
        yield NearPair(f"What are the cheapest flights from {p} to {q}?",
                       f"What are the cheapest flights to {q} from {p}?", True, "t-move")
        yield NearPair(f"How long is the drive from {p} to {q}?",
                       f"How long is the drive from {q} to {p}?", False, "t-order-swap")
        e1, e2 = _two(rng, EVENTS)
        yield NearPair(f"Did {e1} happen before {e2}?", f"Did {e2} happen before {e1}?",
                       False, "t-order-swap")
        yield NearPair(f"Which came first, {e1} or {e2}?", f"Which came first, {e2} or {e1}?",
                       True, "t-coord-swap")
        r = rng.choice(ROLES)
        yield NearPair(f"Is {a} the {r} of {b}?", f"Is {b} the {r} of {a}?", False,
                       "t-role-swap")
        yield NearPair(f"Is {a} the {r} of {b}?", f"Is {a} {b}'s {r}?", True, "t-possessive")
        yield NearPair(f"Who is the {r} of {a}?", f"Whose {r} is {a}?", False, "t-role-swap")
        cmp_ = rng.choice(COMPARATIVES)
        yield NearPair(f"Is {a} {cmp_} than {b}?", f"Is {b} {cmp_} than {a}?", False,
                       "t-role-swap")
        x1, x2 = _two(rng, THINGS)
        yield NearPair(f"Is {x1} better than {x2} for beginners?",
                       f"Is {x2} better than {x1} for beginners?", False, "t-role-swap")
        yield NearPair(f"What is the difference between {x1} and {x2}?",
                       f"What is the difference between {x2} and {x1}?", True, "t-coord-swap")
        yield NearPair(f"Should I learn {x1} or {x2} first?",
                       f"Should I learn {x2} or {x1} first?", True, "t-coord-swap")
        f1, f2 = _two(rng, FORMATS)
        yield NearPair(f"How do I convert a {f1} file to {f2}?",
                       f"How do I convert a {f2} file to {f1}?", False, "t-order-swap")
        yield NearPair(f"How do I convert a {f1} file to {f2}?",
                       f"How can I convert a {f1} file into {f2}?", True, "t-synonym")
        k1, k2 = _two(rng, COUNTRIES)
        yield NearPair(f"Is it easier to move from {k1} to {k2} or to stay?",
                       f"Is it easier to move from {k2} to {k1} or to stay?", False,
                       "t-order-swap")
        # Wikipedia-style statements (long, entity- and date-rich).
        y1, y2 = sorted(rng.sample(YEARS, 2))
        age = rng.randint(2, 12)
        yield NearPair(
            f"{a} was born in {p} in {y1} and moved to {q} at the age of {age}.",
            f"{a} was born in {q} in {y1} and moved to {p} at the age of {age}.",
            False, "w-place-swap")
        yield NearPair(
            f"{a} was born in {p} in {y1} and moved to {q} at the age of {age}.",
            f"{a} was born in {y1} in {p} and moved to {q} at the age of {age}.",
            True, "w-move")
        yield NearPair(
            f"{a} was born in {p} in {y1} and moved to {q} at the age of {age}.",
            f"Born in {p} in {y1}, {a} moved to {q} at the age of {age}.",
            True, "w-move")
        yield NearPair(
            f"In {y1}, {a} succeeded {b} as the head coach of {t1}.",
            f"In {y1}, {b} succeeded {a} as the head coach of {t1}.", False, "w-agent-swap")
        yield NearPair(
            f"In {y1}, {a} succeeded {b} as the head coach of {t1}.",
            f"{a} succeeded {b} as head coach of {t1} in {y1}.", True, "w-move")
        yield NearPair(
            f"The station was opened in {y1} and closed in {y2}.",
            f"The station was opened in {y2} and closed in {y1}.", False, "w-date-swap")
        yield NearPair(
            f"The {t1} team played its first season in {p} and later moved to {q}.",
            f"The {t1} team played its first season in {q} and later moved to {p}.",
            False, "w-place-swap")
        yield NearPair(
            f"{a} is the {r} of {b}, who later became mayor of {p}.",
            f"{b} is the {r} of {a}, who later became mayor of {p}.", False, "w-role-swap")
        yield NearPair(
            f"{c1} was founded by {a} and {b} in {p} in {y1}.",
            f"{c1} was founded in {p} by {b} and {a} in {y1}.", True, "w-coord-swap")
        # Long statements whose swapped names are far apart (PAWS-like word swaps).
        t3 = rng.choice([t for t in TEAMS if t not in (t1, t2)])
        y3 = rng.choice(YEARS)
        yield NearPair(
            f"{a} played for {t1} from {y1} to {y2} and later joined {t2}, where he won "
            f"the league title in {y3}.",
            f"{a} played for {t2} from {y1} to {y2} and later joined {t1}, where he won "
            f"the league title in {y3}.", False, "w-team-swap")
        yield NearPair(
            f"{a} played for {t1} from {y1} to {y2} and later joined {t2}, where he won "
            f"the league title in {y3}.",
            f"From {y1} to {y2} {a} played for {t1}, and he later joined {t2}, where he "
            f"won the league title in {y3}.", True, "w-move")
        yield NearPair(
            f"The river rises in {k1} and, after crossing several mountain ranges, flows "
            f"into the sea in {k2}.",
            f"The river rises in {k2} and, after crossing several mountain ranges, flows "
            f"into the sea in {k1}.", False, "w-place-swap")
        yield NearPair(
            f"The river rises in {k1} and, after crossing several mountain ranges, flows "
            f"into the sea in {k2}.",
            f"After crossing several mountain ranges, the river, which rises in {k1}, "
            f"flows into the sea in {k2}.", True, "w-move")
        yield NearPair(
            f"{a}, the younger brother of {b}, became the first mayor of {p} after the war.",
            f"{b}, the younger brother of {a}, became the first mayor of {p} after the war.",
            False, "w-role-swap")
        yield NearPair(
            f"{a}, the younger brother of {b}, became the first mayor of {p} after the war.",
            f"After the war, {a}, the younger brother of {b}, became the first mayor of {p}.",
            True, "w-move")
        yield NearPair(
            f"{a} was elected to the council in {y1}, and {b} replaced him as chairman in "
            f"{y2}.",
            f"{a} was elected to the council in {y2}, and {b} replaced him as chairman in "
            f"{y1}.", False, "w-date-swap")
        yield NearPair(
            f"{a} was elected to the council in {y1}, and {b} replaced him as chairman in "
            f"{y2}.",
            f"In {y1} {a} was elected to the council, and in {y2} {b} replaced him as "
            f"chairman.", True, "w-move")
        yield NearPair(
            f"The film was shot in {p} during the winter of {y1} and premiered two years "
            f"later in {q}.",
            f"The film was shot in {q} during the winter of {y1} and premiered two years "
            f"later in {p}.", False, "w-place-swap")
        yield NearPair(
            f"The {t3} squad, coached by {a} since {y1}, lost the cup final to {t1} after "
            f"beating {t2} in the semi-final.",
            f"The {t3} squad, coached by {a} since {y1}, lost the cup final to {t2} after "
            f"beating {t1} in the semi-final.", False, "w-team-swap")
        yield NearPair(
            f"The {t3} squad, coached by {a} since {y1}, lost the cup final to {t1} after "
            f"beating {t2} in the semi-final.",
            f"After beating {t2} in the semi-final, the {t3} squad, coached by {a} since "
            f"{y1}, lost the cup final to {t1}.", True, "w-move")
        yield NearPair(
            f"The river flows from {k1} into {k2} before reaching the sea.",
            f"The river flows from {k2} into {k1} before reaching the sea.", False,
            "w-order-swap")


# ------------------------------------------------------------------ QQP edits

_FROM_TO = re.compile(r"\bfrom ((?:[A-Z][\w.]*\s?){1,3}) to ((?:[A-Z][\w.]*\s?){1,3})")
_THAN = re.compile(r"\b([A-Z][\w.+#]*) (better|worse|bigger|smaller|faster|slower|harder|"
                   r"easier|more \w+|less \w+) than ([A-Z][\w.+#]*)")
_CONVERT = re.compile(r"\b(convert|translate|switch|migrate|move|transfer) (?:from )?"
                      r"((?:an? )?[\w.+#]+) (to|into) ([\w.+#]+)", re.I)
_COORD = re.compile(r"\b([A-Z][\w.+#]*) (and|or|vs\.?) ([A-Z][\w.+#]*)\b")
# "Why do people ..." -> "Why don't people ...": a yes/no question's negative form
# ("Isn't it ...?") asks the same thing, a wh-question's does not.
_WH_AUX = re.compile(r"^(Why|How|What|Where|When|Which|Who)\b(?:\s+\w+)?\s+(do|does|did|is|are|"
                     r"can|should|would|could|was|were)\s+(?!not\b)\w", re.I)
_NUMS = re.compile(r"\b\d+(?:\.\d+)?\b")
_CAPS = re.compile(r"(?<!^)(?<![.?!] )\b([A-Z][a-z]{2,})\b")


def _exchange(pattern: re.Pattern[str], text: str, a: str, b: str) -> str:
    """``text`` with every match of ``pattern`` that is ``a`` replaced by ``b`` and the
    reverse."""
    return pattern.sub(lambda m: b if m.group() == a else a if m.group() == b
                       else m.group(), text)


def _qqp_dev() -> tuple[list[str], list[tuple[str, str]]]:
    questions: list[str] = []
    dups: list[tuple[str, str]] = []
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["id"] >= DEV_CUTOFF:
                continue
            questions.extend((row["question1"], row["question2"]))
            if row["is_duplicate"]:
                dups.append((row["question1"], row["question2"]))
    return list(dict.fromkeys(q.strip() for q in questions if 10 < len(q) < 200)), dups


def qqp_edits(rng: random.Random, limit: int) -> Iterator[NearPair]:
    """Role/order/number swaps and negations of QQP dev questions, coordination swaps
    and synonyms as meaning-keeping edits, and real duplicates."""
    questions, dups = _qqp_dev()
    rng.shuffle(questions)
    counts: Counter[str] = Counter()

    def take(kind: str) -> bool:
        if counts[kind] >= limit:
            return False
        counts[kind] += 1
        return True

    for q in questions:
        if (m := _FROM_TO.search(q)) and m.group(1).strip() != m.group(2).strip() \
                and take("q-order-swap"):
            a, b = m.group(1).strip(), m.group(2).strip()
            tail = " " if m.group(2).endswith(" ") else ""
            yield NearPair(q, q[:m.start()] + f"from {b} to {a}{tail}" + q[m.end():], False,
                           "q-order-swap")
        if (m := _THAN.search(q)) and m.group(1) != m.group(3) and take("q-role-swap"):
            yield NearPair(q, q[:m.start()] + f"{m.group(3)} {m.group(2)} than {m.group(1)}"
                           + q[m.end():], False, "q-role-swap")
        if (m := _CONVERT.search(q)) and m.group(2).split()[-1].lower() != m.group(4).lower() \
                and take("q-order-swap"):
            art = m.group(2).split()[:-1]
            src, dst = m.group(2).split()[-1], m.group(4)
            new = f"{m.group(1)} {' '.join([*art, dst])} {m.group(3)} {src}"
            yield NearPair(q, q[:m.start()] + new + q[m.end():], False, "q-order-swap")
        if (m := _COORD.search(q)) and m.group(1) != m.group(3) and take("q-coord-swap"):
            yield NearPair(q, q[:m.start()] + f"{m.group(3)} {m.group(2)} {m.group(1)}"
                           + q[m.end():], True, "q-coord-swap")
        nums = _NUMS.findall(q)
        if len(set(nums)) >= 2 and not re.search(
                r"\d[^.?!]{0,12}(?:\b(?:and|or|vs|to)\b|[,&/-])[^.?!]{0,12}\d", q) \
                and take("q-number-swap"):
            a, b = nums[0], next(n for n in nums if n != nums[0])
            swapped = _exchange(_NUMS, q, a, b)
            yield NearPair(q, swapped, False, "q-number-swap")
        caps = list(dict.fromkeys(_CAPS.findall(q)))
        if len(caps) >= 2 and not re.search(
                rf"\b{caps[0]}\b(?:\W+(?:and|or|vs|&))?\W+\b{caps[1]}\b", q) \
                and take("q-entity-swap"):
            a, b = caps[0], caps[1]
            swapped = _exchange(re.compile(rf"\b(?:{re.escape(a)}|{re.escape(b)})\b"), q, a, b)
            if swapped != q:
                yield NearPair(q, swapped, False, "q-entity-swap")
        if (m := _WH_AUX.match(q)) and take("q-negation"):
            neg = {"can": "can't", "will": "won't"}.get(m.group(2), m.group(2) + "n't")
            yield NearPair(q, q[:m.start(2)] + neg + q[m.end(2):], False, "q-negation")
        for old, new in SYNONYMS:
            if re.search(rf"\b{re.escape(old)}\b", q) and take("q-synonym"):
                yield NearPair(q, re.sub(rf"\b{re.escape(old)}\b", new, q, count=1), True,
                               "q-synonym")
                break
        if all(counts[k] >= limit for k in ("q-order-swap", "q-role-swap", "q-coord-swap",
                                             "q-number-swap", "q-entity-swap", "q-negation",
                                             "q-synonym")):
            break
    rng.shuffle(dups)
    for a, b in dups[:limit * 2]:
        yield NearPair(a, b, True, "q-duplicate")


def generate(seed: int = 19, per_template: int = 40, per_qqp_kind: int = 300
             ) -> list[NearPair]:
    """The whole set, deterministic for a seed."""
    rng = random.Random(seed)
    pairs = list(templates(rng, per_template))
    pairs += list(qqp_edits(rng, per_qqp_kind))
    seen: set[tuple[str, str]] = set()
    out = []
    for p in pairs:
        if p.first != p.second and (p.first, p.second) not in seen:
            seen.add((p.first, p.second))
            out.append(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--show", type=int, default=0, help="print N random pairs")
    ap.add_argument("--stats", action="store_true")
    args = ap.parse_args()
    pairs = generate(args.seed)
    if args.stats or not args.show:
        for kind, n in sorted(Counter((p.kind, p.same) for p in pairs).items()):
            print(f"{kind[0]:16} same={kind[1]!s:5} {n}")
        print("total", len(pairs))
    for p in random.Random(args.seed).sample(pairs, min(args.show, len(pairs))):
        print(f"[{p.kind} {'SAME' if p.same else 'DIFF'}]\n  {p.first}\n  {p.second}")


if __name__ == "__main__":
    main()
