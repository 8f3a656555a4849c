"""SYNTHETIC faces: the embedded default dataset, drawn procedurally, no real person in it.

Every face is a cartoon drawn with soft (anti-aliased) distance fields: face oval, hair, eyes,
brows, nose, mouth. The 7 emotions change the mouth (curve, opening, width, teeth, a raised
upper lip for disgust), the brows (tilt, height, arch), the eyes (openness) and wrinkles.
Identities (face shape, feature spacing, skin, hair, resting expression) are disjoint between
train, val and test; pose, lighting, contrast, expression intensity and pixel noise vary per
image, so the task is learnable but not trivial. Results on it say nothing about real faces.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from fer_models.common.labels import EMOTIONS, IMAGE_SIDE, NUM_CLASSES
from fer_models.data.store import SPLIT_NAMES, FaceStore

logger = logging.getLogger(__name__)

_PARAMS = ("curve", "open", "width", "teeth", "press", "tilt", "raise", "arch", "eye",
           "lip_asym", "wrinkle", "glabella", "fold")
#: Expression at full intensity, per emotion; missing entries are 0 (= neutral).
_EXPRESSIONS: dict[str, dict[str, float]] = {
    "angry": {"curve": -0.03, "width": -0.18, "press": 0.7, "tilt": 0.09, "raise": -0.06,
              "eye": -0.12, "glabella": 1.0},
    "disgust": {"curve": -0.05, "open": 0.01, "width": -0.06, "teeth": 0.6, "tilt": 0.04,
                "raise": -0.04, "eye": -0.3, "lip_asym": 0.06, "wrinkle": 1.0, "fold": 0.7},
    "fear": {"curve": -0.03, "open": 0.05, "width": 0.12, "teeth": 0.5, "tilt": -0.06,
             "raise": 0.05, "eye": 0.4},
    "happy": {"curve": 0.11, "open": 0.025, "width": 0.2, "teeth": 1.0, "eye": -0.35, "fold": 0.8},
    "sad": {"curve": -0.08, "width": -0.04, "tilt": -0.07, "raise": 0.02, "eye": -0.2,
            "arch": -0.02},
    "surprise": {"open": 0.11, "width": -0.32, "teeth": 0.2, "raise": 0.09, "arch": 0.04, "eye": 0.5},
    "neutral": {},
}
_EXPR = np.array([[_EXPRESSIONS[e].get(p, 0.0) for p in _PARAMS] for e in EMOTIONS], np.float32)
_REPS_PER_SUBJECT = 1  # poses of each emotion per subject; 1 = as many identities as possible
_CHUNK = 256


def describe() -> str:
    """What this dataset is, for logs and reports."""
    return ("SYNTHETIC faces: procedurally drawn 48x48 grayscale cartoons of 7 emotions (no real "
            "person); identities disjoint across train/val/test. For smoke tests and demos only: "
            "accuracy on them says nothing about real faces.")


def _u(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return rng.uniform(lo, hi, n).astype(np.float32)


def _n(rng: np.random.Generator, sd: float, n: int) -> np.ndarray:
    return rng.normal(0.0, sd, n).astype(np.float32)


def _draw_params(rng: np.random.Generator, labels: np.ndarray, subjects: np.ndarray,
                 n_subjects: int) -> dict[str, np.ndarray]:
    """Per-sample float32 parameters: identity (per subject) + expression + nuisance."""
    n, s = len(labels), n_subjects
    ident = {  # one draw per subject
        "face_a": _u(rng, 0.70, 0.86, s), "face_b": _u(rng, 0.92, 1.08, s), "jaw": _u(rng, 0.0, 0.5, s),
        "skin": _u(rng, 0.42, 0.80, s), "hair": _u(rng, 0.04, 0.45, s), "hairline": _u(rng, -0.62, -0.40, s),
        "ex": _u(rng, 0.27, 0.37, s), "ey": _u(rng, -0.18, -0.04, s), "es": _u(rng, 0.85, 1.15, s),
        "gap": _u(rng, 0.12, 0.18, s), "bt": _u(rng, 0.03, 0.045, s), "ny": _u(rng, 0.20, 0.30, s),
        "my": _u(rng, 0.46, 0.58, s), "ms": _u(rng, 0.85, 1.15, s), "lt": _u(rng, 0.03, 0.045, s),
        "scale": _u(rng, 0.88, 1.06, s),
    }
    rest = np.stack([_n(rng, sd, s) for sd in  # resting face: an identity's own "neutral"
                     (0.015, 0.004, 0.04, 0.0, 0.0, 0.012, 0.012, 0.01, 0.08, 0.0, 0.0, 0.0, 0.0)], 1)
    p = {k: v[subjects] for k, v in ident.items()}
    intensity = _u(rng, 0.7, 1.15, n)[:, None]
    jitter = rng.normal(0, 0.008, (n, len(_PARAMS))).astype(np.float32)
    expr = _EXPR[labels] * intensity + rest[subjects] + jitter
    p.update({name: expr[:, i] for i, name in enumerate(_PARAMS)})
    p["lip_side"] = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32)
    p["gaze"] = _n(rng, 0.02, n)
    p.update(bg=_u(rng, 0.1, 0.9, n), bg_grad=_n(rng, 0.15, n), rot=np.clip(_n(rng, 0.12, n), -0.26, 0.26),
             dx=_u(rng, -0.07, 0.07, n), dy=_u(rng, -0.07, 0.07, n), jitter=_u(rng, 0.96, 1.04, n),
             light=_u(rng, 0.0, 0.4, n), light_dir=_u(rng, 0.0, 2 * np.pi, n),
             contrast=_u(rng, 0.8, 1.25, n), bright=_u(rng, -0.08, 0.08, n), gamma=_u(rng, 0.85, 1.2, n),
             noise=_u(rng, 0.008, 0.03, n))
    return p


def _soft(d: np.ndarray, w: np.ndarray | float) -> np.ndarray:
    """1 inside (d < 0), 0 outside, with an anti-aliased ramp of width ~w."""
    return 0.5 - 0.5 * np.tanh(d / w)


def _lerp(img: np.ndarray, tone: np.ndarray | float, alpha: np.ndarray) -> np.ndarray:
    return img + (tone - img) * alpha


def _ellipse(x: np.ndarray, y: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse centred at the origin."""
    return (np.sqrt((x / rx) ** 2 + (y / ry) ** 2) - 1.0) * np.minimum(rx, ry)


def _render(p: dict[str, np.ndarray], size: int, noise: np.ndarray) -> np.ndarray:
    """Draw one chunk of faces; every parameter has shape (n,), broadcast as (n, 1, 1)."""
    p = {k: v[:, None, None] for k, v in p.items()}
    g = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1)
    gx, gy = g[None, None, :], g[None, :, None]
    scale = p["scale"] * p["jitter"]
    cos, sin = np.cos(p["rot"]), np.sin(p["rot"])
    x0, y0 = gx - p["dx"], gy - p["dy"]
    X = (cos * x0 + sin * y0) / scale
    Y = (-sin * x0 + cos * y0) / scale
    w = 0.7 * (2.0 / size) / scale  # ~0.7 pixel, in face units
    skin, ax = p["skin"], np.abs(X)
    side = np.where(X < 0, -1.0, 1.0).astype(np.float32)

    img = np.broadcast_to(np.clip(p["bg"] + p["bg_grad"] * gx, 0, 1), X.shape).astype(np.float32)
    a_eff = p["face_a"] * (1 - p["jaw"] * np.clip(Y - 0.15, 0, None))
    r2 = (X / a_eff) ** 2 + ((Y - 0.05) / p["face_b"]) ** 2
    img = _lerp(img, skin * (1.05 - 0.2 * r2), _soft((np.sqrt(r2) - 1) * p["face_a"], w))
    hairline = p["hairline"] + 0.45 * X ** 2
    hair = _soft(_ellipse(X, Y + 0.05, p["face_a"] * 1.12, p["face_b"] * 1.04), w) * _soft(Y - hairline, w)
    img = _lerp(img, p["hair"], hair)

    # eyes: socket shadow, sclera, iris, upper lid
    ex, ey, es = p["ex"], p["ey"], p["es"]
    rx, ry = 0.14 * es, 0.075 * es * np.clip(1 + p["eye"], 0.25, 1.8)
    ex_d, ey_d = ax - ex, Y - ey
    img = img * (1 - 0.16 * _soft(_ellipse(ex_d, ey_d + 0.02, rx * 1.6, ry * 1.2 + 0.05), 0.06))
    eye_d = _ellipse(ex_d, ey_d, rx, ry)
    sclera = _soft(eye_d, w)
    img = _lerp(img, np.minimum(skin + 0.18, 0.95), 0.7 * sclera)
    iris = _soft(np.sqrt((X - side * ex - p["gaze"]) ** 2 + ey_d ** 2) - 0.05 * es, w) * sclera
    img = _lerp(img, 0.08, 0.95 * iris)
    lid = _soft(np.abs(eye_d) - 0.012, w) * _soft(ey_d - 0.01, w)
    img = _lerp(img, 0.1, 0.75 * lid)

    # brows: t = -1 at the inner end, +1 at the outer end; tilt > 0 lowers the inner end (angry)
    bl = 0.15 * es
    t = (ax - ex) / bl
    by = ey - p["gap"] - p["raise"] - ry
    yc = by - p["arch"] * (1 - t ** 2) - p["tilt"] * t
    brow_d = np.maximum(np.abs(Y - yc) - p["bt"] * (1 - 0.2 * t), (np.abs(t) - 1) * bl)
    img = _lerp(img, np.minimum(p["hair"], skin * 0.5), 0.95 * _soft(brow_d, w))
    glab = _soft(np.maximum(np.abs(ax - 0.045) - 0.008, np.abs(Y - (ey - 0.06)) - 0.05), w)
    img = _lerp(img, skin * 0.55, np.clip(p["glabella"], 0, 1) * 0.6 * glab)

    # nose: nostrils (raised by the disgust wrinkle), bridge wrinkles
    ny = p["ny"] - 0.03 * np.clip(p["wrinkle"], 0, 1)
    img = _lerp(img, skin * 0.45, 0.55 * _soft(_ellipse(ax - 0.07, Y - ny, 0.035, 0.02), w))
    wrinkle = sum(_soft(np.maximum(np.abs(Y - (ey + dy)) - 0.008, ax - 0.09), w) for dy in (0.07, 0.12))
    img = _lerp(img, skin * 0.55, np.clip(p["wrinkle"], 0, 1) * 0.55 * wrinkle)

    # mouth: centre line yc(t), opening h(t), lips around, teeth in the upper part of the opening
    mw = 0.3 * (1 + p["width"]) * p["ms"]
    my = p["my"] + 0.5 * np.clip(p["open"], 0, None)
    t = X / mw
    inside = np.sqrt(np.clip(1 - t ** 2, 0, 1))
    yc = my - p["curve"] * t ** 2
    h_lo = np.clip(p["open"], 0, None) * inside + 0.006
    h_up = h_lo + np.clip(p["lip_asym"], 0, None) * np.clip(p["lip_side"] * t + 0.2, 0, 1) * inside
    fold_x = 0.12 + (Y - ny) / (my - ny) * (mw - 0.08)
    fold = _soft(np.maximum(np.abs(ax - fold_x) - 0.01, np.abs(Y - (ny + my) / 2) - (my - ny) / 2), w)
    img = _lerp(img, skin * 0.6, np.clip(p["fold"], 0, 1) * 0.45 * fold)
    lt = p["lt"] * (1 - 0.6 * np.clip(p["press"], 0, 1))
    ends = (np.abs(t) - 1) * mw
    lips = _soft(np.maximum.reduce([Y - (yc + h_lo + 1.3 * lt), (yc - h_up - lt) - Y, ends]), w)
    img = _lerp(img, skin * 0.5, 0.9 * lips)
    cavity = _soft(np.maximum.reduce([Y - (yc + h_lo), (yc - h_up) - Y, ends]), w)
    img = _lerp(img, 0.08, 0.9 * cavity)
    teeth = cavity * _soft(Y - (yc - h_up + 0.035), w) * _soft(h_up - 0.02, 0.01)
    img = _lerp(img, 0.85, np.clip(p["teeth"], 0, 1) * 0.8 * teeth)

    # camera: lighting gradient, contrast, gamma, noise
    light = 1 + p["light"] * (np.cos(p["light_dir"]) * gx + np.sin(p["light_dir"]) * gy)
    img = (img * light - 0.5) * p["contrast"] + 0.5 + p["bright"]
    img = np.clip(img, 0, 1) ** p["gamma"] + noise * p["noise"]
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _split(seed: int, split_index: int, per_class: int,
           size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, split_index])
    j = np.repeat(np.arange(per_class), NUM_CLASSES)  # subject-major: each subject shows every emotion
    labels = np.tile(np.arange(NUM_CLASSES), per_class)
    subjects = j // _REPS_PER_SUBJECT
    n_subjects = int(subjects.max()) + 1
    params = _draw_params(rng, labels, subjects, n_subjects)
    noise = rng.standard_normal((len(labels), size, size), dtype=np.float32)
    images = np.empty((len(labels), size, size), np.uint8)
    for lo in range(0, len(labels), _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        images[sl] = _render({k: v[sl] for k, v in params.items()}, size, noise[sl])
    name = SPLIT_NAMES[split_index]
    ids = np.array([f"syn-{name}-{s:04d}" for s in subjects])
    return images, labels, ids


def generate_synthetic(*, seed: int = 0, per_class: int = 240, eval_per_class: int = 60,
                       size: int = IMAGE_SIDE) -> FaceStore:
    """SYNTHETIC faces: ``per_class`` per emotion in train, ``eval_per_class`` in each of val/test."""
    if per_class < 1 or eval_per_class < 1:
        raise ValueError(f"per_class and eval_per_class must be >= 1, got {per_class}, {eval_per_class}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    parts = [_split(seed, i, per_class if name == "train" else eval_per_class, size)
             for i, name in enumerate(SPLIT_NAMES)]
    store = FaceStore(
        name="synthetic",
        images=torch.from_numpy(np.concatenate([p[0] for p in parts])),
        labels=torch.from_numpy(np.concatenate([p[1] for p in parts]).astype(np.int64)),
        splits=torch.from_numpy(np.concatenate([np.full(len(p[1]), i, np.int8)
                                                for i, p in enumerate(parts)])),
        source=f"synthetic(seed={seed}, per_class={per_class}, eval_per_class={eval_per_class})",
        synthetic=True,
        meta={"subject": np.concatenate([p[2] for p in parts])},
    )
    logger.info("generated %s", store.describe())
    return store
