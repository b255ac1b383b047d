"""`product-studio eval`: the DreamBench protocol end to end on the tiny models (the numbers mean nothing;
the protocol runs), its report, resuming, subsets and the real-images row."""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageDraw

from flows.cli import main
from product_studio import evaluation


def _subject(root, name, colour, classes=None):
    folder = root / name
    folder.mkdir(parents=True)
    for i in range(3):
        im = Image.new("RGB", (96, 96), (235, 230, 220))
        ImageDraw.Draw(im).ellipse((20 + 3 * i, 18, 76, 80 - 2 * i), fill=colour)
        im.save(folder / f"{i:02d}.jpg")
    if classes is None:
        (folder / "subject.json").write_text(json.dumps({"class_noun": "teapot"}))


@pytest.fixture
def subjects(tmp_path):
    root = tmp_path / "subjects"
    _subject(root, "teal_pot", (22, 128, 122))
    _subject(root, "red_pot", (200, 30, 30))
    _subject(root, "vase", (214, 150, 40), classes=True)
    (root / "prompts_and_classes.txt").write_text("Classes\n\nsubject_name,class\nvase,vase\n\nPrompts\n")
    return root


@pytest.mark.slow
def test_eval_trains_renders_scores_and_reports(subjects, tmp_path, tiny_model, tiny_encoders, capsys):
    out = tmp_path / "eval"
    args = ["eval", str(subjects), "--out", str(out), "--base-model", str(tiny_model), "--steps", "2",
            "--images-per-prompt", "2", "--prompts-per-subject", "2", "--render-steps", "2", "--quiet",
            "--dino-model", str(tiny_encoders[0]), "--clip-model", str(tiny_encoders[1]), "--real",
            "--subjects", "teal_pot,red_pot"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["subjects"]) == {"teal_pot", "red_pot"}
    for scores in report["subjects"].values():
        assert scores["images"] == 4 and all(-1 <= scores[m] <= 1 for m in ("dino", "clip_i", "clip_t"))
    # The mean over subjects is the mean of the subject means.
    for metric in ("dino", "clip_i", "clip_t"):
        means = [s[metric] for s in report["subjects"].values()]
        assert report["mean"][metric] == pytest.approx(sum(means) / 2, abs=1e-4)
    assert report["protocol"]["prompts"] == evaluation.OBJECT_PROMPTS[:2]
    assert report["real"]["mean"]["clip_t"] is None and report["real"]["subjects"]["red_pot"]["dino"] > 0
    markdown = (out / "report.md").read_text()
    assert "| **mean of subjects** |" in markdown and "0.668" in markdown  # beside the paper's rows
    # Resumable: a second run reuses the finished subjects instead of training again.
    stamp = (out / "subjects" / "teal_pot" / "result.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "subjects" / "teal_pot" / "result.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "report.json").read_text())["mean"] == report["mean"]


def test_subjects_take_their_class_from_subject_json_or_the_classes_file(subjects):
    found = {s.name: s.class_noun for s in evaluation.find_subjects(subjects)}
    assert found == {"red_pot": "teapot", "teal_pot": "teapot", "vase": "vase"}
    with pytest.raises(evaluation.EvalError, match=r"subject\(s\) \['moon'\] are not folders"):
        evaluation.find_subjects(subjects, only=["moon"])
    (subjects / "vase" / "00.jpg").unlink()
    (subjects / "vase" / "01.jpg").unlink()
    with pytest.raises(evaluation.EvalError, match="subject 'vase': 1 photos; the protocol uses 3-6"):
        evaluation.find_subjects(subjects)


def test_dreambench_files_are_read(tmp_path):
    text = (
        "Classes\n\nsubject_name,class\nbackpack,backpack\nbear_plushie,stuffed animal\n\nPrompts\n\n"
        "prompt_list = [\n'a {0} {1} in the jungle'.format(unique_token, class_token),\n"
        "'a red {0} {1}'.format(unique_token, class_token),\n]\n"
    )
    path = tmp_path / "prompts_and_classes.txt"
    path.write_text(text)
    assert evaluation.read_classes(path) == {"backpack": "backpack", "bear_plushie": "stuffed animal"}
    assert evaluation.read_prompts(path) == ["a {product} in the jungle", "a red {product}"]
    assert len(evaluation.OBJECT_PROMPTS) == 25
