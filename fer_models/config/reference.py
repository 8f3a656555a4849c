"""The settings reference (docs/settings.md), rendered from :class:`RunConfig`: one source for every key.

Each row is one field of ``RunConfig``: its kebab-case key, type, default, allowed values (choices or range)
and the help text the field carries; keys the tuned DP recipe chooses under ``dp=sample`` say so, with the
recipe's value. Regenerate after changing a setting::

    python -m fer_models.config.reference docs/settings.md          # write it
    python -m fer_models.config.reference --check docs/settings.md  # exit 1 when it is stale

No torch here: the config floor stays importable without it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import Field, fields
from pathlib import Path
from typing import Sequence

from fer_models.config.recipe import RECIPE_KEYS, TUNED
from fer_models.config.run_config import RunConfig

logger = logging.getLogger(__name__)

#: The file the reference is written to, relative to the project root.
DEFAULT_PATH = Path("docs/settings.md")
#: The command that regenerates it (named in the page and in --check's message).
REGENERATE = "python -m fer_models.config.reference docs/settings.md"

_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "string"}

_HEADER = f"""# Settings reference

<!-- generated from fer_models/config/run_config.py (RunConfig): do not edit by hand; run
     `{REGENERATE}` (tests/test_docs.py checks that this file is current) -->

Every run setting, in the order `RunConfig` declares them. The same kebab-case keys work everywhere: a YAML
experiment file (`fedfer simulate experiments/fer2013-quick.yaml`), `fedfer simulate --set key=value`,
`fedfer deploy-local --set key=value`, and `flwr run . --run-config "key=value ..."` (the defaults are also in
`[tool.flwr.app.config]` of `pyproject.toml`). `fedfer config` prints the same list in the terminal. How the
three ways override each other, and the main keys: [quickstart](quickstart.md#settings). A site's own
SuperNode keys (`data-path`, `state-dir`, `epsilon-cap`, ...) are node config, not run settings:
[federation](federation.md#sites-own-their-data) and [privacy](privacy.md#a-sites-own-privacy-limits-node-config).

Under `dp = sample` with `dp-recipe = tuned` (the default) the tuned DP recipe chooses the keys marked
"recipe" itself ([privacy](privacy.md#dp-recipe-on-by-default-with-dp--sample)); setting one of them then is
refused unless `dp-recipe = none`.

| key | type | default | allowed | meaning |
| --- | --- | --- | --- | --- |
"""


def render_settings(*, config_cls: type[RunConfig] = RunConfig) -> str:
    """The markdown of docs/settings.md: a header, then one table row per field of ``config_cls``."""
    recipe = TUNED.run_values()
    rows = [_row(spec, recipe_value=recipe.get(_key(spec.name)) if _key(spec.name) in RECIPE_KEYS else None)
            for spec in fields(config_cls)]
    return _HEADER + "\n".join(rows) + "\n"


def _key(name: str) -> str:
    """A field's setting key: the field name in kebab case (as RunConfig.to_flat writes it)."""
    return name.replace("_", "-")


def _row(spec: Field, *, recipe_value: object | None) -> str:
    kind = type(spec.default)
    meaning = spec.metadata["help"]
    if recipe_value is not None:
        meaning += f" (recipe: {_literal(recipe_value)} under the tuned DP recipe)"
    cells = (f"`{_key(spec.name)}`", _TYPE_NAMES[kind], _literal(spec.default), _allowed(spec.metadata), meaning)
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def _allowed(meta: dict) -> str:
    if meta.get("choices"):
        return ", ".join(f"`{c}`" for c in meta["choices"])
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        return f"{_number(lo)} to {_number(hi)}"
    if lo is not None:
        return f">= {_number(lo)}"
    if hi is not None:
        return f"<= {_number(hi)}"
    return ""


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _cell(text: str) -> str:
    """One table cell: pipes escaped; outside `code` spans, ``<`` as an entity (``<name>`` would read as an HTML
    tag) and ``*`` escaped (it would read as emphasis)."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace("*", "\\*") for i, p in enumerate(parts))


def check_settings_file(*, path: Path) -> str | None:
    """None when ``path`` holds exactly the rendered reference; else what is wrong and the command that fixes it."""
    if not path.is_file():
        return f"{path} does not exist: run `{REGENERATE}`"
    if path.read_text(encoding="utf-8") != render_settings():
        return f"{path} is stale (RunConfig changed since it was written): run `{REGENERATE}`"
    return None


def write_settings(*, path: Path) -> bool:
    """Write the rendered reference to ``path``; True when the file changed."""
    text = render_settings()
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist: run this from the project root or give the "
                                f"path of docs/settings.md")
    path.write_text(text, encoding="utf-8")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_models.config.reference",
                                     description="write (or --check) the settings reference rendered from RunConfig")
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH,
                        help=f"the markdown file (default {DEFAULT_PATH})")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is not current; write nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        problem = check_settings_file(path=args.path)
        if problem:
            logger.error(problem)
            return 1
        logger.info("%s is current", args.path)
        return 0
    try:
        changed = write_settings(path=args.path)
    except OSError as exc:
        logger.error("cannot write %s: %s", args.path, exc)
        return 2
    logger.info("%s %s", "wrote" if changed else "unchanged:", args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
