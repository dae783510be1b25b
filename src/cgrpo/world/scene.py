"""The embedded subject world: identities, prompts and a ground-truth renderer.

It is built the way the real task is. A *subject* has an identity (shape, colour,
surface pattern); its *reference image* shows it alone, centred, medium-sized, on
a white background. A *prompt* names the subject's class word (its shape, like
"backpack" on DreamBench) and may ask for a background, a placement, a size and a
recolouring. Recolouring truly conflicts with identity, as "a red backpack" does.

:func:`render` draws the ground truth for any (subject, prompt). It makes the
pretraining data; the rewards in :mod:`cgrpo.rewards.embedded` never call it and
never see hidden state: they look only at pixels, the reference and the prompt.

Images are float32 numpy arrays of shape (H, W, 3) in [0, 1]; H = W = 32.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from dataclasses import dataclass, replace

import numpy as np

from cgrpo.config.errors import quoted

IMAGE_SIZE = 32

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "heart",
    "diamond",
    "moon",
)

#: Saturated subject colours (RGB in [0, 1]). Recolouring picks one of these.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (0.95, 0.55, 0.05),
    "yellow": (0.92, 0.85, 0.05),
    "green": (0.10, 0.65, 0.15),
    "cyan": (0.05, 0.75, 0.80),
    "blue": (0.10, 0.25, 0.90),
    "purple": (0.55, 0.15, 0.75),
    "pink": (0.95, 0.40, 0.70),
}

#: Background colours: neutral or pale, so that a subject always stands out.
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "white": (0.96, 0.96, 0.96),
    "black": (0.08, 0.08, 0.08),
    "grey": (0.55, 0.55, 0.55),
    "sand": (0.90, 0.80, 0.60),
    "sky": (0.70, 0.85, 0.98),
    "mint": (0.72, 0.95, 0.78),
}
DEFAULT_BACKGROUND = "white"

PATTERNS: tuple[str, ...] = ("solid", "hstripes", "vstripes", "checker")

#: Half-size of the subject's bounding box, in pixels of a 32 px image.
SIZES: dict[str, float] = {"small": 6.0, "medium": 8.5, "large": 12.0}
DEFAULT_SIZE = "medium"

#: Placement names; the centre offset depends on the size (the subject stays inside).
POSITIONS: dict[str, tuple[int, int]] = {
    "center": (0, 0),
    "top left": (-1, -1),
    "top right": (-1, 1),
    "bottom left": (1, -1),
    "bottom right": (1, 1),
}
DEFAULT_POSITION = "center"

#: Darkening factor of a pattern's second colour.
PATTERN_SHADE = 0.5


@dataclass(frozen=True)
class Subject:
    """An identity: what must be preserved from the reference."""

    shape: str
    colour: str
    pattern: str

    @property
    def name(self) -> str:
        return f"{self.colour}-{self.pattern}-{self.shape}"

    @property
    def class_word(self) -> str:
        return self.shape


@dataclass(frozen=True)
class Prompt:
    """What the prompt asks for. ``None`` means "not mentioned" (the default holds)."""

    class_word: str
    background: str | None = None
    position: str | None = None
    size: str | None = None
    colour: str | None = None

    @property
    def text(self) -> str:
        words = ["a"]
        if self.size:
            words.append(self.size)
        if self.colour:
            words.append(self.colour)
        words.append(self.class_word)
        if self.position and self.position != DEFAULT_POSITION:
            words += ["in", "the", *self.position.split()]
        if self.background:
            words += ["on", "a", self.background, "background"]
        return " ".join(words)

    def attributes(self) -> dict[str, str]:
        """The attributes the prompt mentions, by name."""
        out = {}
        for key in ("background", "position", "size", "colour"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


_PROMPT_RE = re.compile(
    r"^an? (?:(?P<size>small|large) )?(?:(?P<colour>[a-z]+) )?(?P<cls>[a-z]+)"
    r"(?: in the (?P<pos>top left|top right|bottom left|bottom right|center))?"
    r"(?: on an? (?P<bg>[a-z]+) background)?$"
)


def parse_prompt(text: str) -> Prompt:
    """Parse a prompt of the embedded grammar back into its attributes.

    Grammar: ``a [small|large] [<colour>] <class> [in the <position>] [on a <bg> background]``.
    Raises ``ValueError`` naming the text and the grammar if it does not parse.
    """
    m = _PROMPT_RE.match(text.strip().lower())
    if m is None or m.group("cls") not in SHAPES:
        # "a red star": the regex may have read the colour as the class word.
        raise ValueError(
            f"prompt {quoted(text)} is not in the embedded world's grammar: "
            "'a [small|large] [<colour>] <class> [in the <position>] [on a <bg> background]' "
            f"with class in {SHAPES}, colour in {tuple(COLOURS)}, "
            f"background in {tuple(BACKGROUNDS)}"
        )
    colour = m.group("colour")
    if colour is not None and colour not in COLOURS:
        raise ValueError(
            f"prompt {quoted(text)}: unknown colour {quoted(colour)}; valid: {tuple(COLOURS)}"
        )
    bg = m.group("bg")
    if bg is not None and bg not in BACKGROUNDS:
        raise ValueError(
            f"prompt {quoted(text)}: unknown background {quoted(bg)}; valid: {tuple(BACKGROUNDS)}"
        )
    return Prompt(m.group("cls"), bg, m.group("pos"), m.group("size"), colour)


# ----------------------------------------------------------------------------- subjects


def all_subjects(seed: int = 0) -> tuple[list[Subject], list[Subject]]:
    """The fixed split: 24 training identities and 8 held-out identities.

    Every shape, colour and pattern occurs among the training subjects; each held-out
    subject is a combination never seen in training (a new identity built from known
    parts), as DreamBench subjects are new to a generator.
    """
    rng = random.Random(seed)
    combos = list(itertools.product(SHAPES, COLOURS, PATTERNS))
    rng.shuffle(combos)
    held_out: list[Subject] = []
    # one held-out subject per shape, with distinct colours
    used_colours: set[str] = set()
    for shape in SHAPES:
        for s, c, p in combos:
            if s == shape and c not in used_colours:
                held_out.append(Subject(s, c, p))
                used_colours.add(c)
                break
    held = set(held_out)
    train: list[Subject] = []
    # three training subjects per shape, covering colours and patterns
    for i, shape in enumerate(SHAPES):
        options = [
            Subject(s, c, p) for s, c, p in combos if s == shape and Subject(s, c, p) not in held
        ]
        chosen: list[Subject] = []
        for k in range(3):
            want_pattern = PATTERNS[(i + k) % len(PATTERNS)]
            for o in options:
                if o.pattern == want_pattern and o.colour not in {c.colour for c in chosen}:
                    chosen.append(o)
                    break
        train.extend(chosen)
    return train, held_out


def subject_by_name(name: str) -> Subject:
    """Look up a subject by ``colour-pattern-shape`` name."""
    parts = name.split("-")
    if (
        len(parts) != 3
        or parts[0] not in COLOURS
        or parts[1] not in PATTERNS
        or parts[2] not in SHAPES
    ):
        raise ValueError(
            f"unknown subject {quoted(name)}: expected 'colour-pattern-shape' with colour in "
            f"{tuple(COLOURS)}, pattern in {PATTERNS}, shape in {SHAPES}"
        )
    return Subject(parts[2], parts[0], parts[1])


def random_prompt(subject: Subject, rng: random.Random, p_attr: float = 0.45) -> Prompt:
    """A prompt for ``subject`` from the templates: each attribute mentioned with prob ``p_attr``.

    Background never equals the subject's colour family; "large" is never placed off-centre
    (it would not fit); a recolour always names a colour different from the subject's.
    """
    bg = (
        rng.choice([b for b in BACKGROUNDS if b != DEFAULT_BACKGROUND])
        if rng.random() < p_attr
        else None
    )
    size = rng.choice(["small", "large"]) if rng.random() < p_attr * 0.7 else None
    position = None
    if size != "large" and rng.random() < p_attr:
        position = rng.choice([p for p in POSITIONS if p != DEFAULT_POSITION])
    colour = None
    if rng.random() < p_attr * 0.7:
        colour = rng.choice([c for c in COLOURS if c != subject.colour])
    return Prompt(subject.class_word, bg, position, size, colour)


# ----------------------------------------------------------------------------- rendering


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of ``shape`` on local coordinates u (right), v (down) in [-1, 1]."""
    if shape == "circle":
        return u * u + v * v <= 0.92
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "triangle":
        return (v <= 0.8) & (v >= -0.9 + 1.75 * np.abs(u))
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "cross":
        return ((np.abs(u) <= 0.32) & (np.abs(v) <= 0.95)) | (
            (np.abs(v) <= 0.32) & (np.abs(u) <= 0.95)
        )
    if shape == "star":
        r = np.sqrt(u * u + v * v)
        theta = np.arctan2(u, -v)  # 0 at the top
        k = np.cos(5 * theta)
        radius = 0.45 + 0.55 * np.clip(k, 0, None) ** 2 + 0.0 * k
        return r <= radius
    if shape == "heart":
        x, y = u * 1.25, -(v * 1.25 - 0.15)
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    if shape == "moon":
        outer = u * u + v * v <= 0.92
        inner = (u - 0.45) ** 2 + (v + 0.1) ** 2 <= 0.55
        return outer & ~inner
    raise ValueError(f"unknown shape {shape!r}; valid: {SHAPES}")


def _pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the pattern's darker second colour goes, in local coordinates."""
    if pattern == "solid":
        return np.zeros_like(u, dtype=bool)
    if pattern == "hstripes":
        return np.floor((v + 1) * 2.5).astype(int) % 2 == 1
    if pattern == "vstripes":
        return np.floor((u + 1) * 2.5).astype(int) % 2 == 1
    if pattern == "checker":
        return (np.floor((u + 1) * 2).astype(int) + np.floor((v + 1) * 2).astype(int)) % 2 == 1
    raise ValueError(f"unknown pattern {pattern!r}; valid: {PATTERNS}")


def layout(prompt: Prompt | None, size: int = IMAGE_SIZE) -> tuple[float, float, float]:
    """Centre (row, col) and half-size in pixels of the subject for ``prompt``."""
    size_name = (prompt.size if prompt else None) or DEFAULT_SIZE
    pos_name = (prompt.position if prompt else None) or DEFAULT_POSITION
    scale = size / IMAGE_SIZE
    half = SIZES[size_name] * scale
    dr, dc = POSITIONS[pos_name]
    offset = max(0.0, size / 2 - half - 1.5 * scale)
    return size / 2 + dr * offset, size / 2 + dc * offset, half


def render(
    subject: Subject,
    prompt: Prompt | None = None,
    size: int = IMAGE_SIZE,
    *,
    supersample: int = 4,
    ignore: tuple[str, ...] = (),
) -> np.ndarray:
    """Ground-truth image of ``subject`` as ``prompt`` asks (``None``: the reference image).

    ``ignore`` names prompt attributes to disregard ("colour", "background", ...): used to
    make the copy-biased part of the pretraining data, like a real base model that tends to
    paste the reference. Anti-aliased by ``supersample`` x ``supersample`` averaging.
    """
    if prompt is not None and ignore:
        prompt = replace(prompt, **{k: None for k in ignore})
    cy, cx, half = layout(prompt, size)
    bg_name = (prompt.background if prompt else None) or DEFAULT_BACKGROUND
    colour_name = (prompt.colour if prompt else None) or subject.colour
    n = size * supersample
    coords = (np.arange(n, dtype=np.float32) + 0.5) / supersample
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    u = (xx - cx) / half
    v = (yy - cy) / half
    inside = _shape_mask(subject.shape, u, v)
    dark = _pattern_mask(subject.pattern, u, v) & inside
    base = np.asarray(COLOURS[colour_name], dtype=np.float32)
    img = np.empty((n, n, 3), dtype=np.float32)
    img[:] = np.asarray(BACKGROUNDS[bg_name], dtype=np.float32)
    img[inside] = base
    img[dark] = base * PATTERN_SHADE
    img = img.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return img


@functools.lru_cache(maxsize=256)
def reference_image(subject: Subject, size: int = IMAGE_SIZE) -> np.ndarray:
    """The subject alone, centred, medium-sized, on white: what a user would upload.

    Cached; the returned array is read-only.
    """
    img = render(subject, None, size)
    img.flags.writeable = False
    return img
