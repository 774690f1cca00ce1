"""False-hit guard for the semantic cache.

Sentence embeddings put "How do I enable 2FA?" and "How do I disable 2FA?" next
to each other: they share every word but one, and that word is the answer. The
guard looks at the *facets* of both texts that embeddings blur (negation, numbers
and units, dates, names, code identifiers, quoted strings, opposite words) and
refuses a semantic hit when they disagree. Extraction is cached per text (the
same cached question is checked against many queries); each check is set
arithmetic on the two facet records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["FalseHitGuard"]

# ---------------------------------------------------------------- tokenising

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "`", "\u201c": '"',
                              "\u201d": '"'})
_CONTRACTIONS = (
    (re.compile(r"\bwon't\b", re.I), "will not"),
    (re.compile(r"\bcan't\b", re.I), "can not"),
    (re.compile(r"\bcannot\b", re.I), "can not"),
    (re.compile(r"\bshan't\b", re.I), "shall not"),
    (re.compile(r"\bain't\b", re.I), "is not"),
    (re.compile(r"n't\b", re.I), " not"),
    (re.compile(r"'re\b", re.I), " are"),
    (re.compile(r"'ve\b", re.I), " have"),
    (re.compile(r"'ll\b", re.I), " will"),
    (re.compile(r"'m\b", re.I), " am"),
    (re.compile(r"'d\b", re.I), " would"),
    (re.compile(r"\b(what|who|where|how|when|why|it|that|there|he|she|here)'s\b", re.I),
     r"\1 is"),
    (re.compile(r"'s\b|s'(?=\s|$)", re.I), ""),  # possessive: "parents'" and "Bush's"
)
# A token: letters/digits with inner dots (H.W., node.js, 1.5), underscores, "+"/"#"
# suffixes (C++, C#); hyphens and slashes split tokens.
_TOKEN = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*\.?(?:\+\+|#)?|[$%\u20b9\u20ac\u00a3]")
_SENTENCE_END = re.compile(r"[.?!:;]\s|[()\[\]\"]")

_STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been being
below between both but by can could did do does doing down during each either else even ever
every few for from further had has have having he her here hers herself him himself his how i
if in into is it its itself just let may me might mine more most much must my myself need
of off on once only or other ought our ours ourselves out over own per quite rather really
same shall she should so some such than that the their theirs them themselves then there these
they this those through to too under until up upon us very via was we were what whatever when
whenever where whether which while who whom whose why will with within would yet you your yours
yourself yourselves one ones someone something anyone anything thing things way ways get got
getting make made go going like know want thi
""".split())

_UK_US = (("isation", "ization"), ("ising", "izing"), ("ised", "ized"), ("ise", "ize"),
          ("yse", "yze"), ("our", "or"), ("tre", "ter"), ("ence", "ense"), ("ogue", "og"),
          ("lled", "led"), ("lling", "ling"))


@lru_cache(maxsize=65536)
def _canon(word: str) -> str:
    """Lower-case, singular, US spelling: the form two paraphrases share."""
    w = word.lower().rstrip(".")
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 3 and w.endswith("es") and w[-3] in "sxz" and not w.endswith("ses"):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if len(w) >= 6:
        for uk, us in _UK_US:
            if w.endswith(uk):
                w = w[: -len(uk)] + us
                break
    return w


def _expand(text: str) -> str:
    text = text.translate(_APOSTROPHES)
    for pattern, repl in _CONTRACTIONS:
        text = pattern.sub(repl, text)
    return text


# ---------------------------------------------------------------- vocabularies

_NEGATORS = frozenset("not no never none nobody nothing nowhere neither nor without non "
                      "unable".split())
_NEG_SKIP = frozenset("a an the to be been being really even just yet so very always ever "
                      "necessarily at all any".split())

# Opposite prefixes over a shared stem: enable/disable, increase/decrease, import/export...
_PREFIX_PAIRS: tuple[tuple[str, str], ...] = (
    ("", "dis"), ("", "un"), ("", "in"), ("", "im"), ("", "il"), ("", "ir"), ("", "non"),
    ("", "anti"), ("", "de"), ("", "mis"), ("en", "dis"), ("in", "de"), ("im", "ex"),
    ("in", "ex"), ("in", "out"), ("up", "down"), ("over", "under"), ("pre", "post"),
    ("pro", "anti"), ("max", "min"), ("inter", "intra"), ("", "fe"), ("", "wo"),
)
_OPPOSITES: tuple[tuple[str, str], ...] = (
    ("best", "worst"), ("good", "bad"), ("better", "worse"), ("before", "after"),
    ("more", "less"), ("most", "least"), ("high", "low"), ("higher", "lower"),
    ("highest", "lowest"), ("buy", "sell"), ("buying", "selling"), ("male", "female"),
    ("man", "woman"), ("men", "women"), ("boy", "girl"), ("husband", "wife"),
    ("boyfriend", "girlfriend"), ("rich", "poor"), ("positive", "negative"), ("pro", "con"),
    ("win", "lose"), ("first", "last"), ("start", "stop"), ("open", "close"),
    ("love", "hate"), ("true", "false"), ("fast", "slow"), ("cheap", "expensive"),
    ("easy", "hard"), ("easy", "difficult"), ("easiest", "hardest"), ("left", "right"),
    ("top", "bottom"), ("north", "south"), ("east", "west"), ("hot", "cold"),
    ("strong", "weak"), ("big", "small"), ("large", "small"), ("long", "short"),
    ("happy", "sad"), ("safe", "dangerous"), ("success", "failure"), ("mother", "father"),
    ("mom", "dad"), ("son", "daughter"), ("brother", "sister"), ("day", "night"),
    ("summer", "winter"), ("increase", "reduce"), ("gain", "lose"), ("gain", "loss"),
    ("add", "remove"), ("accept", "reject"), ("allow", "forbid"), ("same", "different"),
    ("old", "new"), ("young", "old"), ("upper", "lower"), ("always", "never"),
    ("inside", "outside"), ("above", "below"), ("past", "future"), ("ancient", "modern"),
    ("min", "max"), ("minimum", "maximum"), ("senior", "junior"), ("private", "public"),
    ("online", "offline"), ("push", "pull"), ("send", "receive"), ("give", "take"),
    ("lend", "borrow"), ("teacher", "student"), ("employer", "employee"),
    ("king", "queen"), ("prince", "princess"), ("he", "she"), ("his", "her"),
    ("him", "her"), ("himself", "herself"),
)
_OPPOSITE_OF: dict[str, frozenset[str]] = {}
for _a, _b in _OPPOSITES:
    _OPPOSITE_OF[_a] = _OPPOSITE_OF.get(_a, frozenset()) | {_b}
    _OPPOSITE_OF[_b] = _OPPOSITE_OF.get(_b, frozenset()) | {_a}

_NUMBER_WORDS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1_000_000, "billion": 1_000_000_000, "dozen": 12, "half": 0.5,
    "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "twice": 2,
}
_MULTIPLIERS = {"hundred": 100, "thousand": 1000, "k": 1000, "lakh": 100_000,
                "lac": 100_000, "crore": 10_000_000, "million": 1_000_000, "mn": 1_000_000,
                "billion": 1_000_000_000, "bn": 1_000_000_000}
_UNITS = {
    "%": "%", "percent": "%", "percentage": "%",
    "$": "usd", "usd": "usd", "dollar": "usd", "buck": "usd", "rs": "inr", "inr": "inr",
    "rupee": "inr", "\u20b9": "inr", "\u20ac": "eur", "eur": "eur", "euro": "eur",
    "\u00a3": "gbp", "gbp": "gbp", "pound": "gbp",
    "b": "byte", "byte": "byte", "kb": "kb", "kilobyte": "kb", "mb": "mb", "megabyte": "mb",
    "gb": "gb", "gigabyte": "gb", "gig": "gb", "tb": "tb", "terabyte": "tb",
    "hz": "hz", "khz": "khz", "mhz": "mhz", "ghz": "ghz", "mp": "mp", "megapixel": "mp",
    "mm": "mm", "millimeter": "mm", "cm": "cm", "centimeter": "cm", "m": "m", "meter": "m",
    "km": "km", "kilometer": "km", "kms": "km", "mile": "mile", "mi": "mile",
    "ft": "ft", "feet": "ft", "foot": "ft", "inch": "inch", "inche": "inch", "in": "inch",
    "yard": "yard", "mph": "mph", "kmph": "kmph", "kph": "kmph",
    "mg": "mg", "milligram": "mg", "g": "g", "gram": "g", "kg": "kg", "kilogram": "kg",
    "kilo": "kg", "lb": "lb", "lbs": "lb", "ounce": "oz", "oz": "oz", "ton": "ton",
    "tonne": "ton", "ml": "ml", "l": "l", "liter": "l", "litre": "l", "gallon": "gallon",
    "cc": "cc", "w": "w", "watt": "w", "kw": "kw", "v": "v", "volt": "v", "mah": "mah",
    "c": "degc", "f": "degf", "celsiu": "degc", "fahrenheit": "degf", "degree": "deg",
    "second": "s", "sec": "s", "minute": "min", "min": "min", "hour": "h", "hr": "h",
    "day": "day", "week": "week", "month": "month", "year": "year", "yr": "year",
    "decade": "decade", "century": "century",
    "cgpa": "cgpa", "gpa": "gpa", "sgpa": "cgpa", "mark": "mark", "rank": "rank",
    "pound_w": "lb",
}
_UNIT_SUFFIX = re.compile(
    r"^(\d+(?:\.\d+)?)(k|m|mn|bn|%|kb|mb|gb|tb|hz|khz|mhz|ghz|mp|mm|cm|km|kms|mi|ft|in|mph|kmph|"
    r"kph|mg|g|kg|lb|lbs|oz|ml|l|cc|w|kw|v|mah|c|f|s|sec|min|h|hr|hrs|yr|yrs|st|nd|rd|th|x)$")
_MONTHS = {m: i + 1 for i, m in enumerate(
    "january february march april may june july august september october november "
    "december".split())}
_MONTH_ABBR = {m[:3]: i for m, i in _MONTHS.items() if m not in ("may", "march")}
_WEEKDAYS = frozenset("monday tuesday wednesday thursday friday saturday sunday".split())
_RELATIVE_DAYS = frozenset("today tomorrow yesterday tonight weekend".split())

_SNAKE = re.compile(r"^[A-Za-z0-9]*_[A-Za-z0-9_]+$")
_CAMEL = re.compile(r"^[a-z]+[A-Z][A-Za-z0-9]*$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")
_INITIALS = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]?\.?$")
_BACKTICK = re.compile(r"`([^`]+)`")
_QUOTED = re.compile(r'"+([^"]{2,}?)"+|(?:^|\s)\'([^\']{2,}?)\'(?=[\s?.!,]|$)')
_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_.]*)\(\)")
_ALNUM = re.compile(r"^(?=.*\d)(?=.*[a-z])[a-z0-9]+$")
_YEAR = re.compile(r"^(1[5-9]\d\d|20\d\d)$")
_DECADE = re.compile(r"^(?:(1[5-9]\d0|20\d0)|(\d0))s$")
_NUMBER = re.compile(r"^\d+(?:,\d{3})*(?:\.\d+)?$")


# ---------------------------------------------------------------- facets

@dataclass(frozen=True, slots=True)
class _Facets:
    """What one text says, in the forms the checks compare."""

    words: frozenset[str]          # canonical tokens (stop words included)
    content: frozenset[str]        # canonical non-stop-word tokens
    negated: frozenset[str]        # heads of negations ("not have" -> "have")
    negations: int                 # how many negators
    numbers: frozenset[str]        # canonical values ("2", "1000", "m604dn")
    quantities: frozenset[tuple[str, str]]  # (value, unit)
    dates: frozenset[str]          # years, decades, months, weekdays
    entities: frozenset[str]       # capitalised names, acronyms, initials (lower-cased)
    codes: frozenset[str]          # identifiers, backticked and called names
    quotes: frozenset[str]         # quoted strings (canonical word tuples joined)
    norm: str                      # lower-cased, de-punctuated text (label-noise test)


def _number_value(raw: str) -> str:
    value = float(raw.replace(",", ""))
    return str(int(value)) if value.is_integer() else repr(value)


@lru_cache(maxsize=16384)
def _facets(text: str) -> _Facets:
    """Extract every facet of ``text`` once (both texts of a check go through here)."""
    expanded = _expand(text)
    raw_tokens = _TOKEN.findall(expanded)
    lowered = [t.lower().rstrip(".") for t in raw_tokens]
    canon = [_canon(t) for t in raw_tokens]

    # Sentence starts: the first token and any token after ., ?, !, or an opening bracket.
    starts: set[int] = {0}
    pos = 0
    offsets: list[int] = []
    for tok in raw_tokens:
        pos = expanded.find(tok, pos)
        offsets.append(pos)
        pos += len(tok)
    for m in _SENTENCE_END.finditer(expanded):
        for i, off in enumerate(offsets):
            if off >= m.end():
                starts.add(i)
                break

    negated: set[str] = set()
    negations = 0
    numbers: set[str] = set()
    quantities: set[tuple[str, str]] = set()
    dates: set[str] = set()
    entities: set[str] = set()
    codes: set[str] = set()

    n = len(raw_tokens)
    for i, (raw, low, can) in enumerate(zip(raw_tokens, lowered, canon, strict=True)):
        # Negation and its head (the next word that is not filler).
        if low in _NEGATORS:
            negations += 1
            j = i + 1
            while j < n and lowered[j] in _NEG_SKIP:
                j += 1
            if j < n and low != "non":
                negated.add(canon[j])
            elif low == "non" and j < n:
                negated.add(canon[j])

        # Dates.
        if _YEAR.match(low) and not (i + 1 < n and _canon(lowered[i + 1]) in _UNITS):
            dates.add(low)
            continue
        m = _DECADE.match(low)
        if m:
            dates.add(m.group(1) or "19" + (m.group(2) or ""))
            continue
        if low in _MONTHS and (low not in ("may", "march") or raw[0].isupper()):
            dates.add(f"month{_MONTHS[low]}")
            continue
        if low in _MONTH_ABBR and raw[0].isupper():
            dates.add(f"month{_MONTH_ABBR[low]}")
            continue
        if low in _WEEKDAYS or low in _RELATIVE_DAYS:
            dates.add(low)
            continue

        # Numbers, with a unit in the same token ("2gb") or the next one ("2 GB").
        value: str | None = None
        unit: str | None = None
        if _NUMBER.match(low):
            value = _number_value(low)
        elif low in _NUMBER_WORDS and (low not in ("second", "half") or (
                i + 1 < n and canon[i + 1] in _UNITS)):
            value = _number_value(str(_NUMBER_WORDS[low]))
        else:
            m = _UNIT_SUFFIX.match(low)
            if m:
                value = _number_value(m.group(1))
                suffix = m.group(2)
                if suffix in ("k", "mn", "bn"):
                    value = _number_value(str(float(value) * _MULTIPLIERS[suffix]))
                elif suffix not in ("st", "nd", "rd", "th", "x"):
                    unit = _UNITS.get(_canon(suffix), suffix)
            elif _ALNUM.match(low):
                numbers.add(low)  # model numbers and versions: m604dn, i5, 4g, 2fa
        if value is not None:
            if i + 1 < n and lowered[i + 1] in _MULTIPLIERS and unit is None:
                value = _number_value(str(float(value) * _MULTIPLIERS[lowered[i + 1]]))
            if unit is None and i + 1 < n and canon[i + 1] in _UNITS:
                unit = _UNITS[canon[i + 1]]
            if unit is None and i > 0 and lowered[i - 1] in ("$", "rs", "\u20b9", "\u20ac",
                                                              "\u00a3", "usd", "inr"):
                unit = _UNITS[lowered[i - 1]]
            numbers.add(value)
            if unit is not None:
                quantities.add((value, unit))
            continue

        # Code identifiers.
        if _SNAKE.match(raw) or (_DOTTED.match(raw.rstrip(".")) and not _INITIALS.match(raw)):
            codes.add(raw.rstrip(".").lower())
            continue

        # Names: capitalised words not opening a sentence, acronyms, initials.
        if raw in ("I", "$", "%"):
            continue
        if _INITIALS.match(raw) and "." in raw and len(raw) <= 6:
            entities.add(raw.lower().replace(".", ""))
        elif raw[0].isupper() and (
            i not in starts or (raw.isupper() and len(raw) > 1)
            or (i + 1 < n and raw_tokens[i + 1][0].isupper() and lowered[i + 1] not in _STOPWORDS)
        ):
            if low not in _STOPWORDS or raw.isupper() and len(raw) > 1:
                entities.add(can)
        elif _CAMEL.match(raw):
            entities.add(can)

    codes.update(m.lower() for m in _BACKTICK.findall(expanded))
    codes.update(m.lower() for m in _CALL.findall(expanded))
    quotes: set[str] = set()
    for m in _QUOTED.finditer(expanded):
        body = m.group(1) or m.group(2) or ""
        words = tuple(_canon(t) for t in _TOKEN.findall(body))
        if words:
            quotes.add(" ".join(words))

    words = frozenset(canon)
    return _Facets(
        words=words,
        content=frozenset(w for w in words if w not in _STOPWORDS and not w.isdigit()),
        negated=frozenset(negated),
        negations=negations,
        numbers=frozenset(numbers),
        quantities=frozenset(quantities),
        dates=frozenset(dates),
        entities=frozenset(entities),
        codes=frozenset(codes),
        quotes=frozenset(quotes),
        norm=" ".join(lowered),
    )


# ---------------------------------------------------------------- checks

def _negation(a: _Facets, b: _Facets) -> bool:
    """True when one text negates and the other does not, or they negate different
    things both mention ("not have X and be Y" vs "have X and not be Y")."""
    if (a.negations > 0) != (b.negations > 0):
        return True
    if a.negated != b.negated:
        moved = (a.negated ^ b.negated) & a.words & b.words
        if moved:
            return True
    return _antonym_prefix(a, b)


def _antonym_prefix(a: _Facets, b: _Facets) -> bool:
    """enable/disable, increase/decrease, import/export: one text has a word, the other
    has the same stem under the opposite prefix, and neither has both."""
    only_a = a.content - b.words
    only_b = b.content - a.words
    if not only_a or not only_b:
        return False
    for x in only_a:
        for y in only_b:
            if x[:2] == y[:2] and x[-3:] != y[-3:]:
                continue
            for p, q in _PREFIX_PAIRS:
                for u, v in ((x, y), (y, x)):
                    if u.startswith(p) and v.startswith(q):
                        stem = u[len(p):]
                        if len(stem) >= 4 and stem == v[len(q):]:
                            return True
    return False


def _opposite(a: _Facets, b: _Facets) -> bool:
    """best/worst, before/after, buy/sell: a word in one text whose opposite is in the
    other, neither text having both."""
    only_a = a.words - b.words
    if not only_a:
        return False
    only_b = b.words - a.words
    for w in only_a:
        opp = _OPPOSITE_OF.get(w)
        if opp and opp & only_b:
            return True
    return False


def _differ(x: frozenset[str], y: frozenset[str]) -> bool:
    return x != y


def _number(a: _Facets, b: _Facets) -> bool:
    """Different numbers: "class 11" vs "class 9", "M604n" vs "M604dn"."""
    return _differ(a.numbers, b.numbers)


def _unit(a: _Facets, b: _Facets) -> bool:
    """The same number of different things: "5 km" vs "5 miles", "2 GB" vs "2 TB"."""
    if a.quantities == b.quantities:
        return False
    units_a: dict[str, set[str]] = {}
    for value, unit in a.quantities:
        units_a.setdefault(value, set()).add(unit)
    for value, unit in b.quantities:
        if value in units_a and unit not in units_a[value]:
            return True
    return False


def _date(a: _Facets, b: _Facets) -> bool:
    """Different years, decades, months or days: "2011" vs "2012"."""
    return _differ(a.dates, b.dates)


def _entity(a: _Facets, b: _Facets) -> bool:
    """A name in each text that the other never mentions: "George W. Bush" vs
    "George H.W. Bush", "Vermont" vs "Maryland" (a name only dropped passes)."""
    missing_a = a.entities - b.words - b.entities
    if not missing_a:
        return False
    missing_b = b.entities - a.words - a.entities
    return bool(missing_b)


def _code(a: _Facets, b: _Facets) -> bool:
    """Identifiers must match exactly: ``os.path`` is not ``os.walk``."""
    return a.codes != b.codes


def _quote(a: _Facets, b: _Facets) -> bool:
    """A quoted string is the subject of the question: its words must all be in the other."""
    for q in a.quotes:
        if not set(q.split()) <= b.words:
            return True
    for q in b.quotes:
        if not set(q.split()) <= a.words:
            return True
    return False


_CHECK_FUNCS = {
    "negation": _negation,
    "opposite": _opposite,
    "number": _number,
    "unit": _unit,
    "date": _date,
    "entity": _entity,
    "code": _code,
    "quote": _quote,
}


class FalseHitGuard:
    """Refuses a semantic-cache hit whose question differs from the query in a way
    embeddings gloss over (a negation, a number, a date, a name, an identifier...).

    ``check`` returns ``None`` when the cached answer may be served, else the name of
    the first check that failed (for metrics). Facets are extracted once per text.
    """

    CHECKS: tuple[str, ...] = tuple(_CHECK_FUNCS)

    def __init__(self, checks: Iterable[str] | None = None) -> None:
        names = self.CHECKS if checks is None else tuple(checks)
        unknown = [c for c in names if c not in _CHECK_FUNCS]
        if unknown:
            raise ValueError(f"unknown guard check(s) {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(self.CHECKS)}")
        self.checks = tuple(c for c in self.CHECKS if c in names)
        self._funcs = tuple((c, _CHECK_FUNCS[c]) for c in self.checks)

    def check(self, query: str, candidate: str) -> str | None:
        """None if the candidate's answer may be served for the query; else the name of
        the check that failed."""
        if not self._funcs:
            return None
        a, b = _facets(query), _facets(candidate)
        if a.norm == b.norm:
            return None
        for name, func in self._funcs:
            if func(a, b):
                return name
        return None
