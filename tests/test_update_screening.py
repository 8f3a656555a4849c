"""Screening of clients' updates (plain PyTorch): non-finite, mismatched and outlier updates are named."""

from __future__ import annotations

import math

import torch

from server.validation import round_failure, screen_updates, summarize_errors, update_norm

GLOBAL = {"w": torch.zeros(4, 3), "b": torch.zeros(3), "steps": torch.tensor(7)}


def _moved(by: float) -> dict[str, torch.Tensor]:
    return {k: v + by if v.is_floating_point() else v.clone() for k, v in GLOBAL.items()}


def test_update_norm_is_the_l2_distance_over_float_tensors():
    assert math.isclose(update_norm(sent=GLOBAL, state=_moved(0.5)), 0.5 * math.sqrt(15))


def test_nan_inf_and_mismatched_updates_are_rejected_and_normal_ones_kept():
    nan = _moved(0.1)
    nan["b"][1] = math.nan
    inf = _moved(0.1)
    inf["w"][0, 0] = math.inf
    missing = {k: v for k, v in _moved(0.1).items() if k != "b"}
    reshaped = {**_moved(0.1), "w": torch.zeros(3, 4)}
    verdict = screen_updates(sent=GLOBAL, received=[_moved(0.1), nan, inf, missing, reshaped, _moved(0.2)],
                             max_norm_ratio=100.0)
    assert set(verdict) == {1, 2, 3, 4}
    assert "non-finite" in verdict[1] and "non-finite" in verdict[2]
    assert "missing ['b']" in verdict[3] and "shape" in verdict[4]


def test_an_update_beyond_the_ratio_times_the_median_norm_is_rejected():
    received = [_moved(0.1), _moved(0.12), _moved(0.5), _moved(50.0)]
    verdict = screen_updates(sent=GLOBAL, received=received, max_norm_ratio=10.0)
    assert list(verdict) == [3] and "max-update-norm-ratio=10" in verdict[3]
    assert screen_updates(sent=GLOBAL, received=received, max_norm_ratio=0.0) == {}  # 0 = no norm check
    # with two clients the larger one is compared with the smaller one
    assert list(screen_updates(sent=GLOBAL, received=[_moved(50.0), _moved(0.1)], max_norm_ratio=10.0)) == [0]


def test_a_round_with_too_few_trained_clients_fails_quoting_their_errors_once_each():
    errors = [{"code": 0, "reason": "ValueError: lr is nan"}] * 3 + [{"code": -1, "reason": "no reply"}]
    why = round_failure(server_round=2, sent=4, trained=0, minimum=1, errors=errors, state=GLOBAL)
    assert why.startswith("round 2 failed: 0 of 4") and "3 clients: ValueError: lr is nan" in why
    assert round_failure(server_round=2, sent=4, trained=1, minimum=1, errors=errors, state=GLOBAL) is None
    assert summarize_errors(errors).count("lr is nan") == 1


def test_a_non_finite_aggregate_fails_the_round():
    state = _moved(0.1)
    state["w"][1, 1] = math.nan
    why = round_failure(server_round=3, sent=2, trained=2, minimum=1, errors=[], state=state)
    assert why is not None and "NaN or infinity" in why and "'w'" not in why and "w" in why


RAY_REASON = """<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'ray::ClientAppActor.run() (pid=23827, ip=1)
  File "/venv/lib/python3.11/site-packages/torch/optim/adamw.py", line 61, in __init__
    raise ValueError(f"Invalid learning rate: {lr}")
ValueError: Invalid learning rate: nan

The above exception was the direct cause of the following exception:

ray::ClientAppActor.run() (pid=23827, ip=1)
    raise ClientAppException(str(ex)) from ex
flwr.clientapp.client_app.ClientAppException:
Exception ClientAppException occurred. Message: Invalid learning rate: nan'>"""


def test_a_ray_traceback_is_summarized_by_its_innermost_exception_line():
    errors = [{"reason": RAY_REASON.replace("pid=23827", f"pid={pid}")} for pid in (1, 2)]
    assert summarize_errors(errors) == "2 clients: ValueError: Invalid learning rate: nan"
