import pytest
from pydantic import BaseModel, ValidationError

from flows.cli import main
from product_studio.settings import Settings


def test_defaults_work_and_env_overrides(monkeypatch):
    monkeypatch.setenv("PRODUCT_STUDIO_TRAIN__STEPS", "12")
    monkeypatch.setenv("PRODUCT_STUDIO_OUTPUT", "s3://results/product-studio")
    settings = Settings()
    assert settings.train.steps == 12 and settings.output == "s3://results/product-studio"
    assert settings.cleaner == "rembg:birefnet-general"  # a commercially licensed default
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert (settings.resolved_device(), settings.resolved_dtype()) == ("cpu", "float32")
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda: True)  # Ampere and later
    assert (settings.resolved_device(), settings.resolved_dtype()) == ("cuda", "bfloat16")
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda: False)  # e.g. a T4: klein overflows there
    assert settings.resolved_dtype() == "float16"
    assert settings.base_model == "black-forest-labs/FLUX.2-klein-base-4B"  # Apache-2.0, issue 37
    monkeypatch.setenv("PRODUCT_STUDIO_DEVICE", "cpu")
    assert Settings().resolved_device() == "cpu"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PRODUCT_STUDIO_OUTPUT", "/tmp/out", "expected an s3://bucket"),
        ("PRODUCT_STUDIO_TRAIN__RANK", "0", "train.rank"),
        ("PRODUCT_STUDIO_TRAIN__STEP", "5", "unknown setting PRODUCT_STUDIO_TRAIN__STEP"),
        ("PRODUCT_STUDIO_CLEANR", "grabcut", "unknown setting PRODUCT_STUDIO_CLEANR"),
        # Each of these passed `product-studio settings` before (issue 10, defect 13).
        ("PRODUCT_STUDIO_DEVICE", "banana", "device 'banana' is not one of"),
        ("PRODUCT_STUDIO_CLEANER", "bogus", "cleaner 'bogus' is not one of"),
        (
            "PRODUCT_STUDIO_CLEANER",
            "rembg-onnx:/nonexistent.onnx",
            "the ONNX model /nonexistent.onnx does not exist",
        ),
        ("PRODUCT_STUDIO_WORK_DIR", "", "work_dir is empty"),
        ("PRODUCT_STUDIO_DEFAULT_SCENES", '["nope"]', r"unknown scene template\(s\) \['nope'\]"),
        ("PRODUCT_STUDIO_DEFAULT_SCENES", '["oak-table", "oak-table"]', "listed more than once"),
        ("PRODUCT_STUDIO_DEFAULT_MARKETPLACES", '["nope"]', r"unknown marketplace format\(s\) \['nope'\]"),
        ("PRODUCT_STUDIO_TEMPLATES_DIR", "/nonexistent", "scene template folder /nonexistent does not exist"),
        ("PRODUCT_STUDIO_BASE_MODEL", "/nonexistent", "holds no model_index.json"),
        ("PRODUCT_STUDIO_BASE_MODEL", "not an id!", "neither a Hugging Face id"),
        ("PRODUCT_STUDIO_SCHEDULE_CRON", "not-a-cron", "not a cron expression"),
        ("PRODUCT_STUDIO_RENDER__INPAINT_MODEL", "/nonexistent", "inpaint_model '/nonexistent' is a path"),
        ("PRODUCT_STUDIO_RENDER__UPSCALER", "not an id!", "upscaler 'not an id!' is neither"),
    ],
)
def test_bad_settings_name_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PRODUCT_STUDIO_DTYPE", "float8", "PRODUCT_STUDIO_DTYPE=float8: Input should be 'auto', 'float32'"),
        ("PRODUCT_STUDIO_OUTPUT", "/tmp/out", "PRODUCT_STUDIO_OUTPUT=/tmp/out: expected an s3://bucket"),
        ("PRODUCT_STUDIO_TRAIN__RANK", "0", "PRODUCT_STUDIO_TRAIN__RANK=0: Input should be greater than"),
        (
            "PRODUCT_STUDIO_SCENE_COUNT",
            "many",
            "PRODUCT_STUDIO_SCENE_COUNT=many: Input should be a valid integer",
        ),
        (
            "PRODUCT_STUDIO_DEFAULT_SCENES",
            '["oak-tabel"]',
            """PRODUCT_STUDIO_DEFAULT_SCENES=["oak-tabel"]: unknown scene template(s) ['oak-tabel'] """
            "(did you mean 'oak-table'?); `product-studio templates list` shows all 30",
        ),
        (
            "PRODUCT_STUDIO_DEFAULT_MARKETPLACES",
            '["ebay-sqare"]',
            """PRODUCT_STUDIO_DEFAULT_MARKETPLACES=["ebay-sqare"]: unknown marketplace format(s) """
            "['ebay-sqare'] (did you mean 'ebay-square'",
        ),
        ("PRODUCT_STUDIO_CLEANR", "grabcut", "unknown setting PRODUCT_STUDIO_CLEANR"),
    ],
)
def test_cli_names_a_bad_settings_variable_and_value_in_one_line(monkeypatch, capsys, name, value, expected):
    monkeypatch.setenv(name, value)
    assert main(["settings"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"product-studio settings: bad setting: {expected}"), err
    assert err.count("\n") == 1 and "pydantic" not in err and "validation error" not in err, err


def test_cli_reports_every_bad_setting_one_line_each(monkeypatch, capsys):
    monkeypatch.setenv("PRODUCT_STUDIO_SCENE_COUNT", "0")
    monkeypatch.setenv("PRODUCT_STUDIO_TRAIN__STEPS", "abc")
    assert main(["settings"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2].split("=")[0] for line in lines] == [
        "PRODUCT_STUDIO_SCENE_COUNT",
        "PRODUCT_STUDIO_TRAIN__STEPS",
    ]


def test_min_snr_turns_off_with_zero_from_any_source(monkeypatch):
    monkeypatch.setenv("PRODUCT_STUDIO_TRAIN__SNR_GAMMA", "0")
    assert Settings().train.snr_gamma is None


def _float_variables(model: type[BaseModel] = Settings, prefix: str = "PRODUCT_STUDIO_") -> list[str]:
    """Every float setting's variable, nested groups included."""
    found = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += _float_variables(annotation, f"{prefix}{name.upper()}__")
        elif float in (annotation, *getattr(annotation, "__args__", ())):
            found.append(prefix + name.upper())
    return found


def _bad_settings(tmp_path) -> list[tuple[str, str, str]]:
    no_certificate = tmp_path / "anchors.pem"
    no_certificate.write_text("not a certificate\n")
    a_file = tmp_path / "scratch"
    a_file.write_text("")
    cases = [
        ("C2PA__TRUST_ANCHORS", str(no_certificate), "holds no PEM certificate"),
        ("C2PA__TSA_URL", "not a url", "not an http(s) URL"),
        ("SCHEDULE_CRON", "0 0 * * 5L", "not a cron expression Prefect's schedules accept"),
        ("SCHEDULE_CRON", "0 0 LW * *", "not a cron expression Prefect's schedules accept"),
        ("LEASE_SECONDS", "1000000000000", "less than or equal to 604800"),
        ("WORK_DIR", str(a_file), "work_dir is a file, not a folder"),
        ("DEFAULT_SCENES", "oak-table, studio-white", """e.g. '["oak-table", "studio-white"]'"""),
        ("TRAIN__VALIDATION_PROMPTS", "a photo of {product}", """e.g. '["a photo of {product}"]'"""),
    ]  # fmt: skip
    for variable in _float_variables():
        for value in ("inf", "Infinity", "-inf", "1e400", "nan"):
            cases.append((variable.removeprefix("PRODUCT_STUDIO_"), value, "not a finite number"))
    return cases


def test_settings_that_would_fail_every_sku_later_are_refused_at_start_up_in_one_line(
    monkeypatch, capsys, tmp_path
):
    """Issue 34 #6: each is refused by `product-studio settings` (as by every command at start-up) in one
    line naming the variable, the value and what is expected; every float setting refuses non-finite ones."""
    cases = _bad_settings(tmp_path)
    assert {"PRODUCT_STUDIO_RENDER__GUIDANCE_SCALE", "PRODUCT_STUDIO_TRAIN__PRIOR_LOSS_WEIGHT"} <= {
        "PRODUCT_STUDIO_" + c[0] for c in cases
    }
    for name, value, expected in cases:
        with monkeypatch.context() as env:
            env.setenv(f"PRODUCT_STUDIO_{name}", value)
            assert main(["settings"]) == 2, (name, value)
            err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith(f"product-studio settings: bad setting: PRODUCT_STUDIO_{name}="), err
        assert expected in err, (name, value, err)
    for good in ("0 0 L * *", "*/15 * * * *", "0 9 * * MON-FRI"):  # what Prefect's schedules take
        monkeypatch.setenv("PRODUCT_STUDIO_SCHEDULE_CRON", good)
        assert Settings().schedule_cron == good
    monkeypatch.setenv("PRODUCT_STUDIO_DEFAULT_SCENES", '["oak-table", "studio-white"]')
    assert Settings().default_scenes == ["oak-table", "studio-white"]
