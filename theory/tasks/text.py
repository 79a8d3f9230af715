"""Real text that ships with Python: the documentation topics of the standard library's
``pydoc_data`` (the text behind ``help("FOR")`` etc.; 79 topics, about 465k characters,
64k words).  No download, identical on every machine with the same Python minor version.

* :func:`pydoc_documents` - the topics, or their paragraphs, as plain strings (sorted by
  topic name, so the order does not depend on dict order);
* :func:`words` - lower-case alphabetic word tokens of a string;
* :class:`Vocabulary` / :func:`build_vocabulary` - word or character vocabularies with
  counts, most frequent first, and an ``<unk>`` id for everything else;
* :func:`char_stream` - the whole corpus as one character-id array.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from mechverify.theory.checks import check_int

_WORD = re.compile(r"[a-z]+")
UNK = "<unk>"


def pydoc_documents(split: str = "topic", min_words: int = 1) -> list[str]:
    """The ``pydoc_data`` topics as documents.

    ``split="topic"``: one document per topic (79).  ``split="paragraph"``: one document per
    blank-line-separated paragraph.  Documents with fewer than ``min_words`` words are dropped.
    """
    if split not in ("topic", "paragraph"):
        raise ValueError(f"split must be 'topic' or 'paragraph'; got {split!r}")
    min_words = check_int("min_words", min_words)
    from pydoc_data.topics import topics

    texts = [topics[k] for k in sorted(topics)]
    if split == "paragraph":
        texts = [p for t in texts for p in re.split(r"\n\s*\n", t)]
    return [t for t in texts if len(words(t)) >= min_words]


def words(text: str) -> list[str]:
    """Lower-case alphabetic tokens (digits and punctuation are separators)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Vocabulary:
    """Tokens, most frequent first (ties alphabetical), with their corpus counts.
    Id ``len(tokens)`` is ``<unk>``, for tokens outside the vocabulary."""

    tokens: tuple
    counts: tuple

    def __post_init__(self):
        if len(self.tokens) != len(self.counts):
            raise ValueError(f"tokens and counts must have the same length; got {len(self.tokens)} "
                             f"and {len(self.counts)}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("tokens must be distinct")

    @property
    def size(self) -> int:
        """Number of ids, including ``<unk>``."""
        return len(self.tokens) + 1

    @property
    def unk(self) -> int:
        return len(self.tokens)

    def encode(self, tokens) -> np.ndarray:
        index = {t: i for i, t in enumerate(self.tokens)}
        return np.array([index.get(t, self.unk) for t in tokens], dtype=np.int64)

    def decode(self, ids) -> list[str]:
        return [self.tokens[i] if 0 <= i < len(self.tokens) else UNK for i in np.asarray(ids).tolist()]


def build_vocabulary(token_lists, max_size: int | None = None, min_count: int = 1) -> Vocabulary:
    """The tokens of ``token_lists`` (an iterable of token sequences; a string counts as its
    characters) seen at least ``min_count`` times, the ``max_size`` most frequent kept."""
    min_count = check_int("min_count", min_count)
    if max_size is not None:
        max_size = check_int("max_size", max_size)
    counts = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    ranked = sorted((c for c in counts.items() if c[1] >= min_count), key=lambda tc: (-tc[1], tc[0]))
    if max_size is not None:
        ranked = ranked[:max_size]
    if not ranked:
        raise ValueError("token_lists hold no token seen min_count times")
    return Vocabulary(tuple(t for t, _ in ranked), tuple(c for _, c in ranked))


def char_stream(max_size: int | None = None) -> tuple[np.ndarray, Vocabulary]:
    """All topics joined by blank lines as one character-id array, and its vocabulary."""
    text = "\n\n".join(pydoc_documents("topic"))
    vocab = build_vocabulary([text], max_size=max_size)
    return vocab.encode(text), vocab
