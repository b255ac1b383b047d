"""The scene template library: schema, suitability, the checker command, prompt lengths."""

from pathlib import Path

import pytest

from flows.cli import main
from product_studio.identifiers import ProductPrompts
from product_studio.rendering import scenes

REPO_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def test_template_library_loads_and_fills():
    library = scenes.load_library(REPO_TEMPLATES)
    assert len(library) >= 24
    assert {t.mode for t in library.values()} == {"composite", "generate"}
    prompt, negative = library["snowy-evening"].fill(ProductPrompts("olis", "teapot"))
    assert "olis teapot" in prompt and "{" not in prompt + negative
    for template in library.values():  # every suits entry is a category, "any", or a plain noun
        assert all(s in scenes.CATEGORIES or s == "any" or " " not in s for s in template.suits)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "id: bad\ntitle: t\nprompt: 'a photo of {product} by {owner}'\n",
            r"unknown placeholder\(s\) \['owner'\]",
        ),
        ("id: bad\ntitle: t\nprompt: 'a photo of a teapot'\n", "must contain {product}"),
        ("id: bad\ntitle: t\nprompt: '{product}'\nsteps: 0\n", "field steps"),
        ("id: bad\ntitle: t\nprompt: '{product}'\ncolour: red\n", "field colour: Extra inputs"),
        ("id: other\ntitle: t\nprompt: '{product}'\n", "id 'other' must match the file name 'bad'"),
        ("- just\n- a list\n", "expected a mapping"),
        ("id: bad\ntitle: t\nprompt: '{product}'\nmode: paint\n", "field mode"),
        ("id: bad\ntitle: t\nprompt: '{product}'\nplacement: {scale: 2}\n", "field placement.scale"),
        ("id: bad\ntitle: t\nprompt: '{product}'\nsuits: []\n", "field suits"),
        ("id: bad\ntitle: t\nprompt: 'a photo of {product:d}'\n", "field prompt: .*plain {product}"),
        ("id: bad\ntitle: t\nprompt: '{product}'\nnegative_prompt: '{product!r}'\n", "field negative_prompt"),
        (f"id: bad\ntitle: t\nprompt: '{{product}} {'x' * 200_000}'\n", "200010 characters; at most 1000"),
    ],
)
def test_bad_template_names_file_and_field(tmp_path, body, message):
    (tmp_path / "bad.yaml").write_text(body)
    with pytest.raises(scenes.TemplateError, match=message) as err:
        scenes.load_library(tmp_path)
    assert "bad.yaml" in str(err.value)


def test_the_checker_command_names_every_bad_file_and_field(tmp_path, capsys):
    assert main(["templates", "check", str(REPO_TEMPLATES)]) == 0
    (tmp_path / "good.yaml").write_text("id: good\ntitle: t\nprompt: 'a photo of {product}'\n")
    (tmp_path / "bad.yaml").write_text("id: bad\ntitle: t\nprompt: '{product}'\ncandidates: 99\n")
    (tmp_path / "worse.yaml").write_text("id: worse\ntitle: t\nprompt: 'no product'\n")
    capsys.readouterr()
    assert main(["templates", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert (
        "bad.yaml: field candidates" in out and "worse.yaml: field prompt" in out and "good.yaml" not in out
    )


def test_list_commands_print_one_entry_per_line_id_first(capsys):
    assert main(["templates", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(scenes.load_library(REPO_TEMPLATES))
    assert lines[0].split()[0] in scenes.load_library(REPO_TEMPLATES) and "suits:" in lines[0]
    assert main(["formats", "list"]) == 0
    ids = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert "amazon-main" in ids and "wildberries-vertical" in ids


def test_a_users_library_works_beside_ours(tmp_path):
    (tmp_path / "my-shop.yaml").write_text("id: my-shop\ntitle: Our shop\nprompt: '{product} in our shop'\n")
    (tmp_path / "beach.yaml").write_text("id: beach\ntitle: Our beach\nprompt: '{product} on our beach'\n")
    library = scenes.load_library(REPO_TEMPLATES, tmp_path)
    assert "my-shop" in library and library["beach"].title == "Our beach" and "oak-table" in library


def test_default_scenes_suit_the_product():
    library = scenes.load_library(REPO_TEMPLATES)

    def chosen(noun: str) -> list[str]:
        return [t.id for t in scenes.choose_templates(library, noun, 3)]

    assert chosen("teapot")[0] == "oak-table"  # names teapots itself
    assert all("kitchenware" in library[t].suits or "teapot" in library[t].suits for t in chosen("teapot"))
    assert chosen("backpack")[0] == "mountain-trail"  # a backpack on a trail
    assert all("any" not in library[t].suits for t in chosen("backpack") + chosen("teapot"))
    assert "kids-room" not in chosen("teapot") and "bathroom-shelf" not in chosen("backpack")
    assert len(chosen("gizmo")) == 3 and all("any" in library[t].suits for t in chosen("gizmo"))
    assert chosen("teapot") == chosen("teapot")  # stable from run to run


def test_prompts_must_fit_the_text_encoder(tiny_pipe, tmp_path):
    library = scenes.load_library(REPO_TEMPLATES)
    scenes.check_prompt_lengths(list(library.values()), tiny_pipe.tokenizer)  # ours fit, worst case
    long = scenes.SceneTemplate(id="long", title="t", prompt="{product} " + "on a very nice table " * 20)
    with pytest.raises(scenes.TemplateError, match=r"template 'long': field prompt is \d+ tokens"):
        scenes.check_prompt_lengths([long], tiny_pipe.tokenizer)


def test_prompts_are_spelt_in_one_place():
    prompts = ProductPrompts("olis", "umbrella")
    assert (prompts.phrase, prompts.instance, prompts.class_prompt) == (
        "olis umbrella",
        "a photo of olis umbrella",
        "a photo of an umbrella",
    )
    assert prompts.fill("{product} in the rain, {{no braces}}") == "olis umbrella in the rain, {no braces}"
