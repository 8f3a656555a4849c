"""``fedfer config`` and ``fedfer models``: what can be set and what can be trained."""

from __future__ import annotations

import argparse
import json

from simulation.commands.cli_common import add_json_flag, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="list every setting with its default and meaning")
    add_json_flag(p)
    p.set_defaults(func=show_config)
    p = sub.add_parser("models", help="list the registered models with their parameter counts")
    add_json_flag(p)
    p.set_defaults(func=show_models)


def show_config(args: argparse.Namespace) -> int:
    from fer_models.config import describe_keys

    keys = describe_keys()
    if getattr(args, "json", False):
        print_json(args, {"settings": [{"key": k, "default": d, "help": h} for k, d, h in keys]})
        return 0
    width = max(len(k) for k, _, _ in keys)
    for key, default, help_text in keys:
        print(f"{key:<{width}}  {json.dumps(default):<10}  {help_text}")
    return 0


def show_models(args: argparse.Namespace) -> int:
    from fer_models.models import create_model, list_models

    rows = []
    for name in list_models():
        model = create_model(name)
        doc = (type(model).__doc__ or "").strip().splitlines()
        rows.append({"name": name, "parameters": sum(p.numel() for p in model.parameters()),
                     "description": doc[0] if doc else ""})
    if getattr(args, "json", False):
        print_json(args, {"models": rows})
        return 0
    for row in rows:
        print(f"{row['name']:<16} {row['parameters']:>9,d} params  {row['description']}")
    return 0
