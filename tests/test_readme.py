"""The README stays true: every setting documented, the test command what CI runs, and every
link between the README and docs/ lands on a file and a heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

from facesense.settings import describe

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)  # code blocks: their text is not markdown
LINK = re.compile(r"\]\(([^)\s]+)\)")


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


def anchors(path: Path) -> set[str]:
    """The #anchors GitHub gives a file's headings: lower case, punctuation dropped, '-' for
    spaces, and -1, -2 ... after a repeated one."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", path.read_text()), re.M):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.replace("`", "")).strip()
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def test_every_link_between_the_readme_and_docs_resolves():
    broken = []
    for page in DOCS:
        for link in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"[a-z]+:", link):  # http(s): not this repository's
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.name}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                broken.append(f"{page.name}: {link} (no such heading)")
    assert broken == []


def test_anchors_are_githubs_and_code_blocks_hold_no_headings(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## The control plane's capacity\n\n```\n# not a heading\n```\n")
    assert anchors(page) == {"title", "the-control-planes-capacity"}
