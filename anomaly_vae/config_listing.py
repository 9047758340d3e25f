"""The resolved configuration as commented YAML (`anomaly-vae config`).

Each key is printed with its value and the comment that documents it in
``anomaly_vae/config.py``, so the listing is both a reference of every setting and a
starting file for ``--config``: what it prints loads back to the same configuration.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import textwrap
import tokenize
from typing import Any

import yaml

from anomaly_vae.config import DetectorConfig, to_dict

COMMENT_WIDTH = 88  # characters per line of a wrapped comment, indent included


def field_comments(section_class: type) -> dict[str, str]:
    """``{field name: comment}`` read from the class's source in config.py.

    A field's comment is the ``#`` text on its line and on the comment-only lines that
    follow it, joined into one paragraph. Empty when the source is not available
    (e.g. a frozen application), so the listing then has values only.
    """
    try:
        source = textwrap.dedent(inspect.getsource(section_class))
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(section_class)}
    comments: dict[str, list[str]] = {}
    current: str | None = None
    line_start = True  # the next token begins a logical line
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME and line_start and token.start[1] == 4:
            current = token.string if token.string in names else None
        elif token.type == tokenize.COMMENT and current is not None:
            comments.setdefault(current, []).append(token.string.lstrip("#").strip())
        line_start = token.type in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT)
        if token.type == tokenize.DEDENT:
            current = None
    return {name: " ".join(parts) for name, parts in comments.items()}


def _yaml_entry(key: str, value: Any) -> str:
    """``key: value`` on one line (lists in flow style), as ``yaml.safe_load`` reads it."""
    flow = None if isinstance(value, list | dict) else False  # None: flow for the inner list
    return yaml.safe_dump({key: value}, default_flow_style=flow, width=10_000).strip()


def config_yaml(config: DetectorConfig) -> str:
    """Every section and key of ``config`` with its value and documented reason."""
    lines: list[str] = []
    values = to_dict(config)
    for section in dataclasses.fields(config):
        section_class = type(getattr(config, section.name))
        summary = (section_class.__doc__ or "").strip().split("\n")[0]
        lines.append(f"{section.name}:  # {summary}" if summary else f"{section.name}:")
        comments = field_comments(section_class)
        chosen_at_fit = {
            f.name for f in dataclasses.fields(section_class) if f.metadata.get("auto")
        }
        for key, value in values[section.name].items():
            if value is None and key in chosen_at_fit:
                value = "auto"  # reads back as None; says what None means here
            comment = comments.get(key)
            if comment:
                for text in textwrap.wrap(comment, COMMENT_WIDTH - 4, break_on_hyphens=False):
                    lines.append(f"  # {text}")
            lines.append(f"  {_yaml_entry(key, value)}")
        lines.append("")
    return "\n".join(lines)
