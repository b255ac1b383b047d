"""Identify: a rare single-token identifier from the base model's own tokenizer vocabulary.

Rule: among the vocabulary's whole-word tokens (``...</w>`` in CLIP BPE; ``Ġ...``, the word with the space
before it, in byte-level BPE such as FLUX.2 [klein]'s Qwen tokenizer), keep those that are 3-4 ASCII
lowercase letters, re-encode to exactly one token on their own (after a space, for byte-level BPE, as the
prompts place them), are not words, names or brands (their
frequency in English text, from ``wordfreq``, is at most ``MAX_ZIPF``: under ~1 in 10 million words) and
are not on the deny-list of tokens with strong priors (``sks`` is a rifle). BPE merges are learnt
most-frequent first, so the highest ids are the rarest: the candidates are the ``RARE_POOL`` highest-id
survivors. An SKU's identifier is picked by a
hash of the SKU id (stable across runs) and walks on past identifiers already taken in the catalogue.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

RARE_POOL = 1000
# Zipf frequency = log10(occurrences per billion words). "kilt" is 2.7, "blob" 3.1, "nike" 4.3; non-words
# such as "olis" or "waj" are below 2.
MAX_ZIPF = 2.0
# Tokens known to carry strong priors in SD-family models, or used so widely in DreamBooth tutorials that
# shared LoRAs collide on them.
DENY_LIST = frozenset(
    {"sks", "ohwx", "zwx", "xyz", "abc", "cat", "dog", "gun", "nsfw", "nude", "sexy", "porn"}
)


class IdentifierError(ValueError):
    """No identifier could be chosen."""


# How a BPE vocabulary marks a whole word: CLIP's ends it with ``</w>``; byte-level BPE (GPT-2, Qwen2 -- the
# FLUX.2 [klein] tokenizer) starts it with ``Ġ``, the encoded space before it.
WORD_END = "</w>"
SPACE = "\u0120"


def _byte_level(vocab: dict[str, int]) -> bool:
    return not any(t.endswith(WORD_END) for t in vocab)


def _word_tokens(tokenizer: Any) -> list[tuple[int, str]]:
    """(id, word) of every whole-word token, highest id (rarest) first."""
    vocab: dict[str, int] = tokenizer.get_vocab()
    if _byte_level(vocab):
        words = ((i, t[1:]) for t, i in vocab.items() if t.startswith(SPACE))
    else:
        words = ((i, t[: -len(WORD_END)]) for t, i in vocab.items() if t.endswith(WORD_END))
    return sorted(words, reverse=True)


@lru_cache(maxsize=4)
def _candidates_for(tokenizer_key: tuple[str, int], tokenizer: Any) -> tuple[str, ...]:
    from wordfreq import zipf_frequency

    found: list[str] = []
    # Byte-level BPE encodes a word after a space (as prompts place the identifier) differently from one
    # at the start of a text: check the form the prompts use.
    lead = " " if _byte_level(tokenizer.get_vocab()) else ""
    for _, word in _word_tokens(tokenizer):
        if not _shaped(word) or word in DENY_LIST or zipf_frequency(word, "en") > MAX_ZIPF:
            continue
        if not _one_token(tokenizer, word, lead):
            continue
        found.append(word)
        if len(found) >= RARE_POOL:
            break
    return tuple(found)


def _shaped(word: str) -> bool:
    return 3 <= len(word) <= 4 and word.isascii() and word.isalpha() and word.islower()


def _one_token(tokenizer: Any, word: str, lead: str) -> bool:
    return len(tokenizer(lead + word, add_special_tokens=False).input_ids) == 1


def check_identifier(word: str, class_noun: str, tokenizer: Any | None = None) -> str:
    """An identifier given by hand, held to the rule the automatic choice follows (the module's), for every
    family: 3-4 lowercase letters, no word of the class noun, not on the deny-list, not a word, name or brand;
    with ``tokenizer``, one token of it. A ValueError says which part fails and the way out."""
    from wordfreq import zipf_frequency

    fix = "; give a rare non-word such as 'olis', or leave --identifier out to have one chosen"
    if not _shaped(word):
        raise ValueError(f"identifier {word!r} is not one word of 3-4 lowercase letters{fix}")
    if word in class_noun.split():
        raise ValueError(
            f"identifier {word!r} is the class noun {class_noun!r}: the prompt would say it twice{fix}"
        )
    if word in DENY_LIST:
        raise ValueError(f"identifier {word!r} carries a strong prior in these models (deny-list){fix}")
    if zipf_frequency(word, "en") > MAX_ZIPF:
        raise ValueError(
            f"identifier {word!r} is an English word, name or brand (its prior would leak in){fix}"
        )
    lead = " " if tokenizer is not None and _byte_level(tokenizer.get_vocab()) else ""
    if tokenizer is not None and not _one_token(tokenizer, word, lead):
        raise ValueError(f"identifier {word!r} is not a single token of this model's tokenizer{fix}")
    return word


def rare_token_candidates(tokenizer: Any) -> tuple[str, ...]:
    """The pool of acceptable identifiers, rarest first."""
    key = (getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__, len(tokenizer))
    return _candidates_for(key, tokenizer)


def choose_identifier(tokenizer: Any, sku: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """A rare identifier for ``sku``: deterministic from the SKU id, distinct from ``taken``."""
    pool = rare_token_candidates(tokenizer)
    if not pool:
        raise IdentifierError(
            f"the tokenizer ({type(tokenizer).__name__}, {len(tokenizer)} tokens) has no single-token 3-4 "
            "letter non-words to use as identifiers; pass an identifier explicitly"
        )
    start = int.from_bytes(hashlib.sha256(sku.encode()).digest()[:8], "big") % len(pool)
    for offset in range(len(pool)):
        word = pool[(start + offset) % len(pool)]
        if word not in taken:
            return word
    raise IdentifierError(f"all {len(pool)} identifiers are taken; split the catalogue")


def assign_identifiers(skus: list[str], published: dict[str, str], tokenizer: Any | None) -> dict[str, str]:
    """Every SKU's identifier, distinct within the catalogue and decided before any SKU starts.

    An SKU keeps the identifier of its published run (its LoRA stays valid and its content key unchanged)
    unless another SKU kept it first; the others get :func:`choose_identifier`'s, in SKU order. The tokenizer
    is needed only when some SKU has none yet.
    """
    chosen: dict[str, str] = {}
    for sku in sorted(skus):
        kept = published.get(sku)
        if kept and kept not in chosen.values():
            chosen[sku] = kept
    for sku in sorted(set(skus) - set(chosen)):
        if tokenizer is None:
            raise IdentifierError(f"SKU {sku} needs a new identifier, and no tokenizer was given")
        chosen[sku] = choose_identifier(tokenizer, sku, set(chosen.values()))
    return {sku: chosen[sku] for sku in skus}


_NOUN = re.compile(r"^[a-z][a-z -]{0,38}[a-z]$")


def validate_class_noun(noun: str) -> str:
    """The class noun, lower-cased; a ValueError says what a valid one looks like."""
    v = " ".join(noun.strip().lower().split())
    if not _NOUN.match(v):
        raise ValueError(f"class_noun must be 2-40 letters, spaces or hyphens (e.g. 'teapot'), got {noun!r}")
    return v


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


@dataclass(frozen=True)
class ProductPrompts:
    """The one place that makes prompts from a product's class noun: training, class images, scoring, eval.

    ``phrase`` ("olis teapot") is what scene templates, validation and eval prompts put for ``{product}``
    (:meth:`fill`); ``instance`` ("a photo of olis teapot") and ``class_prompt`` ("a photo of a teapot", also
    the class images' prompt) are DreamBooth's two prompts; :meth:`unnamed` is a prompt as the scorer reads
    it, without the identifier ("a photo of teapot"), and ``plain`` the instance prompt read so.
    """

    identifier: str
    class_noun: str

    @property
    def phrase(self) -> str:
        return f"{self.identifier} {self.class_noun}"

    @property
    def instance(self) -> str:
        return f"a photo of {self.phrase}"

    @property
    def class_prompt(self) -> str:
        return f"a photo of {_article(self.class_noun)} {self.class_noun}"

    @property
    def plain(self) -> str:
        return self.unnamed(self.instance)

    def fill(self, template: str) -> str:
        """``template`` with ``{product}`` replaced by the phrase (see :func:`check_product_template`)."""
        return template.format(product=self.phrase)

    def unnamed(self, prompt: str) -> str:
        """``prompt`` without the identifier ("a photo of olis teapot" -> "a photo of teapot"): what a
        prompt score compares an image with (the encoder never learnt the identifier)."""
        return " ".join(word for word in prompt.split() if word.strip(",.") != self.identifier)


MAX_PROMPT_CHARS = 1000  # text encoders read 77 tokens (CLIP) to a few hundred; longer is a mistake


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")


def check_product_template(text: str, *, required: bool = True) -> str:
    """A prompt of at most ``MAX_PROMPT_CHARS`` whose only placeholder is a plain ``{product}`` (and has it,
    when ``required``); else ValueError."""
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt {_shown(text)} is {len(text)} characters; at most {MAX_PROMPT_CHARS}")
    try:
        parsed = [
            (name, spec, conv) for _, name, spec, conv in string.Formatter().parse(text) if name is not None
        ]
    except ValueError as exc:
        raise ValueError(f"bad braces in {_shown(text)}: {exc}") from exc
    fields = [name for name, _, _ in parsed]
    unknown = sorted(set(fields) - {"product"})
    if unknown:
        raise ValueError(f"unknown placeholder(s) {unknown} in {_shown(text)}; only {{product}} is allowed")
    if any(spec or conv for _, spec, conv in parsed):
        raise ValueError(f"write the placeholder as plain {{product}} in {_shown(text)} (no ':' or '!' part)")
    if required and "product" not in fields:
        raise ValueError(f"prompt {_shown(text)} must contain {{product}}")
    return text
