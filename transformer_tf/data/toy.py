"""A toy English -> "Toy German" translation task, generated from a seed (no download).

The task is small enough for a 2+2-layer Transformer to learn to ~100% exact match in minutes on
a CPU, but it cannot be solved by copying or by word-by-word substitution, because it needs:

* **reordering**: the target is subject-object-verb. The finite verb of a present-tense clause
  goes to the end; past and future tenses put a conjugated auxiliary (``hat``/``wird``) in second
  position and the participle/infinitive at the end (German "verb bracket")::

      the man buys a red apple          -> der mann einen roten apfel kauft
      the man did not buy the apple     -> der mann hat den apfel nicht gekauft

* **agreement**: articles and adjective endings agree with the noun's gender (m/f/n), number and
  case (subject = nominative, object and prepositional object = accusative) and with the kind of
  determiner (German weak/mixed/strong declension); verbs and auxiliaries agree with the subject's
  person and number, which English marks only in the present tense (``buys``/``buy``);
* **lengths that differ**: English ``do``/``does``/``did`` support disappears, a past-tense verb
  becomes two words, ``twenty three`` becomes ``drei und zwanzig`` (units first, joined by
  ``und``), English ``a``/``an`` depends on the next word's first letter while ``ein``/``eine``
  depends on the noun's gender.

Sentences are lowercase, space-separated, 4 to 20 tokens on each side. The target is a
deterministic function of the English sentence (no synonyms, no attachment ambiguity that changes
the translation), so 100% exact match is achievable. Vocabulary: ~200 English and ~310 target words.

Public API: :func:`generate_toy_pairs` and :func:`toy_splits`. The sentence structures
(:class:`NounPhrase`, :class:`Pronoun`, :class:`ToySentence`) and the renderers
:func:`render_english` / :func:`translate_toy` are for tests and for inspecting the grammar.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from transformer_tf.errors import UserError

MIN_TOKENS = 4
MAX_TOKENS = 20
# A practical bound per call (memory and time), far below what the grammar can produce (~1e12
# distinct sentences); a duplicate-rate check below catches a grammar that runs dry earlier.
MAX_TOY_PAIRS = 1_000_000

# --- Lexicon ---------------------------------------------------------------------------------

# (english singular, english plural, target singular, target plural, gender)
_NOUNS: tuple[tuple[str, str, str, str, str], ...] = (
    ("dog", "dogs", "hund", "hunde", "m"),
    ("man", "men", "mann", "maenner", "m"),
    ("tree", "trees", "baum", "baeume", "m"),
    ("table", "tables", "tisch", "tische", "m"),
    ("teacher", "teachers", "lehrer", "lehrer", "m"),
    ("friend", "friends", "freund", "freunde", "m"),
    ("king", "kings", "koenig", "koenige", "m"),
    ("bird", "birds", "vogel", "voegel", "m"),
    ("chair", "chairs", "stuhl", "stuehle", "m"),
    ("apple", "apples", "apfel", "aepfel", "m"),
    ("cake", "cakes", "kuchen", "kuchen", "m"),
    ("letter", "letters", "brief", "briefe", "m"),
    ("cat", "cats", "katze", "katzen", "f"),
    ("woman", "women", "frau", "frauen", "f"),
    ("flower", "flowers", "blume", "blumen", "f"),
    ("door", "doors", "tuer", "tueren", "f"),
    ("lamp", "lamps", "lampe", "lampen", "f"),
    ("street", "streets", "strasse", "strassen", "f"),
    ("city", "cities", "stadt", "staedte", "f"),
    ("mouse", "mice", "maus", "maeuse", "f"),
    ("bottle", "bottles", "flasche", "flaschen", "f"),
    ("queen", "queens", "koenigin", "koeniginnen", "f"),
    ("child", "children", "kind", "kinder", "n"),
    ("house", "houses", "haus", "haeuser", "n"),
    ("book", "books", "buch", "buecher", "n"),
    ("car", "cars", "auto", "autos", "n"),
    ("horse", "horses", "pferd", "pferde", "n"),
    ("picture", "pictures", "bild", "bilder", "n"),
    ("window", "windows", "fenster", "fenster", "n"),
    ("song", "songs", "lied", "lieder", "n"),
    ("egg", "eggs", "ei", "eier", "n"),
    ("boat", "boats", "boot", "boote", "n"),
)

# (english, target stem); target endings: -e, -en, -er, -es.
_ADJECTIVES: tuple[tuple[str, str], ...] = (
    ("big", "gross"),
    ("small", "klein"),
    ("old", "alt"),
    ("new", "neu"),
    ("red", "rot"),
    ("green", "gruen"),
    ("blue", "blau"),
    ("young", "jung"),
    ("happy", "froh"),
    ("fast", "schnell"),
    ("slow", "langsam"),
    ("beautiful", "schoen"),
    ("bright", "hell"),
    ("warm", "warm"),
    ("cold", "kalt"),
    ("loud", "laut"),
    ("clever", "klug"),
    ("wild", "wild"),
    ("strong", "stark"),
    ("empty", "leer"),
)

# (english base, 3rd person singular, past, target stem). The target conjugation is regular:
# stem + -e/-st/-t/-en, participle ge- + stem + -t, infinitive stem + -en.
_VERBS: tuple[tuple[str, str, str, str], ...] = (
    ("buy", "buys", "bought", "kauf"),
    ("search", "searches", "searched", "such"),
    ("fetch", "fetches", "fetched", "hol"),
    ("love", "loves", "loved", "lieb"),
    ("paint", "paints", "painted", "mal"),
    ("ask", "asks", "asked", "frag"),
    ("hear", "hears", "heard", "hoer"),
    ("cook", "cooks", "cooked", "koch"),
    ("build", "builds", "built", "bau"),
    ("need", "needs", "needed", "brauch"),
    ("play", "plays", "played", "spiel"),
    ("learn", "learns", "learned", "lern"),
    ("count", "counts", "counted", "zaehl"),
    ("fill", "fills", "filled", "fuell"),
    ("make", "makes", "made", "mach"),
    ("carry", "carries", "carried", "trag"),
    ("share", "shares", "shared", "teil"),
    ("know", "knows", "knew", "kenn"),
    ("wake", "wakes", "woke", "weck"),
    ("show", "shows", "showed", "zeig"),
)

# Prepositions that govern the accusative in German, so that one case table serves objects too.
_PREPOSITIONS: dict[str, str] = {
    "for": "fuer",
    "without": "ohne",
    "through": "durch",
    "against": "gegen",
    "around": "um",
}

# person/number keys: 1sg, 2sg, 3sg, 1pl, 3pl ("you" is always translated as singular "du").
# english subject, english object, target subject, target object, person
_PRONOUNS: tuple[tuple[str, str, str, str, str], ...] = (
    ("i", "me", "ich", "mich", "1sg"),
    ("you", "you", "du", "dich", "2sg"),
    ("he", "him", "er", "ihn", "3sg"),
    ("she", "her", "sie", "sie", "3sg"),
    ("it", "it", "es", "es", "3sg"),
    ("we", "us", "wir", "uns", "1pl"),
    ("they", "them", "sie", "sie", "3pl"),
)

_PRESENT_ENDINGS = {"1sg": "e", "2sg": "st", "3sg": "t", "1pl": "en", "3pl": "en"}
_HABEN = {"1sg": "habe", "2sg": "hast", "3sg": "hat", "1pl": "haben", "3pl": "haben"}
_WERDEN = {"1sg": "werde", "2sg": "wirst", "3sg": "wird", "1pl": "werden", "3pl": "werden"}

# Determiners: english singular form, english plural form (None: singular only), and the
# target forms by gender (m/f/n, or "pl") and case (nominative, accusative).
_DETERMINERS: dict[str, tuple[str, str | None, dict[str, tuple[str, str]]]] = {
    "the": (
        "the",
        "the",
        {"m": ("der", "den"), "f": ("die", "die"), "n": ("das", "das"), "pl": ("die", "die")},
    ),
    "a": ("a", None, {"m": ("ein", "einen"), "f": ("eine", "eine"), "n": ("ein", "ein")}),
    "this": (
        "this",
        "these",
        {
            "m": ("dieser", "diesen"),
            "f": ("diese", "diese"),
            "n": ("dieses", "dieses"),
            "pl": ("diese", "diese"),
        },
    ),
    "my": (
        "my",
        "my",
        {
            "m": ("mein", "meinen"),
            "f": ("meine", "meine"),
            "n": ("mein", "mein"),
            "pl": ("meine",) * 2,
        },
    ),
    "your": (
        "your",
        "your",
        {
            "m": ("dein", "deinen"),
            "f": ("deine", "deine"),
            "n": ("dein", "dein"),
            "pl": ("deine",) * 2,
        },
    ),
}
# German "weak" declension follows der/dieser; "mixed" follows ein/mein/dein.
_WEAK_DETERMINERS = frozenset({"the", "this"})

_EN_UNITS = (
    "",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_DE_UNITS = (
    "",
    "ein",
    "zwei",
    "drei",
    "vier",
    "fuenf",
    "sechs",
    "sieben",
    "acht",
    "neun",
    "zehn",
    "elf",
    "zwoelf",
    "dreizehn",
    "vierzehn",
    "fuenfzehn",
    "sechzehn",
    "siebzehn",
    "achtzehn",
    "neunzehn",
)
_EN_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_DE_TENS = (
    "",
    "",
    "zwanzig",
    "dreissig",
    "vierzig",
    "fuenfzig",
    "sechzig",
    "siebzig",
    "achtzig",
    "neunzig",
)

TENSES = ("present", "past", "future")


# --- Sentence structures -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pronoun:
    """A personal pronoun; ``index`` into the pronoun table (i, you, he, she, it, we, they)."""

    index: int


@dataclass(frozen=True)
class NounPhrase:
    """``[determiner] [number] [adjectives...] noun``.

    Attributes:
        noun: int, index into the noun table.
        plural: bool.
        determiner: str | None, one of ``the``, ``a`` (singular only), ``this`` (``these`` in the
            plural), ``my``, ``your``; None only in the plural (bare plural).
        number: int | None, 2..99 (plural only).
        adjectives: tuple[int, ...], indices into the adjective table, in order.
    """

    noun: int
    plural: bool = False
    determiner: str | None = "the"
    number: int | None = None
    adjectives: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.plural and (self.determiner is None or self.number is not None):
            raise ValueError("a singular noun phrase needs a determiner and no number")
        if self.plural and self.determiner == "a":
            raise ValueError("`a` is singular only")
        if self.number is not None and not 2 <= self.number <= 99:
            raise ValueError("numbers are 2..99")


@dataclass(frozen=True)
class ToySentence:
    """``subject verb object [preposition object]`` with a tense and optional negation."""

    subject: NounPhrase | Pronoun
    verb: int
    tense: str
    negated: bool
    object: NounPhrase | Pronoun
    preposition: str | None = None
    prepositional_object: NounPhrase | None = None


def _person(np: NounPhrase | Pronoun) -> str:
    if isinstance(np, Pronoun):
        return _PRONOUNS[np.index][4]
    return "3pl" if np.plural else "3sg"


def _english_number(n: int) -> list[str]:
    if n < 20:
        return [_EN_UNITS[n]]
    tens, units = divmod(n, 10)
    return [_EN_TENS[tens]] + ([_EN_UNITS[units]] if units else [])


def _target_number(n: int) -> list[str]:
    if n < 20:
        return [_DE_UNITS[n]]
    tens, units = divmod(n, 10)
    # German order: units first ("drei und zwanzig").
    return ([_DE_UNITS[units], "und"] if units else []) + [_DE_TENS[tens]]


def _english_np(np: NounPhrase | Pronoun, *, subject: bool) -> list[str]:
    if isinstance(np, Pronoun):
        return [_PRONOUNS[np.index][0 if subject else 1]]
    noun = _NOUNS[np.noun]
    rest = [] if np.number is None else _english_number(np.number)
    rest += [_ADJECTIVES[a][0] for a in np.adjectives]
    rest.append(noun[1] if np.plural else noun[0])
    if np.determiner is None:
        return rest
    singular, plural, _ = _DETERMINERS[np.determiner]
    word = plural if np.plural else singular
    if word == "a" and rest[0][0] in "aeiou":
        word = "an"
    return [word, *rest]


def _adjective_ending(determiner: str | None, gender: str, case: int, plural: bool) -> str:
    if plural:
        return "e" if determiner is None else "en"  # strong after no article, else weak
    if determiner in _WEAK_DETERMINERS:
        return "en" if (gender == "m" and case == 1) else "e"
    # Mixed declension (ein, mein, dein): the adjective shows the gender the article does not.
    if gender == "m":
        return "er" if case == 0 else "en"
    return "e" if gender == "f" else "es"


def _target_np(np: NounPhrase | Pronoun, *, case: int) -> list[str]:
    """``case``: 0 nominative, 1 accusative."""
    if isinstance(np, Pronoun):
        return [_PRONOUNS[np.index][2 + case]]
    _, _, target_sg, target_pl, gender = _NOUNS[np.noun]
    words: list[str] = []
    if np.determiner is not None:
        forms = _DETERMINERS[np.determiner][2]
        words.append(forms["pl" if np.plural else gender][case])
    if np.number is not None:
        words += _target_number(np.number)
    ending = _adjective_ending(np.determiner, gender, case, np.plural)
    words += [_ADJECTIVES[a][1] + ending for a in np.adjectives]
    words.append(target_pl if np.plural else target_sg)
    return words


def render_english(sentence: ToySentence) -> str:
    """The English (source) side of ``sentence`` as a space-separated lowercase string."""
    base, third, past, _ = _VERBS[sentence.verb]
    third_singular = _person(sentence.subject) == "3sg"
    if sentence.tense == "present":
        if sentence.negated:
            verb = ["does" if third_singular else "do", "not", base]
        else:
            verb = [third if third_singular else base]
    elif sentence.tense == "past":
        verb = ["did", "not", base] if sentence.negated else [past]
    else:
        verb = ["will", "not", base] if sentence.negated else ["will", base]
    words = _english_np(sentence.subject, subject=True) + verb
    words += _english_np(sentence.object, subject=False)
    if sentence.preposition is not None:
        words.append(sentence.preposition)
        words += _english_np(sentence.prepositional_object, subject=False)
    return " ".join(words)


def translate_toy(sentence: ToySentence) -> str:
    """The target ("Toy German") side of ``sentence``: subject-object-verb with agreement.

    Args:
        sentence: ToySentence, the structure the English sentence was rendered from.

    Returns:
        str, lowercase space-separated tokens.
    """
    person = _person(sentence.subject)
    stem = _VERBS[sentence.verb][3]
    middle = _target_np(sentence.object, case=1)
    if sentence.preposition is not None:
        middle.append(_PREPOSITIONS[sentence.preposition])
        middle += _target_np(sentence.prepositional_object, case=1)
    if sentence.negated:
        middle.append("nicht")
    words = _target_np(sentence.subject, case=0)
    if sentence.tense == "present":
        words += middle + [stem + _PRESENT_ENDINGS[person]]
    elif sentence.tense == "past":
        words += [_HABEN[person]] + middle + ["ge" + stem + "t"]
    else:
        words += [_WERDEN[person]] + middle + [stem + "en"]
    return " ".join(words)


# --- Sampling ----------------------------------------------------------------------------------


def _sample_np(rng: random.Random, *, pronoun_probability: float) -> NounPhrase | Pronoun:
    if rng.random() < pronoun_probability:
        return Pronoun(rng.randrange(len(_PRONOUNS)))
    plural = rng.random() < 0.4
    if plural:
        determiner = rng.choice(("the", "this", "my", "your", None, None))
        number = rng.randint(2, 99) if rng.random() < 0.35 else None
    else:
        determiner = rng.choice(("the", "the", "a", "a", "this", "my", "your"))
        number = None
    num_adjectives = rng.choices((0, 1, 2), weights=(0.5, 0.35, 0.15))[0]
    adjectives = tuple(rng.sample(range(len(_ADJECTIVES)), num_adjectives))
    return NounPhrase(rng.randrange(len(_NOUNS)), plural, determiner, number, adjectives)


def _sample_sentence(rng: random.Random) -> ToySentence:
    subject = _sample_np(rng, pronoun_probability=0.3)
    verb = rng.randrange(len(_VERBS))
    tense = rng.choice(TENSES)
    negated = rng.random() < 0.25
    obj = _sample_np(rng, pronoun_probability=0.15)
    preposition = prepositional_object = None
    if rng.random() < 0.3:
        preposition = rng.choice(tuple(_PREPOSITIONS))
        prepositional_object = _sample_np(rng, pronoun_probability=0.0)
    return ToySentence(subject, verb, tense, negated, obj, preposition, prepositional_object)


def generate_toy_pairs(num_pairs: int, seed: int) -> list[tuple[str, str]]:
    """Sample distinct (English, Toy German) sentence pairs.

    Deterministic for a given ``(num_pairs, seed)``; a longer request extends a shorter one with
    the same seed (the first ``n`` pairs are the same).

    Args:
        num_pairs: int >= 0, how many pairs; all source sentences are distinct.
        seed: int, the random seed.

    Returns:
        list[tuple[str, str]], ``(source, target)`` pairs of lowercase space-separated tokens,
        each side 4 to 20 tokens long.

    Raises:
        UserError: ``num_pairs`` is negative or more than the grammar can supply.
    """
    if num_pairs < 0:
        raise UserError(f"the number of toy pairs must be >= 0, got {num_pairs}")
    if num_pairs > MAX_TOY_PAIRS:
        raise UserError(
            f"the toy translation task can generate at most {MAX_TOY_PAIRS:,} distinct sentence "
            f"pairs per call; {num_pairs:,} were requested. Reduce the split sizes."
        )
    rng = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    # Generous budget: the grammar is huge, so duplicates are rare; running out means the grammar
    # cannot supply this many distinct sentences (guards against a future smaller lexicon).
    budget = 20 * num_pairs + 10_000
    while len(pairs) < num_pairs:
        budget -= 1
        if budget < 0:
            raise UserError(
                f"the toy grammar produced only {len(pairs):,} distinct sentences; "
                f"{num_pairs:,} were requested. Reduce the split sizes."
            )
        sentence = _sample_sentence(rng)
        source = render_english(sentence)
        if source in seen:
            continue
        target = translate_toy(sentence)
        if not all(MIN_TOKENS <= len(s.split()) <= MAX_TOKENS for s in (source, target)):
            continue
        seen.add(source)
        pairs.append((source, target))
    return pairs


def toy_splits(
    num_train: int, num_validation: int, num_test: int, seed: int
) -> dict[str, list[tuple[str, str]]]:
    """Train/validation/test splits of the toy task, disjoint in source sentence.

    The held-out splits are drawn first (test, then validation), so they do not change when
    only ``num_train`` changes.

    Args:
        num_train, num_validation, num_test: int >= 0, the split sizes.
        seed: int, the random seed; the same arguments always give the same splits.

    Returns:
        dict with keys ``"train"``, ``"validation"``, ``"test"``, each a list of
        ``(source, target)`` string pairs of exactly the requested length.

    Raises:
        UserError: a negative size, or more pairs than the grammar can supply.
    """
    for name, value in (("train", num_train), ("validation", num_validation), ("test", num_test)):
        if value < 0:
            raise UserError(f"the toy {name} split size must be >= 0, got {value}")
    pairs = generate_toy_pairs(num_train + num_validation + num_test, seed)
    test = pairs[:num_test]
    validation = pairs[num_test : num_test + num_validation]
    return {"train": pairs[num_test + num_validation :], "validation": validation, "test": test}
