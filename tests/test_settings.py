import pytest
from pydantic import ValidationError

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
    assert (settings.resolved_device(), settings.resolved_dtype()) == ("cuda", "float16")
    monkeypatch.setenv("PRODUCT_STUDIO_DEVICE", "cpu")
    assert Settings().resolved_device() == "cpu"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PRODUCT_STUDIO_OUTPUT", "/tmp/out", "expected an s3://bucket"),
        ("PRODUCT_STUDIO_TRAIN__RANK", "0", "train.rank"),
        ("PRODUCT_STUDIO_TRAIN__STEP", "5", "unknown setting PRODUCT_STUDIO_TRAIN__STEP"),
        ("PRODUCT_STUDIO_CLEANR", "grabcut", "unknown setting PRODUCT_STUDIO_CLEANR"),
    ],
)
def test_bad_settings_name_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_cli_reports_bad_settings_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("PRODUCT_STUDIO_DTYPE", "float8")
    assert main(["settings"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("product-studio settings: error:") and "dtype" in err
