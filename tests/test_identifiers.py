from pathlib import Path

import pytest
from transformers import CLIPTokenizer

from product_studio import identifiers
from product_studio.devkit.tiny_models import write_clip_tokenizer_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    write_clip_tokenizer_files(folder)
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))


def test_real_clip_vocabulary(clip_tokenizer):
    assert len(clip_tokenizer) == 49408
    assert clip_tokenizer("a photo of a teapot").input_ids == [49406, 320, 1125, 539, 320, 40749, 49407]


def test_identifier_is_a_rare_single_token(clip_tokenizer):
    ident = identifiers.choose_identifier(clip_tokenizer, "SKU-123")
    assert 3 <= len(ident) <= 4 and ident.isalpha() and ident.islower()
    assert len(clip_tokenizer(ident, add_special_tokens=False).input_ids) == 1
    assert clip_tokenizer.get_vocab()[ident + "</w>"] > 20000  # from the rare end of the merges
    assert ident not in identifiers.DENY_LIST


def test_identifier_is_stable_and_distinct(clip_tokenizer):
    first = identifiers.choose_identifier(clip_tokenizer, "SKU-1")
    assert identifiers.choose_identifier(clip_tokenizer, "SKU-1") == first
    taken: set[str] = set()
    for n in range(50):
        ident = identifiers.choose_identifier(clip_tokenizer, f"SKU-{n}", taken)
        assert ident not in taken
        taken.add(ident)
    assert identifiers.choose_identifier(clip_tokenizer, "SKU-1", {first}) != first


def test_sks_words_names_and_brands_are_never_chosen(clip_tokenizer):
    pool = identifiers.rare_token_candidates(clip_tokenizer)
    assert len(pool) == identifiers.RARE_POOL
    vocab = clip_tokenizer.get_vocab()
    # All of these are rare single tokens of the right shape, so only the rule keeps them out.
    for word in ["sks", "kilt", "blob", "yawn", "xiao", "kant", "nike", "ikea"]:
        assert word not in pool, word
    assert all(f"{w}</w>" in vocab for w in ["kilt", "blob", "yawn", "xiao"])  # real tokens, kept out
    assert "olis" in pool  # the rarest non-word survives


def test_every_prompt_is_made_from_the_class_noun_in_one_place():
    prompts = identifiers.ProductPrompts("olis", "teapot")
    assert (prompts.phrase, prompts.instance) == ("olis teapot", "a photo of olis teapot")
    assert prompts.class_prompt == "a photo of a teapot"  # DreamBooth's class prompt and the class images'
    assert identifiers.ProductPrompts("olis", "umbrella").class_prompt == "a photo of an umbrella"
    assert prompts.fill("a {product} in the snow") == "a olis teapot in the snow"  # DreamBench's own wording
    assert prompts.plain == "a photo of teapot"  # what the main image's prompt score reads


def test_no_module_but_identifiers_puts_the_class_noun_into_text():
    """Issue 33: the class noun becomes prompts in one place (ProductPrompts), nowhere else."""
    import ast

    found = []
    for path in sorted((ROOT / "product_studio").rglob("*.py")):
        if path.name == "identifiers.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            parts = node.values if isinstance(node, ast.JoinedStr) else []
            for value in (p.value for p in parts if isinstance(p, ast.FormattedValue)):
                if getattr(value, "attr", getattr(value, "id", "")) in {"class_noun", "noun"}:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found
