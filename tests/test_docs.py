"""The README and docs/ hold: the generated settings reference is current, every relative link and anchor
resolves, the README is a page (<= 12 KB) whose two commands are unchanged, and every setting the docs name
is a RunConfig key. No engine is started: the files are read and parsed."""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
import unicodedata
from dataclasses import fields
from pathlib import Path

import pytest

from client.ledger import STATE_DIR_KEY
from fer_models.config import RunConfig
from fer_models.config.reference import REGENERATE, check_settings_file, render_settings
from fer_models.federation.sites import NODE_KEYS, NODE_PRIVACY_KEYS
from fer_models.federation.wire import NODE_PARTITION_ID, NUM_PARTITIONS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, ROOT / "ARCHITECTURE.md", *DOCS]
README_MAX_BYTES = 12 * 1024

#: The README's two commands as they stood when the README became a page; .ci/run reads the second one.
MAIN_COMMAND = ('<!-- main-command -->\n```\npython3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && '
                '.venv/bin/fedfer simulate\n```\n')
TEST_COMMAND = ('<!-- test-command -->\n```\npython3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && '
                '.venv/bin/python -m pytest -q\n```\n')

RUN_KEYS = frozenset(f.name.replace("_", "-") for f in fields(RunConfig))
#: key=value pairs the docs may name that are not run settings: a SuperNode's node config, flwr's federation
#: config (num-supernodes of `flwr run --federation-config`), and the placeholders of `--set key=value`.
OTHER_KEYS = frozenset({*NODE_KEYS, *NODE_PRIVACY_KEYS, STATE_DIR_KEY, NODE_PARTITION_ID, NUM_PARTITIONS,
                        "num-supernodes", "key", "k"})

_FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_SET = re.compile(r"--(?:fed-)?set[ =]([a-z][a-z0-9-]*)=")
_RUN_CONFIG = re.compile(r"--run-config\s+\"([^\"]*)\"")
_KV = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)* ?= ?[^\s=`]+"
_KV_SPAN = re.compile(rf"`(\s*{_KV}(?:\s+{_KV})*\s*)`")
_KEY = re.compile(r"(?:^|\s)([a-z][a-z0-9-]*) ?=")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _prose(text: str) -> str:
    """The text without fenced code blocks (links and headings live outside them)."""
    return _FENCE.sub("", text)


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not - or _), each space a hyphen."""
    text = unicodedata.normalize("NFKC", heading).strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "-_ ")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(_text(path)).splitlines():
        match = re.match(r"#{1,6} +(.+?) *#*$", line)
        if not match:
            continue
        slug = github_anchor(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def broken_links(path: Path) -> list[str]:
    """Relative links of ``path`` whose file does not exist, or whose #anchor is no heading of that file."""
    broken = []
    for target in _LINK.findall(_prose(_text(path))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    return broken


def named_settings(text: str) -> set[str]:
    """Setting keys a page names: `--set key=` / `--fed-set key=`, the keys of `--run-config "k=v ..."`, and
    code spans that are nothing but key=value pairs (`dp=sample`, `pretrain-epochs = 8`)."""
    keys = set(_SET.findall(text))
    for spec in _RUN_CONFIG.findall(text):
        keys.update(_KEY.findall(spec))
    for span in _KV_SPAN.findall(_prose(text)):
        keys.update(_KEY.findall(span))
    return keys


# --- the settings reference ---------------------------------------------------------------------------------

def test_settings_reference_is_the_rendering_of_run_config():
    path = ROOT / "docs" / "settings.md"
    assert check_settings_file(path=path) is None, check_settings_file(path=path)
    assert _text(path) == render_settings()


def test_settings_reference_has_one_row_per_setting_with_its_default():
    rows = {line.split("|")[1].strip().strip("`"): line for line in render_settings().splitlines()
            if line.startswith("| `")}
    assert set(rows) == RUN_KEYS
    assert '`"cnn_rnn"`' in rows["model"] and "`gru`, `lstm`" in rows["rnn"]
    assert ">= 1" in rows["num-clients"] and "`4`" in rows["num-clients"]
    assert "recipe: `4.0`" in rows["learning-rate"]  # the tuned DP recipe's value (fer_models/config/recipe.py)


def test_a_stale_settings_file_is_named_with_the_command_that_fixes_it(tmp_path):
    stale = tmp_path / "settings.md"
    stale.write_text(render_settings().replace("| `seed` |", "| `seeds` |"), encoding="utf-8")
    message = check_settings_file(path=stale)
    assert message is not None and REGENERATE in message and "stale" in message
    missing = check_settings_file(path=tmp_path / "none.md")
    assert missing is not None and REGENERATE in missing


def test_reference_check_command_exits_1_on_a_stale_file(tmp_path):
    from fer_models.config.reference import main

    target = tmp_path / "settings.md"
    assert main([str(target)]) == 0 and _text(target) == render_settings()
    assert main(["--check", str(target)]) == 0
    target.write_text("old\n", encoding="utf-8")
    assert main(["--check", str(target)]) == 1
    assert _text(target) == "old\n"  # --check writes nothing


# --- links and anchors --------------------------------------------------------------------------------------

def test_docs_folder_holds_the_pages_the_readme_promises():
    names = {p.name for p in DOCS}
    assert {"quickstart.md", "federation.md", "privacy.md", "export-and-video.md", "benchmarks.md",
            "settings.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_link_checker_catches_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# A title: with `code`\n\n## Same\n\n## Same\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-title-with-code) [dup](other.md#same-1) [web](https://flower.ai)\n"
                    "[gone](missing.md) [bad](other.md#nope)\n```\n[in code](ignored.md)\n```\n", encoding="utf-8")
    assert [b.split(" ")[0] for b in broken_links(page)] == ["missing.md", "other.md#nope"]


def test_github_anchor_matches_githubs_slugs():
    assert github_anchor("DP recipe (on by default with `dp = sample`)") == "dp-recipe-on-by-default-with-dp--sample"
    assert github_anchor("Privacy audit (`fedfer audit RUN_DIR`)") == "privacy-audit-fedfer-audit-run_dir"
    assert github_anchor("A site's own privacy limits (node config)") == "a-sites-own-privacy-limits-node-config"


# --- the README ---------------------------------------------------------------------------------------------

def test_readme_is_a_page():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (at most {README_MAX_BYTES}): move text to docs/"


def test_readme_commands_are_unchanged_and_first():
    text = _text(README)
    assert MAIN_COMMAND in text and TEST_COMMAND in text
    assert text.index(MAIN_COMMAND) < text.index(TEST_COMMAND) < text.index("\n## ")


@pytest.mark.skipif(shutil.which("awk") is None, reason="awk not installed")
def test_ci_reads_the_readme_test_command():
    ci = _text(ROOT / ".ci" / "run")
    program = re.search(r"awk '([^']*)' README\.md", ci)
    assert program, ".ci/run no longer reads README.md with awk: update this test"
    done = subprocess.run(["awk", program.group(1), str(README)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == TEST_COMMAND.split("```\n")[1].strip()


# --- settings named in the docs -----------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_setting_the_docs_name_exists(page):
    unknown = named_settings(_text(page)) - RUN_KEYS - OTHER_KEYS
    assert not unknown, f"{page.name} names settings RunConfig does not have: {sorted(unknown)}"


def test_setting_finder_reads_set_flags_run_configs_and_code_spans():
    text = ('fedfer simulate --set num-clients=3 --fed-set local-steps=15\n'
            'flwr run . --run-config "num-server-rounds=2 out-dir=\'/tmp/x\'"\n'
            'prose `pretrain-epochs = 8`, `augment=standard lr-schedule=cosine`, `x = (pixel / 255)`, '
            '`FEDFER_EPSILON_CAP=8` and `--set no-such-key=1`\n')
    assert named_settings(text) == {"num-clients", "local-steps", "num-server-rounds", "out-dir", "pretrain-epochs",
                                    "augment", "lr-schedule", "no-such-key"}
    assert named_settings(text) - RUN_KEYS == {"no-such-key"}


# --- commands copied from the docs ----------------------------------------------------------------------------

def code_commands(text: str, program: str) -> list[str]:
    """Command lines of fenced code blocks that run ``program`` (``.venv/bin/`` optional): continuation lines
    joined, comments dropped, ``&&`` / ``;`` chains split; an abridged line (`` ... ``) is left out."""
    found = []
    for block in _FENCE.findall(text):
        joined = re.sub(r"\s*\\\n\s*", " ", block)
        for line in joined.splitlines()[1:]:
            for piece in re.split(r"&&|;", line.split("  #")[0]):
                piece = piece.strip()
                if re.match(rf"(\.venv/bin/)?{re.escape(program)}\s", piece + " ") and " ... " not in piece:
                    found.append(piece)
    return found


def test_every_fedfer_command_in_the_docs_parses():
    from simulation.commands.cli import build_parser

    lines = [(page.name, cmd) for page in PAGES for cmd in code_commands(_text(page), "fedfer")]
    assert len(lines) > 20
    _all_parse(lines, build_parser, program="fedfer")


def _all_parse(lines: list[tuple[str, str]], build, *, program: str) -> None:
    """Fail naming the page and the line of the first command line ``build()``'s parser refuses."""
    for name, cmd in lines:
        argv = shlex.split(cmd.split(">")[0])[1:]
        try:
            build().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}: `{cmd}` is not a valid {program} command line (see `{program} --help`)")


#: Flower's own argument parsers of its two processes (private functions of Flower 1.42: skipped if renamed).
FLOWER_PARSERS = {"flower-superlink": ("flwr.superlink.cli.flower_superlink", "_parse_args_run_superlink"),
                  "flower-supernode": ("flwr.supernode.cli.flower_supernode", "_parse_args_run_supernode")}


@pytest.mark.parametrize("program", sorted(FLOWER_PARSERS))
def test_every_flower_command_in_the_docs_parses(program):
    module_name, function = FLOWER_PARSERS[program]
    build = getattr(importlib.import_module(module_name), function, None)
    if build is None:
        pytest.skip(f"{module_name}.{function} is gone (another Flower version): check `{program} --help` by hand")
    lines = [(page.name, cmd) for page in PAGES for cmd in code_commands(_text(page), program)]
    assert lines, f"no {program} command in the docs"
    _all_parse(lines, build, program=program)


def test_command_finder_and_parser_reject_a_flag_fedfer_does_not_have():
    from simulation.commands.cli import build_parser

    block = "```\n.venv/bin/fedfer simulate --set dp=sample \\\n    --no-such-flag 1  # comment\nfedfer report R\n```\n"
    cmds = code_commands(block, "fedfer")
    assert cmds == [".venv/bin/fedfer simulate --set dp=sample --no-such-flag 1", "fedfer report R"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(shlex.split(cmds[0])[1:])
    build_parser().parse_args(shlex.split(cmds[1])[1:])
