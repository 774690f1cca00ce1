"""Second-stage verification of a semantic-cache candidate: who did what to whom.

The guard (seawall/cache/guard.py) compares *what* two texts mention: numbers, names,
negations. Two texts can mention exactly the same things and still ask different
questions: "Did Arsenal beat Chelsea?" / "Did Chelsea beat Arsenal?", "flights from
Paris to Oslo" / "from Oslo to Paris", "opened in 1990 and closed in 2001" / "opened
in 2001 and closed in 1990". MiniLM scores such pairs 0.96-0.99, as high as true
paraphrases, so no threshold separates them. The verifier aligns the two token
sequences and looks at the *slots* the shared words sit in:

- ``swap``: two shared words (or runs of words, "New York") traded places: each now
  sits where the other sat, between the same neighbours. Exempt: coordinations ("X and
  Y", "X or Y", "between X and Y"), and two prepositional phrases of different kinds
  that moved together, each with its own preposition ("born in Oslo in 1990" / "born
  in 1990 in Oslo"). A phrase that merely moved ("to Oslo from Paris", "In 1990, X
  ..." / "X ... in 1990") keeps its neighbours and passes.
- ``wh-role``: the question word asks for a different role with the same words:
  "Who is the father of X?" / "Whose father is X?", "Who did X beat?" / "Who beat X?".
- ``polarity``: the same words with one more negation ("How can I ... without a
  phone?" / "How can't I ... without a phone?"); a yes/no question's negative form
  ("Isn't it worth it?") asks the same thing and passes.
- ``direction``: a word went from one end of a "to"/"into" to the other where a move,
  change or translation is meant ("calling cards from US to India" / "from India to
  US", "convert 16 into a fraction" / "convert a fraction into 16"), including words the
  swap check skips ("US", "this"); "to" as an infinitive ("a way to learn") never counts.
- ``number-order``: the same numbers in another order ("I am 18 ... for 8 months" / "I am
  8 ... for 18 months"), unless they are coordinated ("500 and 1000 rupee notes") or a
  from/to range moved whole.
- ``name-order``: two names exchanged everywhere, one said more than once, which the
  swap check (words said once) cannot follow ("... on Reddit ... on Quora if they knew
  Quora" / "... on Quora ... on Reddit if they knew Reddit"); coordinated names and
  symmetric relations ("between India and Pakistan") pass.

All are rules over the guard's canonical tokens (no learned weights; the few
constants were set on hand-written cases and checked on the QQP dev split and the
generated near-miss set, bench/nearmiss.py). A check costs a few microseconds: the
tokens come from the guard's per-text cache.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from seawall.cache.guard import _STOPWORDS, _canon, _facets, _words

__all__ = ["CandidateVerifier"]

_COORDINATORS = frozenset({"and", "or", "nor", "vs", "versus", "v", "plus", "&"})
# Words that may sit between two coordinated items without breaking the coordination.
_COORD_FILLER = frozenset({"the", "a", "an", "both", "either", "neither", "my", "your",
                           "his", "her", "their", "our", "its", "also", "then"})
_PREPOSITIONS = frozenset({
    "in", "on", "at", "by", "for", "from", "to", "into", "onto", "with", "without", "of",
    "during", "since", "until", "till", "after", "before", "between", "among", "through",
    "across", "over", "under", "near", "around", "about", "against", "toward", "towards",
    "via", "per", "within", "as", "like"})
_AUX = frozenset({"do", "doe", "does", "did", "can", "could", "should", "would", "will",
                  "shall", "may", "might", "must", "is", "are", "wa", "was", "were", "ha",
                  "has", "have", "had"})
# Relations whose two sides may trade places.
_SYMMETRIC = frozenset({"between", "compare", "compared", "comparison", "differ", "difference",
                        "different", "similar", "similarity", "same", "equal", "relationship",
                        "relation", "versus", "vs"})


def _canonical(words: frozenset[str]) -> frozenset[str]:
    """The forms the guard's tokens take ("difference" -> "differense", "was" -> "wa")."""
    return words | {_canon(w) for w in words}


_COORDINATORS, _COORD_FILLER, _PREPOSITIONS, _SYMMETRIC, _AUX = map(
    _canonical, (_COORDINATORS, _COORD_FILLER, _PREPOSITIONS, _SYMMETRIC, _AUX))
_NEGATORS = frozenset({"not", "no", "never", "none", "nobody", "nothing", "nowhere", "neither",
                       "nor", "without", "non", "unable"})
# Pairs of shared runs in opposite orders examined at most: a 2,000-character text
# reversed has ~80,000 (66 ms); real paraphrases have a handful.
_MAX_INVERSIONS = 300
_WH = ("who", "whose", "whom", "what", "which", "where", "when", "why", "how")


@dataclass(frozen=True, slots=True)
class _Tokens:
    seq: tuple[str, ...]           # canonical tokens in order (stop words included)
    once: dict[str, int]           # content word seen once -> position
    kinds: dict[str, str]          # content word -> "number" | "name" | "word"
    wh: tuple[str, str | None]     # the first question word and the word after it
    content: frozenset[str]
    negations: int                 # negators, less a yes/no question's "Isn't it ...?"
    affirmed: tuple[str, ...]      # seq without its negators
    names: tuple[str, ...] = ()    # names (the guard's entities) in order, repeats kept
    names_at: tuple[int, ...] = ()  # their positions in seq


@lru_cache(maxsize=4096)
def _tokens(text: str) -> _Tokens:
    f = _facets(text)
    seq = f.seq
    counts: dict[str, int] = {}
    for w in seq:
        counts[w] = counts.get(w, 0) + 1
    # Content words once in the text, numbers included (the guard's ``once`` has none).
    once = {w: i for i, w in enumerate(seq) if counts[w] == 1 and w not in _STOPWORDS}
    kinds: dict[str, str] = {}
    for w in once:
        if w[:1].isdigit() or w in f.numbers or w in f.dates:
            kinds[w] = "number"
        elif w in f.entities:
            kinds[w] = "name"
        else:
            kinds[w] = "word"
    wh: tuple[str, str | None] = ("", None)
    for i, w in enumerate(seq[:12]):
        if w in _WH:
            # The next auxiliary or content word ("who really is X": "is").
            nxt = next((v for v in seq[i + 1:] if v in _AUX or v not in _STOPWORDS), None)
            wh = (w, nxt)
            break
    # "Isn't it worth it?" asks what "Is it worth it?" asks: that negator does not count.
    rhetorical = len(seq) > 1 and seq[0] in _AUX and seq[1] == "not"
    at = tuple(i for i, w in enumerate(seq) if w in f.entities and w not in _STOPWORDS)
    return _Tokens(seq=seq, once=once, kinds=kinds, wh=wh, content=f.content - _NEGATORS,
                   negations=f.negations - rhetorical,
                   affirmed=tuple(w for w in seq if w not in _NEGATORS),
                   names=tuple(seq[i] for i in at), names_at=at)


@dataclass(frozen=True, slots=True)
class _Chunk:
    a0: int
    a1: int  # inclusive
    b0: int
    b1: int
    kind: str


def _chunks(a: _Tokens, b: _Tokens) -> list[_Chunk]:
    """Runs of shared content words that are consecutive, in the same order, in both
    texts ("New York", "the fall of Rome"), in the order of ``a``."""
    shared = sorted((a.once[w], b.once[w], w) for w in a.once if w in b.once)
    out: list[_Chunk] = []
    for pa, pb, w in shared:
        last = out[-1] if out else None
        # Joined across up to two equal function words too: "the fall of Rome".
        if last is not None and 0 < pa - last.a1 == pb - last.b1 <= 3 and \
                a.seq[last.a1 + 1:pa] == b.seq[last.b1 + 1:pb]:
            kind = last.kind if last.kind == a.kinds[w] else "name" \
                if "name" in (last.kind, a.kinds[w]) else last.kind
            out[-1] = _Chunk(last.a0, pa, last.b0, pb, kind)
        else:
            out.append(_Chunk(pa, pa, pb, pb, a.kinds[w]))
    return out


def _at(seq: tuple[str, ...], i: int) -> str:
    return seq[i] if 0 <= i < len(seq) else ("<s>" if i < 0 else "</s>")


def _coordinated(ma: tuple[str, ...], mb: tuple[str, ...], before: tuple[str, ...],
                 head: tuple[str, ...]) -> bool:
    """Given the words between two swapped runs in each text: they are two sides of a
    coordination or of a symmetric relation. Only a coordinator and determiners between
    them ("X and Y", "X or the Y"), perhaps after the head both sides share ("molar mass
    and molecular mass") or another item of a list ("SaaS, PaaS and IaaS"); a symmetric
    word between them ("X's relationship with Y", "X similar to Y"), or before a
    coordination ("the difference between an X and being a Y")."""
    if any(w in _SYMMETRIC for w in ma) or any(w in _SYMMETRIC for w in mb):
        return True
    if not any(w in _COORDINATORS for w in ma) or not any(w in _COORDINATORS for w in mb):
        return False
    if any(w in _SYMMETRIC for w in before):
        return True
    rest = tuple(w for w in ma if w not in _COORDINATORS and w not in _COORD_FILLER)
    if not rest or rest == head[:len(rest)]:
        return True
    # One list item before the coordinator, in both texts.
    return len(rest) == 1 and ma.index(rest[0]) < min(
        ma.index(c) for c in ma if c in _COORDINATORS) and rest[0] in mb


def _same_name(seq: tuple[str, ...], x: _Chunk, y: _Chunk) -> bool:
    """One run is the other's acronym: swapping them says the same thing."""
    wx, wy = seq[x.a0:x.a1 + 1], seq[y.a0:y.a1 + 1]
    for short, long in ((wx, wy), (wy, wx)):
        content = [w for w in long if w not in _STOPWORDS]
        if len(short) == 1 and len(content) >= 2 and short[0] == "".join(
                w[0] for w in content):
            return True
    return False


def _window(seq: tuple[str, ...], start: int, end: int) -> tuple[str, ...]:
    return tuple(_at(seq, i) for i in range(start, end))


def _only_conjuncts_swapped(sa: tuple[str, ...], sb: tuple[str, ...]) -> bool:
    """``b`` is ``a`` with the two sides of one coordination exchanged: "the fall of Rome
    or the First World War" / "the First World War or the fall of Rome"."""
    n = len(sa)
    if n != len(sb):
        return False
    prefix = next((i for i in range(n) if sa[i] != sb[i]), n)
    suffix = next((i for i in range(n) if sa[n - 1 - i] != sb[n - 1 - i]), n)
    for k in range(prefix, n - suffix):
        if sa[k] not in _COORDINATORS:
            continue
        # The conjuncts may share their first or last words ("the"): start a little
        # before the first difference and end a little after the last one.
        for i in range(prefix, max(-1, prefix - 4), -1):
            for j in range(n - suffix, min(n, n - suffix + 3) + 1):
                if i < k < j - 1 and sb[i:j] == (*sa[k + 1:j], sa[k], *sa[i:k]):
                    return True
    return False


def _swap(a: _Tokens, b: _Tokens) -> bool:
    """Two shared runs traded slots: each has the other's neighbours now."""
    chunks = _chunks(a, b)
    if len(chunks) < 2 or _only_conjuncts_swapped(a.seq, b.seq):
        return False
    sa, sb = a.seq, b.seq
    budget = _MAX_INVERSIONS
    for i, x in enumerate(chunks):
        for y in chunks[i + 1:]:
            if y.b0 > x.b0:
                continue  # same order in both texts
            budget -= 1
            if budget < 0:
                return True  # this much reordering is no safe paraphrase (and bounds time)
            lax, lay = _at(sa, x.a0 - 1), _at(sa, y.a0 - 1)
            lbx, lby = _at(sb, x.b0 - 1), _at(sb, y.b0 - 1)
            rax, ray = _at(sa, x.a1 + 1), _at(sa, y.a1 + 1)
            rbx, rby = _at(sb, x.b1 + 1), _at(sb, y.b1 + 1)
            if (x.kind == y.kind == "number" and y.a0 == x.a1 + 1 and x.b0 == y.b1 + 1
                    and lax == lby and ray == rbx):
                return True  # "a 3:2 ratio" / "a 2:3 ratio", "NDA 2 2016" / "NDA 2016 2"
            # x sits between y's old neighbours and y between x's, and those slots differ
            # (three words either side: "$28 billion when he was worth $50 billion").
            if not (lax == lby and lay == lbx and rax == rby and ray == rbx):
                continue
            if (_window(sa, x.a0 - 3, x.a0) == _window(sa, y.a0 - 3, y.a0)
                    and _window(sa, x.a1 + 1, x.a1 + 4) == _window(sa, y.a1 + 1, y.a1 + 4)):
                continue
            if _coordinated(sa[x.a1 + 1:y.a0], sb[y.b1 + 1:x.b0], sa[max(0, x.a0 - 4):x.a0],
                            sa[y.a1 + 1:y.a1 + 3]):
                continue
            if _same_name(sa, x, y):
                continue  # "the NBA ... the National Basketball Association" swapped
            # Two prepositional phrases of different kinds moved, each keeping its own
            # preposition: "born in Oslo in 1990" / "born in 1990 in Oslo".
            if (lax == lbx and lay == lby and lax in _PREPOSITIONS and lay in _PREPOSITIONS
                    and x.kind != y.kind):
                continue
            return True
    return False


def _wh_role(a: _Tokens, b: _Tokens) -> bool:
    """Same words, another role asked for: "who is the father of X" / "whose father is
    X"; "who did X beat" (object) / "who beat X" (subject)."""
    (wa, na), (wb, nb) = a.wh, b.wh
    if not wa or not wb or a.content != b.content:
        return False
    if wa != wb and "whose" in (wa, wb) and {wa, wb} <= {"who", "whom", "whose"}:
        return True  # whose X is Y / who is the X of Y
    # "who did X beat" asks for the object, "who beat X" for the subject.
    return {wa, wb} <= {"who", "whom"} and (na in _AUX) != (nb in _AUX)


def _polarity(a: _Tokens, b: _Tokens) -> bool:
    """The same words with one more negation: "How can I verify it without a phone?" /
    "How can't I verify it without a phone?" (the guard passes negations of words the
    other text also negates, such as "without a phone")."""
    return a.negations != b.negations and a.affirmed == b.affirmed


_DIRECTION = frozenset({"to", "into", "onto", "toward", "towards"})
_DETERMINERS = frozenset({"a", "an", "the", "my", "your", "our", "their", "his", "her", "its"})


# Words that make "X to Y" a direction (a change, a move, a translation) rather than an
# infinitive ("the best way to learn").
_MOTION = _canonical(_words("""
from convert converting conversion translate translating translation transfer transferring
move moving migrate migrating switch switching port porting upgrade upgrading downgrade
send sending ship shipping export exporting import importing travel traveling travelling
go going fly flying flight drive driving commute commuting relocate relocating change
changing shift shifting call calling route redirect redirecting
"""))


def _ends(seq: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """The sources and targets of each "to"/"into": the nearest non-article word either side
    ("convert a PDF to a Word file": pdf -> word), and the word after "from" ("from
    Fremont to San Jose": fremont -> san)."""
    sources: set[str] = set()
    targets: set[str] = set()
    for j, w in enumerate(seq):
        if w not in _DIRECTION:
            continue
        left = next((seq[i] for i in range(j - 1, max(-1, j - 4), -1)
                     if seq[i] not in _DETERMINERS), None)
        right = next((seq[i] for i in range(j + 1, min(len(seq), j + 4))
                      if seq[i] not in _DETERMINERS), None)
        if left is None or right is None or left == right:
            continue
        sources.add(left)
        targets.add(right)
        start = next((i for i in range(j - 1, max(-1, j - 6), -1) if seq[i] == "from"), None)
        if start is not None:
            first = next((seq[i] for i in range(start + 1, j) if seq[i] not in _DETERMINERS),
                         None)
            if first is not None:
                sources.add(first)
    return sources, targets


def _direction(a: _Tokens, b: _Tokens) -> bool:
    """A word went from one end of a direction to the other, even a word the swap check
    skips ("from US to India" / "from India to US", "convert 16 into a fraction" /
    "convert a fraction into 16")."""
    if any(w in _SYMMETRIC for w in a.seq) or any(w in _SYMMETRIC for w in b.seq):
        return False
    if not (_MOTION & set(a.seq)) or not (_MOTION & set(b.seq)):
        return False  # "a way to learn chess" / "learn to play chess": no direction
    (sa, ta), (sb, tb) = _ends(a.seq), _ends(b.seq)
    moved = ((sa - ta) & (tb - sb)) | ((ta - sa) & (sb - tb))
    return bool(moved)


def _numbers(t: _Tokens) -> tuple[str, ...]:
    return tuple(w for w in t.seq if w[:1].isdigit())


def _number_order(a: _Tokens, b: _Tokens) -> bool:
    """The same numbers in another order, each now bound to other words ("a 33 year old
    man ... a 50 year old woman" / "a 50 year old man ... a 33 year old woman"), unless
    two coordinated sides traded places ("Rs 500 or Rs 1000" / "Rs 1000 or Rs 500")."""
    # Each number's first place: a number said again ("in 2016 ... since 2016") moves
    # nothing, and the guard already refused texts whose sets of numbers differ.
    na, nb = tuple(dict.fromkeys(_numbers(a))), tuple(dict.fromkeys(_numbers(b)))
    if len(na) < 2 or na == nb or set(na) != set(nb):
        return False
    return not (_listed(a.seq) or _listed(b.seq) or _only_conjuncts_swapped(a.seq, b.seq))


def _listed(seq: tuple[str, ...], at: tuple[int, ...] | None = None) -> bool:
    """Two numbers coordinated ("500 and 1000", "Rs 500 or Rs 1000", "2015 or 2016
    MacBook") or a range moved as a whole ("to 8.1 from 8" / "from 8 to 8.1")."""
    if "from" in seq and any(w in _DIRECTION for w in seq):
        return True
    if at is None:
        at = tuple(i for i, w in enumerate(seq) if w[:1].isdigit())
    return any(j - i <= 4 and any(w in _COORDINATORS for w in seq[i + 1:j])
               for i, j in zip(at, at[1:], strict=False))


def _name_order(a: _Tokens, b: _Tokens) -> bool:
    """Two names exchanged everywhere, one of them said more than once ("Would people who
    use Reddit answer on Quora if they knew Quora?" / "... use Quora answer on Reddit if
    they knew Reddit?"): the swap check only follows words said once. Names said once
    each are left to it (a passive exchanges them too: "Did Oscar warn Farid?" / "Was
    Farid warned by Oscar?")."""
    na, nb = a.names, b.names
    if len(na) != len(nb) or na == nb or len(set(na)) == len(na):
        return False
    diffs = {(x, y) for x, y in zip(na, nb, strict=True) if x != y}
    if len(diffs) != 2:
        return False
    (x1, y1), (x2, y2) = diffs
    if not (x1 == y2 and y1 == x2):
        return False
    everywhere = all(x != y for x, y in zip(na, nb, strict=True) if x in (x1, y1))
    if not everywhere and na.count(x1) == nb.count(x1):
        return False  # some kept their place and the counts are kept: a sentence moved
    if any(w in _SYMMETRIC for w in a.seq) or any(w in _SYMMETRIC for w in b.seq):
        return False  # "between India and Pakistan", "the differences between X and Y"
    return not (_coordinates(a, x1, y1) or _coordinates(b, x1, y1))


def _coordinates(t: _Tokens, x: str, y: str) -> bool:
    """``x`` and ``y`` side by side with a coordinator between ("India and Pakistan")."""
    at = [(i, w) for i, w in zip(t.names_at, t.names, strict=True) if w in (x, y)]
    return any(w != v and j - i <= 4 and any(c in _COORDINATORS for c in t.seq[i + 1:j])
               for (i, w), (j, v) in zip(at, at[1:], strict=False))


_CHECKS = {"swap": _swap, "wh-role": _wh_role, "polarity": _polarity,
           "direction": _direction, "number-order": _number_order,
           "name-order": _name_order}


class CandidateVerifier:
    """Refuses a candidate whose shared words play other roles than in the query.

    ``check(query, candidate)`` returns None to serve, else the name of the refusing
    check (``swap``, ``wh-role``, ``polarity``, ``direction``, ``number-order``,
    ``name-order``), as
    :class:`~seawall.cache.guard.FalseHitGuard` does.
    """

    CHECKS: tuple[str, ...] = tuple(_CHECKS)

    def __init__(self, checks: Iterable[str] | None = None) -> None:
        names = self.CHECKS if checks is None else tuple(checks)
        unknown = [c for c in names if c not in _CHECKS]
        if unknown:
            raise ValueError(f"unknown verifier check(s) {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(self.CHECKS)}")
        self.checks = tuple(c for c in self.CHECKS if c in names)
        self._funcs = tuple((c, _CHECKS[c]) for c in self.checks)

    def check(self, query: str, candidate: str) -> str | None:
        if not self._funcs:
            return None
        a, b = _tokens(query), _tokens(candidate)
        if a.seq == b.seq:
            return None
        for name, func in self._funcs:
            if func(a, b):
                return name
        return None
