"""The model card of an exported LoRA: ``README.md`` beside the file, in the layout of the
cards diffusers' LoRA training scripts write (YAML front matter: ``base_model``,
``library_name: diffusers``, ``license``, ``tags``; then the description, how to use it,
and the training details).

It states what the file is (format, rank, which checkpoint, EMA or raw), the base model and
any starting LoRA, the rewards and their weights, the method (GRPO with the run's shaping
(SARS) and weighting (TDW) settings, the sampler, the optimizer), the steps trained, the
run's held-out evaluation from its ``eval.json`` (base vs trained per metric, the change
and its paired standard error over pairs) when there is one, and the commands that made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cgrpo.config.core import config_to_dict
from cgrpo.eval.summary import paired_changes
from cgrpo.run.config import TrainConfig

__all__ = ["CardFacts", "base_model_id", "model_card"]

#: the Hub id of the model each position scheme is trained on (flux.path is a local folder)
BASE_MODELS = {
    "kontext": "black-forest-labs/FLUX.1-Kontext-dev",
    "uno": "black-forest-labs/FLUX.1-dev",
}


def base_model_id(cfg: TrainConfig) -> str:
    """The base model's Hub id: FLUX.1-Kontext-dev for Kontext position ids, else FLUX.1-dev."""
    return BASE_MODELS[cfg.flux.position_scheme]


@dataclass(frozen=True)
class CardFacts:
    """What the card states besides the run's config."""

    file: str  #: the LoRA file's name
    format: str  #: diffusers or uno
    rank: int  #: the file's LoRA rank
    step: int  #: the checkpoint's training step
    ema: bool  #: EMA weights (else raw)
    run: str  #: the run folder
    command: str  #: the export command line
    base_model: str  #: the base model's Hub id
    eval: dict[str, Any] | None = None  #: the run's eval.json


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _front_matter(cfg: TrainConfig, facts: CardFacts) -> str:
    tags = ["diffusers", "lora", "flux", "flux-diffusers", "template:sd-lora"]
    tags += ["customized-grpo", "grpo", "reinforcement-learning", "subject-driven-generation"]
    if cfg.flux.position_scheme == "kontext":
        tags += ["flux-kontext", "image-to-image"]
    else:
        tags += ["uno", "text-to-image"]
    lines = [
        "---",
        f"base_model: {facts.base_model}",
        "library_name: diffusers",
        "license: other",
        "license_name: flux-1-dev-non-commercial-license",
        "license_link: https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md",
        "tags:",
        *(f"- {t}" for t in tags),
        "---",
    ]
    return "\n".join(lines)


def _description(cfg: TrainConfig, facts: CardFacts) -> list[str]:
    f = cfg.flux
    weights = "EMA" if facts.ema else "raw (not EMA)"
    lines = [
        f"# Customized-GRPO LoRA for {facts.base_model}",
        "",
        "<!-- This model card was written by `cgrpo export` from the run's config, checkpoint "
        "and eval.json. -->",
        "",
        "## Model description",
        "",
        f"LoRA weights for [{facts.base_model}](https://huggingface.co/{facts.base_model}) "
        "trained with Customized-GRPO (online RL for subject-driven generation: GRPO with "
        "synergy-aware reward shaping, SARS, and time-dependent weighting, TDW) by cgrpo.",
        "",
        f"- file: `{facts.file}`, format `{facts.format}`, rank {facts.rank}, "
        f"{weights} weights of checkpoint step {facts.step} of run `{facts.run}`",
        f"- LoRA: preset `{f.lora_preset}` on {', '.join(f.lora_target_names)}; trained rank "
        f"{f.lora_rank}, alpha {f.lora_alpha if f.lora_alpha is not None else f.lora_rank}",
        f"- model: `{f.path}` (position ids `{f.position_scheme}`, references prepared as "
        f"`{f.reference_preprocess}`), guidance {f.guidance}, {f.resolution} px",
    ]
    if f.start_lora:
        inside = "included in this file (concatenated)"
        if facts.format != "uno":
            inside = "NOT in this file: load it as well (below)"
        lines.append(
            f"- starting LoRA merged into the base before training: `{f.start_lora}`, {inside}"
        )
    return lines


def _usage(cfg: TrainConfig, facts: CardFacts) -> list[str]:
    kontext = cfg.flux.position_scheme == "kontext"
    pipe = "FluxKontextPipeline" if kontext else "FluxPipeline"
    lines = ["", "## Use it", ""]
    if facts.format == "uno":
        lines += [
            "In bytedance/UNO's own loader (its `uno/flux/util.py`), one LoRA at one rank:",
            "",
            "```python",
            "import os",
            'os.environ["FLUX_DEV"] = "flux1-dev.safetensors"  # the BFL checkpoint',
            f'os.environ["LORA"] = "{facts.file}"',
            "from uno.flux.util import load_flow_model_only_lora",
            f'dit = load_flow_model_only_lora("flux-dev", "cuda", hf_download=False, '
            f"lora_rank={facts.rank})",
            "```",
            "",
            f"(UNO's `inference.py --lora_rank {facts.rank}` reads `LORA` only when its "
            "download of bytedance-research/UNO's LoRA fails.)",
        ]
        return lines
    lines += ["With the [diffusers library](https://github.com/huggingface/diffusers):", ""]
    lines += ["```python", "import torch", f"from diffusers import {pipe}", ""]
    lines.append(f'pipe = {pipe}.from_pretrained("{facts.base_model}", torch_dtype=torch.bfloat16)')
    lines.append('pipe.to("cuda")')
    if cfg.flux.start_lora:
        lines += [
            f'pipe.load_lora_weights("{cfg.flux.start_lora}", adapter_name="start")',
            f'pipe.load_lora_weights("{facts.file}", adapter_name="cgrpo")',
            'pipe.set_adapters(["start", "cgrpo"], adapter_weights=[1.0, 1.0])',
        ]
    else:
        lines.append(f'pipe.load_lora_weights("{facts.file}")')
    lines += ["```", ""]
    lines.append(
        "The file holds diffusers keys (`transformer.`...) and the adapter's rank and alpha "
        "(`lora_adapter_metadata`), so it loads at the trained scale. "
        + (
            "Pass the reference as `image=`; the run prepared it as "
            f"`flux.reference_preprocess={cfg.flux.reference_preprocess}`."
            if kontext
            else "FluxPipeline takes no reference image: to generate from a reference as the "
            "run did (UNO's position ids), use UNO's pipeline with `--format uno`, or "
            "`cgrpo sample --run`."
        )
    )
    return lines


def _data(data: dict[str, Any]) -> str:
    """The training pairs' source (and the held-out one when it is another folder)."""
    keys = ["kind", "root"] if data["kind"] == "dreambench" else ["kind", "path", "image_root"]
    if data["kind"] != "embedded" and data.get("eval_root"):
        keys.append("eval_root")
    return _kv({k: data[k] for k in keys if k == "kind" or data.get(k)})


def _training(cfg: TrainConfig, facts: CardFacts) -> list[str]:
    d = config_to_dict(cfg)
    m, g, s, o = d["method"], d["grpo"], d["sampler"], d["optim"]
    lines = ["", "## Training details", "", "Rewards (advantages standardised per reward):", ""]
    lines += ["| reward | kind | weight | options |", "|---|---|---|---|"]
    for name, spec in d["rewards"].items():
        rest = {k: v for k, v in spec.items() if k not in ("kind", "weight")}
        lines.append(f"| {name} | {spec.get('kind')} | {spec.get('weight', 1.0)} | {_kv(rest)} |")
    shaping, weighting = dict(m["shaping"]), dict(m["weighting"])
    lines += [
        "",
        f"- method: objective {_kv(m['objective'])}; reward shaping {_kv(shaping)}; "
        f"time-dependent weighting {_kv(weighting)}; pair {', '.join(m['pair'])}",
        f"- GRPO: {_kv(g)}",
        f"- sampler: {_kv({k: v for k, v in s.items() if k != 'schedule'})}, "
        f"schedule {_kv(s['schedule'])}",
        f"- optimizer: AdamW {_kv(o)}",
        f"- steps trained: {facts.step} (run.steps {cfg.run.steps}), "
        f"{d['data']['prompts_per_step']} prompts x {g['group_size']} samples per step",
        f"- data: {_data(d['data'])}",
    ]
    return lines


def _evaluation(facts: CardFacts) -> list[str]:
    ev = facts.eval or {}
    trained, base = ev.get("trained"), ev.get("base")
    lines = ["", "## Evaluation", ""]
    if not trained:
        return [*lines, "The run's eval.json holds no evaluation of the trained model."]
    at = ev.get("steps")
    lines.append(
        f"The run's held-out evaluation (`eval.json`: {trained.get('pairs')} pairs, "
        f"{trained.get('images')} images, deterministic sampling, the same noise for both"
        + (f"; trained model at step {at}" if at is not None else "")
        + "):"
    )
    if at is not None and at != facts.step:
        lines.append(f"(this file is step {facts.step}, not the evaluated step {at})")
    paired = paired_changes(trained, base) if base else {}
    lines += ["", "| metric | base | trained | change | paired SE |", "|---|---|---|---|---|"]
    for name, value in trained["overall"].items():
        b = base["overall"].get(name) if base else None
        change = f"{value - b:+.4f}" if b is not None else ""
        se = f"{paired[name][1]:.4f}" if name in paired else ""
        b_text = f"{b:.4f}" if b is not None else ""
        lines.append(f"| {name} | {b_text} | {value:.4f} | {change} | {se} |")
    return lines


def model_card(cfg: TrainConfig, facts: CardFacts) -> str:
    """The card's Markdown text for the LoRA of run config ``cfg`` described by ``facts``."""
    body = [
        *_description(cfg, facts),
        *_usage(cfg, facts),
        *_training(cfg, facts),
        *_evaluation(facts),
        "",
        "## How it was made",
        "",
        "```bash",
        f"cgrpo train --config {Path(facts.run) / 'config.yaml'}   # the run's full config",
        facts.command,
        "```",
        "",
    ]
    return _front_matter(cfg, facts) + "\n\n" + "\n".join(body)
