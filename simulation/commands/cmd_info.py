"""``fedfer config`` and ``fedfer models``: what can be set and what can be trained."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("config", help="list every setting with its default and meaning").set_defaults(func=show_config)
    sub.add_parser("models", help="list the registered models with their parameter counts").set_defaults(
        func=show_models)


def show_config(_: argparse.Namespace) -> int:
    from fer_models.config import describe_keys

    width = max(len(k) for k, _, _ in describe_keys())
    for key, default, help_text in describe_keys():
        print(f"{key:<{width}}  {json.dumps(default):<10}  {help_text}")
    return 0


def show_models(_: argparse.Namespace) -> int:
    from fer_models.models import create_model, list_models

    for name in list_models():
        model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        doc = (type(model).__doc__ or "").strip().splitlines()
        print(f"{name:<16} {params:>9,d} params  {doc[0] if doc else ''}")
    return 0
