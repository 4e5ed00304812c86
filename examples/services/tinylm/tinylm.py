"""A small word-level language model, trained in well under a second from plain text.

An interpolated trigram model with absolute discounting (the smoothing behind Kneser-Ney):
the probability of a word after two words mixes the trigram's discounted counts with the
bigram's, and the bigram's with an add-one unigram, so an unseen context still has a
distribution. Sampling works on the words seen after the context (or the most common words
when the context is new), which keeps a token to well under a millisecond in pure Python.

Standard library only: service replicas run with the host's system python3 and nothing else.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

BOS = "<s>"
EOS = "</s>"
DISCOUNT = 0.75
FALLBACK_WORDS = 200  # candidates when the context was never seen: the most common words

# Words (with inner apostrophes and hyphens), numbers, and each punctuation mark alone.
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['\-][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")
_NO_SPACE_BEFORE = frozenset(".,;:!?)]}%'\"")
_NO_SPACE_AFTER = frozenset("([{$")
_PARAGRAPH = re.compile(r"\n\s*\n")


def tokenize(text: str) -> list[str]:
    """The model's tokens of ``text``: words and punctuation marks."""
    return _TOKEN.findall(text)


def paragraphs(text: str) -> list[list[str]]:
    """The corpus as token lists, one per paragraph (blank-line separated); lines starting
    with '#' are notes about the corpus, not training text."""
    kept = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return [tokens for part in _PARAGRAPH.split(kept) if (tokens := tokenize(part))]


def joined(previous: str | None, token: str) -> str:
    """The text a token adds after ``previous`` (None: the first token of a reply)."""
    if previous is None or token in _NO_SPACE_BEFORE or previous in _NO_SPACE_AFTER:
        return token
    return " " + token


@dataclass
class Sampling:
    """How to choose each token: OpenAI's parameters of the same names."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None


@dataclass
class Generation:
    """One completion in progress: iterate it for text pieces (one per token, possibly '' while
    text that may begin a stop sequence is held back); afterwards ``finish_reason`` is 'stop'
    (end of text or a stop sequence) or 'length', and ``tokens`` the tokens generated."""

    model: NgramModel
    context: tuple[str, str]
    sampling: Sampling
    rng: random.Random
    leading_space: bool
    forced: list[str] = field(default_factory=list)
    capitalize: bool = False
    finish_reason: str = "length"
    tokens: int = 0
    text: str = ""
    _emitted: int = field(default=0, repr=False)

    def __iter__(self) -> Iterator[str]:
        stops = [s for s in self.sampling.stop if s]
        hold = max((len(s) for s in stops), default=1) - 1
        previous: str | None = self.context[1] if self.leading_space else None
        while self.tokens < self.sampling.max_tokens:
            if self.forced:
                token = self.forced.pop(0)
            else:
                token = self.model.next_token(self.context, self.sampling, self.rng)
            self.tokens += 1
            if token == EOS:
                self.finish_reason = "stop"
                break
            piece = joined(previous, token)
            if self.capitalize and not self.text:
                piece = piece[:1].upper() + piece[1:]
            self.text += piece
            previous = token
            self.context = (self.context[1], token)
            cut = min((i for s in stops if (i := self.text.find(s)) >= 0), default=-1)
            if cut >= 0:
                self.text = self.text[:cut]
                self.finish_reason = "stop"
                break
            yield self._release(len(self.text) - hold)
        else:
            self.finish_reason = "length"
        yield self._release(len(self.text))

    def _release(self, upto: int) -> str:
        """The text not yet given out, up to ``upto`` characters of the whole."""
        if upto <= self._emitted:
            return ""
        piece = self.text[self._emitted : upto]
        self._emitted = upto
        return piece


class NgramModel:
    """Interpolated trigram model with absolute discounting, trained from text."""

    def __init__(self, text: str) -> None:
        self.unigrams: Counter[str] = Counter()
        self.bigrams: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.trigrams: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        for words in paragraphs(text):
            seq = [BOS, BOS, *words, EOS]
            for i in range(2, len(seq)):
                self.unigrams[seq[i]] += 1
                self.bigrams[seq[i - 1]][seq[i]] += 1
                self.trigrams[(seq[i - 2], seq[i - 1])][seq[i]] += 1
        if not self.unigrams:
            raise ValueError("the corpus has no words to learn from")
        self.total = sum(self.unigrams.values())
        self.common = [w for w, _ in self.unigrams.most_common(FALLBACK_WORDS)]
        # A prompt's words are looked up regardless of case, as their commonest written form.
        self._forms: dict[str, str] = {}
        for word, _ in self.unigrams.most_common():
            self._forms.setdefault(word.lower(), word)
        # Totals per context, computed once: the interpolation weights need them every token.
        self._bi_totals = {h: sum(c.values()) for h, c in self.bigrams.items()}
        self._tri_totals = {h: sum(c.values()) for h, c in self.trigrams.items()}

    @property
    def vocabulary_size(self) -> int:
        """Distinct tokens the model can produce (the end-of-text mark included)."""
        return len(self.unigrams)

    def context_of(self, prompt_tokens: Sequence[str]) -> tuple[str, str]:
        """The two-token context a prompt leaves (start-of-text marks for a short one)."""
        padded = [BOS, BOS, *prompt_tokens]
        return (padded[-2], padded[-1])

    def _unigram(self, word: str) -> float:
        return (self.unigrams[word] + 1) / (self.total + self.vocabulary_size)

    def _bigram(self, prev: str, word: str) -> float:
        follow = self.bigrams.get(prev)
        if not follow:
            return self._unigram(word)
        total = self._bi_totals[prev]
        backoff = DISCOUNT * len(follow) / total
        return max(follow[word] - DISCOUNT, 0) / total + backoff * self._unigram(word)

    def probability(self, context: tuple[str, str], word: str) -> float:
        """P(word | context) under the smoothed model."""
        follow = self.trigrams.get(context)
        if not follow:
            return self._bigram(context[1], word)
        total = self._tri_totals[context]
        backoff = DISCOUNT * len(follow) / total
        return max(follow[word] - DISCOUNT, 0) / total + backoff * self._bigram(context[1], word)

    def candidates(self, context: tuple[str, str]) -> list[str]:
        """The words worth sampling after ``context``: those seen after it (its last word,
        at least), else the most common words."""
        seen = set(self.trigrams.get(context, ())) | set(self.bigrams.get(context[1], ()))
        return sorted(seen) if seen else self.common

    def next_token(self, context: tuple[str, str], sampling: Sampling, rng: random.Random) -> str:
        """One token after ``context``: the most likely at temperature 0, else sampled from
        the candidates' probabilities sharpened or flattened by the temperature, within top_p."""
        words = self.candidates(context)
        probs = [self.probability(context, w) for w in words]
        if sampling.temperature <= 0:
            return words[max(range(len(words)), key=probs.__getitem__)]
        # Work in log space so a low temperature cannot underflow every weight to zero.
        logs = [math.log(p) / sampling.temperature for p in probs]
        top = max(logs)
        weights = [math.exp(v - top) for v in logs]
        if sampling.top_p < 1.0:
            words, weights = _nucleus(words, weights, sampling.top_p)
        return rng.choices(words, weights)[0]

    def generate(self, prompt: str, sampling: Sampling, *, reply: bool = False) -> Generation:
        """A completion of ``prompt``; ``reply``: a new paragraph that answers it (as in a chat)
        rather than a continuation, opening with the prompt's rarest word the model knows."""
        tokens = tokenize(prompt)
        rng = random.Random(sampling.seed)
        if not reply:
            # A continuation of a prompt that does not end in a space needs one first.
            leading = bool(prompt) and not prompt[-1].isspace()
            return Generation(self, self.context_of(tokens), sampling, rng, leading_space=leading)
        forms = (self._forms.get(t.lower()) for t in tokens if len(t) > 3 and t.isalpha())
        known = [form for form in forms if form is not None]
        topic = min(known, key=lambda t: (self.unigrams[t], t), default=None)
        forced = [topic] if topic else []
        return Generation(
            self, (BOS, BOS), sampling, rng, leading_space=False, forced=forced, capitalize=True
        )


def _nucleus(words: list[str], weights: list[float], top_p: float) -> tuple[list[str], list[float]]:
    """The most likely words whose probabilities add up to ``top_p`` (at least one)."""
    total = sum(weights)
    ranked = sorted(zip(weights, words, strict=True), reverse=True)
    kept: list[tuple[float, str]] = []
    mass = 0.0
    for weight, word in ranked:
        kept.append((weight, word))
        mass += weight / total
        if mass >= top_p:
            break
    return [w for _, w in kept], [p for p, _ in kept]
