"""False-hit guard for the semantic cache.

Sentence embeddings put "How do I enable 2FA?" and "How do I disable 2FA?" next to
each other: they share every word but one, and that word is the answer. The guard
extracts the *facets* of a text that embeddings blur and refuses a semantic hit when
the query's and the cached question's facets disagree:

- ``negation``: a word negated on one side and stated on the other ("allowed" / "not
  allowed", "full of regrets" / "without regrets"), a negation that moved, and
  opposite prefixes over one stem (enable/disable, increase/decrease, import/export);
- ``opposite``: antonym pairs (best/worst, before/after, buy/sell, men/women ...);
- ``number``: different numbers or model numbers ("class 9" / "class 11", "M604n" /
  "M604dn"), number words and "30K" / "30,000" normalised;
- ``unit``: the same number of different things ("5 km" / "5 miles");
- ``date``: years, decades, months, weekdays;
- ``entity``: a name (capitalised word, acronym, initials) one side never mentions,
  case-insensitively, allowing prefixes (Mac/MacBook), one-letter typos and spelled-out
  acronyms (ML / Machine Learning);
- ``code``: identifiers (snake_case, dotted.names, ``backticked``, calls());
- ``quote``: both sides quote something and the quotes differ;
- ``order``: roles swapped around the same relation ("Texas to California" /
  "California to Texas", "X better than Y" / "Y better than X");
- ``context``: the question points at something the cache never saw ("this picture",
  "the equation below"), so equal wording does not mean the same question.

Chosen and tuned on the QQP dev split (bench/cache_eval.py, --ablation shows what each
check buys). Extraction is cached per text: a cached question is checked against many
queries, and a query against up to ``candidates`` entries; each check is then set
arithmetic on two facet records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["FalseHitGuard"]

# ---------------------------------------------------------------- tokenising

def _words_in_order(text: str) -> list[str]:
    return text.split()


def _words(text: str) -> frozenset[str]:
    """A vocabulary written as one string of space-separated words."""
    return frozenset(text.split())


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
    # Rules from here on apply to texts without apostrophes too.
    (re.compile(r"\b(do|does|did|is|are|was|were|have|has|had|should|would|could|ca|wo|"
                r"must|need)nt\b", re.I), r"\1 not"),
    # Not negations: "whether or not", "why or why not", "yes or no", "not only ... but".
    (re.compile(r"\b(?:why or why not|if not,? (?:then )?why|or not|yes or no|not only|"
                r"no matter|no doubt)\b", re.I), " "),
    (re.compile(r"\bno\.\s*(?=\w)", re.I), "number "),
    (re.compile(r"(?:^|(?<=[.?!]\s))(?:yes|no)\s*,", re.I), " "),  # "No, it does..."
    (re.compile(r"(?:^|(?<=\s))\(?\d{1,2}\)\s"), " "),  # list markers "1) ", "(2) "
    (re.compile(r"\bthe United States(?: of America)?\b", re.I), "USA"),
    (re.compile(r"\bnon-?(?=[a-z]{3})", re.I), "non "),
)
_APOSTROPHE_RULES = 13  # the rules above need an apostrophe in the text
# A token: letters/digits with inner dots (H.W., node.js, 1.5), underscores, "+"/"#"
# suffixes (C++, C#); hyphens and slashes split tokens.
_TOKEN = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w,])"  # 1,000
                    r"|[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*\.?(?:\+\+|#)?"
                    r"|[$%\u20b9\u20ac\u00a3]")
_SENTENCE_END = re.compile(r"(?<=[a-z]{2})\.\s|[?!:;]\s|[()\[\]\"]")

_STOP_RAW = _words("""
a about above after again against all also am an and any are as at be because been being
below between both but by can could did do does doing down during each either else even ever
every few for from further had has have having he her here hers herself him himself his how i
if in into is it its itself just let may me might mine more most much must my myself need
of off on once only or other ought our ours ourselves out over own per quite rather really
same shall she should so some such than that the their theirs them themselves then there these
they this those through to too under until up upon us very via was we were what whatever when
whenever where whether which while who whom whose why will with within would yet you your yours
yourself yourselves one ones someone something anyone anything thing things way ways get got
getting make made go going like know want yes
""")

_UK_US = (("isation", "ization"), ("ising", "izing"), ("ised", "ized"), ("ise", "ize"),
          ("yse", "yze"), ("our", "or"), ("tre", "ter"), ("ence", "ense"), ("ogue", "og"),
          ("lled", "led"), ("lling", "ling"))


@lru_cache(maxsize=65536)
def _canon(word: str) -> str:
    """Lower-case, singular, US spelling: the form two paraphrases share."""
    w = word.lower().rstrip(".")
    if "." in w and all(len(p) <= 4 for p in w.split(".")):
        w = w.replace(".", "")  # B.Tech, U.S, Ph.D
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


# Stop words in the canonical forms tokens take ("does" -> "doe", "this" -> "thi").
_STOPWORDS = _STOP_RAW | {_canon(w) for w in _STOP_RAW}

_GLUED = re.compile(r"(?<=[A-Za-z]{2})([.?!,])(?=[A-Z][a-z]+\b)")


def _expand(text: str) -> str:
    """Undo contractions and drop phrases that look like negations but are not."""
    text = _GLUED.sub(r"\1 ", text.translate(_APOSTROPHES))
    rules = _CONTRACTIONS if "'" in text else _CONTRACTIONS[_APOSTROPHE_RULES:]
    for pattern, repl in rules:
        text = pattern.sub(repl, text)
    return text


# ---------------------------------------------------------------- vocabularies

_NEGATORS = _words("not no never none nobody nothing nowhere neither nor without non unable")
_CLAUSE_BREAK = _words("and or but if when because while so than that which who whom whose "
                       "where why how what")

# Opposite prefixes over a shared stem: enable/disable, increase/decrease, import/export...
_PREFIX_PAIRS: tuple[tuple[str, str], ...] = (
    ("", "dis"), ("", "un"), ("", "in"), ("", "im"), ("", "il"), ("", "ir"), ("", "non"),
    ("", "anti"), ("", "de"), ("", "mis"), ("en", "dis"), ("in", "de"), ("im", "ex"),
    ("in", "ex"), ("in", "out"), ("up", "down"), ("over", "under"), ("pre", "post"),
    ("pro", "anti"), ("max", "min"), ("inter", "intra"), ("", "fe"), ("", "wo"),
)
_OPPOSITE_PREFIXES = frozenset(_PREFIX_PAIRS)
_PREFIXES = tuple(sorted({p for pair in _PREFIX_PAIRS for p in pair}))
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
    "million": 1_000_000, "billion": 1_000_000_000, "dozen": 12, "one": 1,
}
_ORDINALS = tuple(_words_in_order("first second third fourth fifth sixth seventh eighth "
                                   "ninth tenth"))
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
}
_UNIT_SUFFIX = re.compile(
    r"^(\d+(?:\.\d+)?)(k|m|mn|bn|%|kb|mb|gb|tb|hz|khz|mhz|ghz|mp|mm|cm|km|kms|mi|ft|in|mph|kmph|"
    r"kph|mg|g|kg|lb|lbs|oz|ml|l|cc|w|kw|v|mah|c|f|s|sec|min|h|hr|hrs|yr|yrs|st|nd|rd|th|x)$")
_MONTHS = {m: i + 1 for i, m in enumerate(_words_in_order(
    "january february march april may june july august september october november december"))}
_MONTH_ABBR = {m[:3]: i for m, i in _MONTHS.items() if m not in ("may", "march")}
_WEEKDAYS = _words("monday tuesday wednesday thursday friday saturday sunday")
_RELATIVE_DAYS = _words("tomorrow yesterday")

_CURRENCY_WORDS = _words("usd inr rs eur gbp")
_CURRENCY_BEFORE = _words("$ rs \u20b9 \u20ac \u00a3")
_USA = _words("US U.S U.S. USA U.S.A U.S.A. America")
_TLDS = _words("com org net in io co edu gov ai uk us de info biz me tv ly app dev")
_DEICTIC = re.compile(
    r"\b(?:this|these|following|below|above|attached|aforementioned)\b(?:\s+[\w-]+){0,2}?\s+"
    r"(?:question|problem|equation|integral|puzzle|riddle|picture|pic|image|photo|photograph|"
    r"video|clip|song|music|code|program|sentence|paragraph|passage|text|statement|logo|graph|"
    r"diagram|circuit|pattern|poem|situation|scenario|sequence|series|expression|function|"
    r"symbol|sign|meme|girl|guy|man|woman|person|hairstyle|painting|movie|book|design|"
    r"website|link|scene|gif|screenshot|tattoo|font|animal|insect|bug|plant|flower|car|"
    r"object|thing|word|phrase|quote|lyric|limit|sum|number|math|physic|chemistry|item|"
    r"product|question)s?\b|\b(?:this|these|that)\s*\?\s*$|\bsee (?:the )?(?:question )?"
    r"detail|\bquestion detail", re.I)
_FIRST_SENTENCE = re.compile(r"(?<=[.!])\s+(?=\S)")
_SNAKE = re.compile(r"^[A-Za-z0-9]*_[A-Za-z0-9_]+$")
_CAMEL = re.compile(r"^[a-z]+[A-Z][A-Za-z0-9]*$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")
_INITIALS = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]?\.?$")
_BACKTICK = re.compile(r"`([^`]+)`")
_QUOTED = re.compile(r'"+([^"]{2,}?)"+|(?:^|\s)\'([^\']{2,}?)\'(?=[\s?.!,]|$)')
_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_.]*)\(\)")
_ALNUM = re.compile(r"^(?=.*\d)(?=.*[a-z])[a-z0-9]+$")
_VERSION = re.compile(r"^\d+(?:\.\d+){2,}$")
_YEAR = re.compile(r"^(1[5-9]\d\d|20\d\d)$")
_DECADE = re.compile(r"^(?:(1[5-9]\d0|20\d0)|(\d0))s$")
_NUMBER = re.compile(r"^\d+(?:,\d{3})*(?:\.\d+)?$")


# ---------------------------------------------------------------- facets

@dataclass(frozen=True, slots=True)
class _Facets:
    """What one text says, in the forms the checks compare."""

    words: frozenset[str]          # canonical tokens (stop words included)
    content: frozenset[str]        # canonical non-stop-word tokens
    negated: frozenset[str]        # heads of negations ("not have X" -> "x")
    negscope: frozenset[str]       # heads plus the next content word ("isn't X Y")
    negations: int                 # how many negators
    numbers: frozenset[str]        # canonical values ("2", "1000", "m604dn")
    quantities: frozenset[tuple[str, str]]  # (value, unit)
    dates: frozenset[str]          # years, decades, months, weekdays
    entities: frozenset[str]       # capitalised names, acronyms, initials (lower-cased)
    codes: frozenset[str]          # identifiers, backticked and called names
    quotes: frozenset[str]         # quoted strings (canonical word tuples joined)
    seq: tuple[str, ...]           # canonical tokens in order (role-swap check)
    once: dict[str, int]           # content words seen once -> position
    deictic: bool                  # points at something not in the text ("this picture")
    stems: dict[str, tuple[tuple[str, str], ...]]  # word -> (stem, prefix), if prefixed
    spelled: dict[str, frozenset[str]]  # acronym -> the words it abbreviates here
    norm: str                      # lower-cased, de-punctuated text (identity shortcut)


@lru_cache(maxsize=65536)
def _splits(word: str) -> tuple[tuple[str, str], ...]:
    """Every (stem, prefix) reading of ``word`` with a non-empty prefix and a stem of 4+
    letters: "disable" -> ("able", "dis")."""
    return tuple((word[len(p):], p) for p in _PREFIXES
                 if p and word.startswith(p) and len(word) - len(p) >= 4)


def _spelled_out(tokens: list[str], canon: list[str]) -> dict[str, frozenset[str]]:
    """Acronyms this text spells out: initials of 2-4 consecutive content words
    ("Machine Learning" -> "ml") and the capitals of CamelCase words ("TypeScript" -> "ts")."""
    out: dict[str, frozenset[str]] = {}
    run: list[tuple[str, bool]] = []
    for tok, word in zip(tokens, canon, strict=True):
        if word in _STOPWORDS or not tok[0].isalpha():
            run = []
            continue
        caps = "".join(ch for ch in tok if ch.isupper())
        if len(caps) >= 2 and not tok.isupper():
            out[caps.lower()] = frozenset([word])
        run = [*run[-3:], (word, tok[0].isupper())]
        for size in range(2, len(run) + 1):
            words = run[-size:]
            # Two letters match too much by chance ("alcohol rehab" is not "AR"): those
            # need capitalised words ("Machine Learning").
            if size > 2 or all(cap for _, cap in words):
                out["".join(w[0] for w, _ in words)] = frozenset(w for w, _ in words)
    return out


def _layout(text: str, tokens: list[str]) -> tuple[set[int], set[int]]:
    """Which tokens open a sentence (or a bracket: their capital letter says nothing about
    being a name), and which are followed by the next token with only a space between
    ("Donald Trump", not "Yes, Datasets")."""
    offsets: list[int] = []
    pos = 0
    for tok in tokens:
        pos = text.find(tok, pos)
        offsets.append(pos)
        pos += len(tok)
    starts = {0}
    for brk in _SENTENCE_END.finditer(text):
        for i, off in enumerate(offsets):
            if off >= brk.end():
                starts.add(i)
                break
    joined = {i for i in range(len(tokens) - 1)
              if text[offsets[i] + len(tokens[i]):offsets[i + 1]] == " "}
    return starts, joined


def _negation_scope(i: int, lowered: list[str], canon: list[str], heads: set[str],
                    scope: set[str]) -> None:
    """The negator at ``i`` applies to the next content word (its head) and, looser, the
    one after ("isn't Spotify available"), within the clause."""
    j, taken = i + 1, 0
    while j < len(lowered) and taken < 2 and lowered[j] not in _CLAUSE_BREAK:
        if canon[j] not in _STOPWORDS:
            (heads if taken == 0 else scope).add(canon[j])
            taken += 1
        j += 1


def _add_number(value: float, unit: str | None, i: int, lowered: list[str], canon: list[str],
                numbers: set[str], quantities: set[tuple[str, str]]) -> None:
    """Record the number at token ``i`` with its multiplier ("5 million") and its unit,
    written after it ("2 GB") or before it ("$500", "Rs 500")."""
    n = len(lowered)
    after = i + 1
    if unit is None and after < n and lowered[after] in _MULTIPLIERS:
        value *= _MULTIPLIERS[lowered[after]]
        after += 1
    if unit is None and after < n and canon[after] in _UNITS:
        unit = _UNITS[canon[after]]
    if unit is None and i > 0 and lowered[i - 1] in _CURRENCY_BEFORE:
        unit = _UNITS[lowered[i - 1]]
    text = str(int(value)) if value.is_integer() else repr(value)
    numbers.add(text)
    if unit is not None:
        quantities.add((text, unit))


def _add_dotted(raw: str, low: str, codes: set[str], entities: set[str]) -> None:
    """os.path.join is code; quora.com and Bootstrap.js are names; B.Tech is neither."""
    parts = low.split(".")
    if parts[-1] in _TLDS or (parts[-1] in ("js", "py") and len(parts) == 2):
        entities.add(_canon(parts[-2] if parts[-1] in _TLDS else parts[0]))
    elif min(map(len, parts)) >= 2 and not raw.split(".")[0].isupper():
        codes.add(low)


def _is_name(raw: str, low: str, i: int, layout: tuple[set[int], set[int]],
             tokens: list[str], lowered: list[str]) -> bool:
    """Capitalised words that do not merely open a sentence, acronyms, CamelCase."""
    if raw == "I" or low in _CURRENCY_WORDS or (
            low in _UNITS and i and lowered[i - 1][:1].isdigit()):  # "2 GB", "INR"
        return False
    if raw.isupper() and len(raw) > 1 and raw.isalnum():
        return True  # NRA, GATE, iOS-like acronyms
    if raw[0].isupper():
        if low in _STOPWORDS:
            return False
        starts, joined = layout
        if i not in starts:
            return True
        # A sentence opener is a name when a name follows: "Donald Trump is ...".
        return i in joined and tokens[i + 1].istitle() and tokens[i + 1].isalpha() and \
            lowered[i + 1] not in _STOPWORDS
    return bool(_CAMEL.match(raw))


@lru_cache(maxsize=4096)  # ~5 KB each
def _facets(text: str) -> _Facets:
    """Extract every facet of ``text`` once (both texts of a check go through here)."""
    expanded = _expand(text)
    raw_tokens = _TOKEN.findall(expanded)
    lowered = [t.lower().rstrip(".") for t in raw_tokens]
    canon = [_canon(t) for t in raw_tokens]

    layout = _layout(expanded, raw_tokens)

    negated: set[str] = set()
    negscope: set[str] = set()
    negations = 0
    numbers: set[str] = set()
    quantities: set[tuple[str, str]] = set()
    dates: set[str] = set()
    entities: set[str] = set()
    codes: set[str] = set()

    n = len(raw_tokens)
    for i, (raw, low) in enumerate(zip(raw_tokens, lowered, strict=True)):
        if low in _NEGATORS:
            negations += 1
            _negation_scope(i, lowered, canon, negated, negscope)
        nxt = canon[i + 1] if i + 1 < n else ""
        if low.isalpha():
            if low in _MONTHS and (low not in ("may", "march") or raw[0].isupper()):
                dates.add(f"month{_MONTHS[low]}")
            elif low in _MONTH_ABBR and raw[0].isupper():
                dates.add(f"month{_MONTH_ABBR[low]}")
            elif low in _WEEKDAYS or low in _RELATIVE_DAYS:
                dates.add(low)
            elif low in _NUMBER_WORDS and (low != "one" or nxt in _UNITS) and (
                    low not in _MULTIPLIERS or (i and lowered[i - 1] in ("a", "one"))):
                _add_number(float(_NUMBER_WORDS[low]), None, i, lowered, canon,
                            numbers, quantities)
            elif raw in _USA:
                entities.add("usa")
            elif _is_name(raw, low, i, layout, raw_tokens, lowered):
                entities.add(canon[i])
            continue

        # Tokens with digits, dots or underscores.
        if _YEAR.match(low) and (nxt not in _UNITS or nxt == "in"):  # "in 1947 in Oslo"
            dates.add(low)
        elif decade := _DECADE.match(low):
            dates.add(decade.group(1) or "19" + (decade.group(2) or ""))
        elif _NUMBER.match(low):
            _add_number(float(low.replace(",", "")), None, i, lowered, canon, numbers,
                        quantities)
        elif suffixed := _UNIT_SUFFIX.match(low):
            value, suffix = float(suffixed.group(1)), suffixed.group(2)
            if suffix in ("st", "nd", "rd", "th") and 1 <= value <= 10:
                canon[i] = _ORDINALS[int(value) - 1]  # "1st" is the word "first"
            elif suffix in ("k", "mn", "bn"):
                _add_number(value * _MULTIPLIERS[suffix], None, i, lowered, canon, numbers,
                            quantities)
            else:
                unit = None if suffix in ("st", "nd", "rd", "th", "x") else _UNITS.get(
                    _canon(suffix), suffix)
                _add_number(value, unit, i, lowered, canon, numbers, quantities)
        elif _ALNUM.match(low) or _VERSION.match(low):
            numbers.add(low)  # model numbers and versions: m604dn, i5, 4g, 2fa, 9.2.1
        elif _SNAKE.match(raw):
            codes.add(low)
        elif raw in _USA:
            entities.add("usa")
        elif _INITIALS.match(raw) and len(raw) <= 6:
            entities.add(low.replace(".", ""))  # H.W., U.K.
        elif _DOTTED.match(raw.rstrip(".")):
            _add_dotted(raw, low, codes, entities)
        elif _is_name(raw, low, i, layout, raw_tokens, lowered):
            entities.add(canon[i])

    codes.update(m.lower() for m in _BACKTICK.findall(expanded))
    codes.update(m.lower() for m in _CALL.findall(expanded))
    quotes: set[str] = set()
    for m in _QUOTED.finditer(expanded):
        body = m.group(1) or m.group(2) or ""
        quoted = [_canon(t) for t in _TOKEN.findall(body)]
        if quoted:
            quotes.add(" ".join(quoted))

    words = frozenset(canon)
    content = frozenset(w for w in words if w not in _STOPWORDS and not w.isdigit())
    counts: dict[str, int] = {}
    for w in canon:
        counts[w] = counts.get(w, 0) + 1
    once = {w: i for i, w in enumerate(canon)
            if counts[w] == 1 and w not in _STOPWORDS and not w.isdigit()}
    # Only the first sentence: a later "this function" points back into the text itself.
    deictic = bool(_DEICTIC.search(_FIRST_SENTENCE.split(expanded, maxsplit=1)[0]))
    return _Facets(
        words=words,
        content=content,
        negated=frozenset(negated),
        negscope=frozenset(negated | negscope),
        negations=negations,
        numbers=frozenset(numbers),
        quantities=frozenset(quantities),
        dates=frozenset(dates),
        entities=frozenset(entities),
        codes=frozenset(codes),
        quotes=frozenset(quotes),
        seq=tuple(canon),
        once=once,
        deictic=deictic,
        stems={w: split for w in content if (split := _splits(w))},
        spelled=_spelled_out(raw_tokens, canon),
        norm=" ".join(lowered),
    )


# ---------------------------------------------------------------- checks

def _negation(a: _Facets, b: _Facets) -> bool:
    """True when a word negated in one text is stated positively in the other ("Are
    clippers allowed?" vs "Why are clippers not allowed?"), including negations that
    moved ("not have X and be Y" vs "have X and not be Y"). A negation of something the
    other text never mentions ("... without surgery") is a qualifier, not a flip."""
    if a.negscope & b.negscope:
        return False
    flip_a = a.negated & b.words
    flip_b = b.negated & a.words
    if flip_a and (flip_b or not b.negated):
        return True
    if flip_b and not a.negated:
        return True
    return _antonym_prefix(a, b)


def _antonym_prefix(a: _Facets, b: _Facets) -> bool:
    """enable/disable, increase/decrease, import/export: one text has a word, the other
    has the same stem under the opposite prefix, and neither has both."""
    only_a = a.content - b.words
    if not only_a:
        return False
    only_b = b.content - a.words
    if not only_b:
        return False
    prefixes: dict[str, set[str]] = {}
    for w in only_a:
        prefixes.setdefault(w, set()).add("")
        for stem, p in a.stems.get(w, ()):
            prefixes.setdefault(stem, set()).add(p)
    for w in only_b:
        for stem, q in ((w, ""), *b.stems.get(w, ())):
            for p in prefixes.get(stem, ()):
                if (p, q) in _OPPOSITE_PREFIXES or (q, p) in _OPPOSITE_PREFIXES:
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


def _number(a: _Facets, b: _Facets) -> bool:
    """Different numbers: "class 11" vs "class 9", "M604n" vs "M604dn", or a number on one
    side only ("iPhone 6" is not "iPhone")."""
    return a.numbers != b.numbers


def _unit(a: _Facets, b: _Facets) -> bool:
    """The same number of different things: "5 km" vs "5 miles", "2 GB" vs "2 TB"."""
    if a.quantities == b.quantities:
        return False
    units_a: dict[str, set[str]] = {}
    for value, unit in a.quantities:
        units_a.setdefault(value, set()).add(unit)
    return any(value in units_a and unit not in units_a[value] for value, unit in b.quantities)


def _date(a: _Facets, b: _Facets) -> bool:
    """Different years, decades, months or weekdays: "2011" vs "2012", or a year on one
    side only ("best laptop in 2019" is not "best laptop")."""
    return a.dates != b.dates


def _entity(a: _Facets, b: _Facets) -> bool:
    """A name in one text that the other never mentions: "George W. Bush" vs
    "George H.W. Bush", "Vermont" vs "Maryland", "install Python" vs "install Python on
    Ubuntu". Casing does not matter: "trump" in the other text counts as "Trump"."""
    missing_a, missing_b = _missing(a.entities, b), _missing(b.entities, a)
    if not missing_a and not missing_b:
        return False
    # An acronym on one side spelled out on the other: "ML" / "Machine Learning".
    for acronym in missing_a & b.spelled.keys():
        missing_a.discard(acronym)
        missing_b -= b.spelled[acronym]
    for acronym in missing_b & a.spelled.keys():
        missing_b.discard(acronym)
        missing_a -= a.spelled[acronym]
    return bool(missing_a or missing_b)


def _missing(names: frozenset[str], other: _Facets) -> set[str]:
    """Names the other text does not mention, allowing for "Mac"/"MacBook",
    "India"/"Indian" (prefixes) and one-letter typos ("Hilary"/"Hillary")."""
    absent = names - other.words - other.entities
    return {e for e in absent if not any(_near(e, w) for w in other.words)}


def _near(x: str, y: str) -> bool:
    if len(x) < 3 or len(y) < 3:
        return False
    if x.startswith(y) or y.startswith(x):
        return True
    if len(x) < 5 or abs(len(x) - len(y)) > 1:
        return False
    # One insertion, deletion or substitution apart.
    i = 0
    while i < len(x) and i < len(y) and x[i] == y[i]:
        i += 1
    return x[i + 1:] == y[i + 1:] or x[i + 1:] == y[i:] or x[i:] == y[i + 1:]


def _code_missing(codes: frozenset[str], other: _Facets) -> bool:
    return any(c not in other.codes and c not in other.norm for c in codes)


def _code(a: _Facets, b: _Facets) -> bool:
    """Identifiers must match exactly: ``os.path`` is not ``os.walk``."""
    if a.codes == b.codes:
        return False
    return _code_missing(a.codes, b) and _code_missing(b.codes, a)


def _quote(a: _Facets, b: _Facets) -> bool:
    """Both texts quote something (a phrase to translate, an error message) and some quote
    in one has no close match among the other's: "translate 'good morning'" is not
    "translate 'good night'". Quotes used for emphasis on one side only pass."""
    if not a.quotes or not b.quotes or a.quotes == b.quotes:
        return False
    return not (_quotes_matched(a.quotes, b.quotes) and _quotes_matched(b.quotes, a.quotes))


def _quotes_matched(xs: frozenset[str], ys: frozenset[str]) -> bool:
    for x in xs:
        wx = set(x.split())
        if not any(len(wx & (wy := set(y.split()))) * 2 >= len(wx | wy) for y in ys):
            return False
    return True


_SYMMETRIC = _words("and or vs versus between compare compared differ difference different "
                       "similar similarity same equal meet met relationship relation")


def _order(a: _Facets, b: _Facets) -> bool:
    """Roles swapped: "Texas to California" vs "California to Texas", "Messi better than
    Ronaldo" vs "Ronaldo better than Messi". Two shared words appear in opposite orders
    with (mostly) the same words between them, and those words are not symmetric
    ("X and Y", "X vs Y" may swap freely)."""
    shared = [w for w in a.once if w in b.once]
    if len(shared) < 2:
        return False
    shared.sort(key=a.once.__getitem__)
    for i, x in enumerate(shared):
        ax, bx = a.once[x], b.once[x]
        for y in shared[i + 1:]:
            ay, by = a.once[y], b.once[y]
            if by > bx:
                continue  # same order in both
            bridge_a = set(a.seq[ax + 1:ay])
            bridge_b = set(b.seq[by + 1:bx])
            if not bridge_a or not bridge_b or len(bridge_a) > 6 or len(bridge_b) > 6:
                continue
            if bridge_a & _SYMMETRIC or bridge_b & _SYMMETRIC:
                continue
            common = len(bridge_a & bridge_b)
            if common * 2 >= len(bridge_a | bridge_b):
                return True
    return False


def _context(a: _Facets, b: _Facets) -> bool:
    """ "Who is this girl?", "Solve the equation below": the question points at something
    the cache never saw, so two such questions need not be about the same thing."""
    return a.deictic or b.deictic


_CHECK_FUNCS = {
    "negation": _negation,
    "opposite": _opposite,
    "number": _number,
    "unit": _unit,
    "date": _date,
    "entity": _entity,
    "code": _code,
    "quote": _quote,
    "order": _order,
    "context": _context,
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
