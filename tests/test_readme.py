"""The README stays true: every setting documented, the test command what CI runs."""

from __future__ import annotations

from pathlib import Path

from facesense.settings import describe

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table():
    for name, default, help_text in describe():
        assert f"| `{name}` | `{default}` | {help_text} |" in README, name


def test_ci_runs_the_readme_test_command():
    assert "make test" in README
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_every_training_param_is_in_the_params_table():
    from facesense.trainparams import describe as params

    for name, default, help_text in params():
        assert f"| `{name}` | `{default}` | {help_text} |" in README, name
