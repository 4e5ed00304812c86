"""The example service's language model on its own: examples/services/tinylm/tinylm.py."""

from __future__ import annotations

import math
from typing import Any

import pytest
from tinylm import EOS, NgramModel, Sampling, joined, paragraphs, tokenize

from tinylmproc import TINYLM


@pytest.fixture(scope="module")
def model() -> NgramModel:
    return NgramModel((TINYLM / "corpus.txt").read_text())


def run(model: NgramModel, prompt: str, reply: bool = False, **sampling: Any) -> tuple[str, str]:
    generation = model.generate(prompt, Sampling(**sampling), reply=reply)
    text = "".join(generation)
    assert text == generation.text
    return text, generation.finish_reason


def test_tokens_and_paragraphs() -> None:
    assert tokenize("A card-hour, the user's (own) task.") == [
        "A", "card-hour", ",", "the", "user's", "(", "own", ")", "task", ".",
    ]  # fmt: skip
    corpus = "# a note, not learned\nOne line.\nStill one.\n\n\nTwo."
    assert paragraphs(corpus) == [["One", "line", ".", "Still", "one", "."], ["Two", "."]]
    assert joined(None, "The") == "The" and joined("the", "task") == " task"
    assert joined("task", ".") == "." and joined("(", "own") == "own"


@pytest.mark.parametrize(
    "context",
    [
        ("<s>", "<s>"),  # the start of a paragraph
        ("a", "task"),  # a trigram seen in the text
        ("zebra", "task"),  # an unseen pair: the bigram of its last word
        ("zebra", "quokka"),  # nothing seen: the smoothed unigram
    ],
)
def test_probabilities_over_the_vocabulary_add_up_to_one(
    model: NgramModel, context: tuple[str, str]
) -> None:
    # The discounted mass of a context is exactly what its lower order gets: a real smoothed
    # distribution, not a bag of counts.
    total = math.fsum(model.probability(context, w) for w in model.unigrams)
    assert total == pytest.approx(1.0, abs=1e-9)
    assert all(model.probability(context, w) > 0 for w in ("task", "river", EOS))


def test_it_learned_its_text(model: NgramModel) -> None:
    assert model.vocabulary_size > 500 and model.total > 2000
    # "A gateway is the program ..." is in the text: the most likely next word.
    best = max(model.unigrams, key=lambda w: model.probability(("gateway", "is"), w))
    assert best == "the"
    assert model.probability(("gateway", "is"), "the") > model.probability(("zebra", "is"), "the")
    assert run(model, "A gateway is", max_tokens=1, temperature=0)[0] == " the"


def test_a_seed_repeats_a_completion_and_different_seeds_differ(model: NgramModel) -> None:
    first = run(model, "The river", max_tokens=40, seed=7)
    assert run(model, "The river", max_tokens=40, seed=7) == first
    others = {run(model, "The river", max_tokens=40, seed=s)[0] for s in range(8, 14)}
    assert len(others | {first[0]}) > 3


def test_max_tokens_and_the_end_of_a_paragraph(model: NgramModel) -> None:
    generation = model.generate("The", Sampling(max_tokens=5, seed=1))
    text = "".join(generation)
    assert generation.tokens == 5 and generation.finish_reason == "length"
    assert len(tokenize(text)) == 5
    # Long enough, every sampled paragraph ends: finish_reason "stop" at the end-of-text mark.
    ends = [run(model, "The", max_tokens=4096, seed=s)[1] for s in range(5)]
    assert ends == ["stop"] * 5


def test_stop_sequences_cut_the_text_and_are_never_given_out(model: NgramModel) -> None:
    full, _ = run(model, "The weather", max_tokens=60, temperature=0)
    stop = full[30:35]  # five characters in the middle of a word or across two
    sampling = Sampling(max_tokens=60, temperature=0, stop=["never written", stop])
    generation = model.generate("The weather", sampling)
    pieces = list(generation)
    # What was given out piece by piece is exactly the text before the stop sequence: no
    # piece showed the start of it while it was still being written.
    assert "".join(pieces) == full[: full.index(stop)]
    assert generation.finish_reason == "stop" and len([p for p in pieces if p]) > 1


def test_temperature_zero_is_greedy_and_low_temperature_is_near_greedy(model: NgramModel) -> None:
    greedy, _ = run(model, "A task", max_tokens=12, temperature=0, seed=1)
    assert run(model, "A task", max_tokens=12, temperature=0, seed=99)[0] == greedy
    assert run(model, "A task", max_tokens=12, temperature=0.01, seed=5)[0] == greedy
    hot = {run(model, "A task", max_tokens=12, temperature=2.0, seed=s)[0] for s in range(5)}
    assert greedy not in hot


def test_top_p_keeps_only_the_likeliest_words(model: NgramModel) -> None:
    # A tiny nucleus holds only the most likely word: top_p near 0 is greedy.
    greedy, _ = run(model, "The scheduler", max_tokens=10, temperature=0)
    assert run(model, "The scheduler", max_tokens=10, top_p=1e-6, seed=3)[0] == greedy


def test_a_reply_opens_with_the_prompts_rarest_known_word(model: NgramModel) -> None:
    text, _ = run(model, "Tell me about the autoscaler, please", reply=True, max_tokens=8, seed=0)
    assert text.startswith("Autoscaler ")
    text, _ = run(model, "??", reply=True, max_tokens=8, seed=0)
    assert text and text[0].isupper()


def test_an_empty_corpus_is_refused() -> None:
    with pytest.raises(ValueError, match="no words"):
        NgramModel("# only a note\n\n")
