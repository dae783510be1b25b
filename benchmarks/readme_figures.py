"""The README's pictures from one run folder of the embedded default.

Copies the run's ``progress.png`` and puts its held-out grids (``images/eval_base.png``,
``images/eval_trained.png``: the first noise of up to 8 subjects x 8 prompts, each row
the reference, then its samples) side by side at a quarter of their size in 256 colours,
with a title over each:

    cgrpo train run.out_dir=/tmp/default_run run.threads=1 --quiet
    python benchmarks/readme_figures.py /tmp/default_run [--out docs/images]

writes ``default_progress.png`` and ``default_base_vs_trained.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from PIL import Image, ImageDraw


def side_by_side(
    left: Path, right: Path, out: Path, *, titles: tuple[str, str], shrink: int = 4
) -> None:
    """The two grids side by side, each shrunk ``shrink`` times (nearest: the grids are
    blown-up pixels), a title strip over them; 256 colours (the README's < 200 KB)."""
    a, b = (Image.open(p).convert("RGB") for p in (left, right))
    a, b = (im.resize((im.width // shrink, im.height // shrink), Image.NEAREST) for im in (a, b))
    gap, head = 16, 22
    canvas = Image.new("RGB", (a.width + gap + b.width, head + max(a.height, b.height)), "white")
    canvas.paste(a, (0, head))
    canvas.paste(b, (a.width + gap, head))
    draw = ImageDraw.Draw(canvas)
    for x, text in ((0, titles[0]), (a.width + gap, titles[1])):
        draw.text((x + 4, 5), text, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    palette = canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(out, format="PNG", optimize=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/images"))
    args = p.parse_args()
    summary = json.loads((args.run / "eval.json").read_text())
    steps = summary.get("steps", "?")
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.run / "progress.png", args.out / "default_progress.png")
    side_by_side(
        args.run / "images" / "eval_base.png",
        args.run / "images" / "eval_trained.png",
        args.out / "default_base_vs_trained.png",
        titles=("base (held-out subjects, first noise)", f"trained ({steps} steps, same noise)"),
    )
    for name in ("default_progress.png", "default_base_vs_trained.png"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size / 1e3:.0f} KB")


if __name__ == "__main__":
    main()
