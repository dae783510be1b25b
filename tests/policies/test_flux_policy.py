"""The FLUX policy on tiny random-config FLUX components (no downloads, CPU).

The components (transformer, VAE, CLIP, T5, tokenizers) are built from configs here,
saved in diffusers layout and loaded through ``FluxPolicy``'s real from-path constructor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from cgrpo.method.advantages import group_advantages  # noqa: E402
from cgrpo.method.loss import grpo_loss  # noqa: E402
from cgrpo.method.shaping import sars  # noqa: E402
from cgrpo.method.weighting import make_weighting  # noqa: E402
from cgrpo.policies.base import Policy  # noqa: E402
from cgrpo.policies.flux.config import FluxConfig, FluxWeightsError  # noqa: E402
from cgrpo.policies.flux.latents import pack_latents, position_ids, unpack_latents  # noqa: E402
from cgrpo.policies.flux.policy import FluxPolicy  # noqa: E402
from cgrpo.sampling.rollout import sample_groups  # noqa: E402
from cgrpo.sampling.sde import sde_step, sigma_schedule  # noqa: E402
from tests.conftest import PROMPTS  # noqa: E402


def make_policy(path: Path, **kw) -> FluxPolicy:
    base = dict(
        path=str(path),
        dtype="float32",
        resolution=16,  # VAE downsamples 2x -> 8x8 latent -> 4x4 = 16 tokens of 16 channels
        lora_rank=4,
        max_sequence_length=8,
    )
    base.update(kw)
    return FluxPolicy(FluxConfig(**base), "cpu")


def refs(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 20, 24, generator=torch.Generator().manual_seed(1))


def randomise_lora(policy: FluxPolicy, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_missing_weights_fail_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(FluxWeightsError) as e:
        make_policy(tmp_path / "nowhere")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "nowhere" / "transformer") in msg
    assert "config.json" in msg and "docs/gpu.md" in msg
    with pytest.raises(FluxWeightsError, match="path is not set"):
        FluxPolicy(FluxConfig())


def test_incomplete_folder_names_the_component(flux_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(flux_dir, tmp_path / "m")
    for f in (tmp_path / "m" / "text_encoder_2").glob("model*.safetensors"):
        f.unlink()
    with pytest.raises(FluxWeightsError, match="T5-XXL text encoder.*text_encoder_2"):
        make_policy(tmp_path / "m")


def test_pack_unpack_and_position_ids() -> None:
    z = torch.randn(2, 4, 6, 8)
    tokens = pack_latents(z)
    assert tokens.shape == (2, 12, 16)
    assert torch.equal(unpack_latents(tokens, 6, 8), z)
    img, ref_k = position_ids("kontext", 3, 4, ref_shapes=[(3, 4)])
    _, ref_u = position_ids("uno", 3, 4, ref_shapes=[(3, 4)])
    assert (img[:, 0] == 0).all() and img[:, 1].max() == 2 and img[:, 2].max() == 3
    assert (ref_k[:, 0] == 1).all() and torch.equal(ref_k[:, 1:], img[:, 1:])
    assert (ref_u[:, 0] == 0).all()
    assert torch.equal(ref_u[:, 1], img[:, 1] + 3) and torch.equal(ref_u[:, 2], img[:, 2] + 4)


def test_velocity_shapes_schemes_and_only_lora_trainable(flux_dir: Path) -> None:
    uno = make_policy(flux_dir)
    assert isinstance(uno, Policy)
    assert uno.latent_shape() == (16, 16)
    cond = uno.encode_condition(refs(), PROMPTS)
    assert cond["prompt_embeds"].shape == (2, 8, 32)
    assert cond["pooled_prompt_embeds"].shape == (2, 32)
    assert cond["reference_tokens"].shape == (2, 16, 16)
    x = torch.randn(2, *uno.latent_shape(), generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([1.0, 0.5])
    v = uno.velocity(x, sigma, cond)
    assert v.shape == x.shape and v.dtype == x.dtype and torch.isfinite(v).all()
    # B is zero-initialised: the LoRA starts as the identity, so reference == policy.
    assert torch.equal(uno.reference_velocity(x, sigma, cond), v)

    kontext = make_policy(flux_dir, position_scheme="kontext")
    square = (uno.tokens_hw,)  # a target-sized reference
    assert not torch.equal(kontext._position_ids(square), uno._position_ids(square))
    assert not torch.allclose(kontext.velocity(x, sigma, cond), v)

    names = [n for n, p in uno.transformer.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert len(names) == len(list(uno.trainable_parameters()))
    assert not any(p.requires_grad for p in uno.vae.parameters())
    # the model's final proj_out is not a block layer: no LoRA on it
    assert not any(n.startswith("proj_out.lora") for n in names)
    counts = uno.parameter_counts()
    # double block: 12 targets, single block: q, k, v, proj_mlp, proj_out
    assert counts["lora_layers"] == 12 + 5


def test_decode_range_and_shape(flux_dir: Path) -> None:
    pol = make_policy(flux_dir)
    img = pol.decode(torch.randn(5, *pol.latent_shape()))
    assert img.shape == (5, 3, 16, 16) and img.min() >= 0 and img.max() <= 1


def test_grpo_step_only_lora_changes_and_ratio_is_one(flux_dir: Path) -> None:
    pol = make_policy(flux_dir, gradient_checkpointing=True)
    modules = {"transformer": pol.transformer, "vae": pol.vae}
    before = {
        f"{m}.{n}": p.detach().clone()
        for m, mod in modules.items()
        for n, p in mod.named_parameters()
    }
    group, eta, steps = 3, 0.4, 4
    cond = pol.encode_condition(refs(), PROMPTS)
    sigmas = sigma_schedule(steps, 3.0)
    gen = torch.Generator().manual_seed(0)
    roll = sample_groups(pol, cond, group, sigmas=sigmas, eta=eta, generator=gen)
    assert roll.latents.shape == (steps + 1, 2 * group, 16, 16)
    assert torch.isfinite(roll.log_probs).all()

    images = pol.decode(roll.final)
    r_id = images.mean(dim=(1, 2, 3))  # a toy "identity" reward
    r_p = images[:, 0].mean(dim=(1, 2)) - images[:, 2].mean(dim=(1, 2))  # toy "prompt" reward
    a_id, a_p = group_advantages(r_id, group), group_advantages(r_p, group)
    assert a_id.abs().sum() > 0

    weighting = make_weighting("tdw")
    opt = torch.optim.AdamW(pol.trainable_parameters(), lr=1e-2)
    train_steps = [0, 2, 3]
    for t in train_steps:
        s, s_next = float(sigmas[t]), float(sigmas[t + 1])
        x = roll.latents[t]
        v = pol.velocity(x, torch.full((x.shape[0],), s), roll.condition)
        _, logp, _, _ = sde_step(
            x, v, s, sigma_next=s_next, eta=eta, prev_sample=roll.latents[t + 1]
        )
        # unchanged weights: the recomputed log-prob is the recorded one, ratio exactly 1
        assert torch.equal(logp.detach(), roll.log_probs[t])
        w_id, w_p = weighting.weights(t, steps)
        loss, stats = grpo_loss(
            logp,
            roll.log_probs[t],
            sars(a_id, a_p, w_id, w_prompt=w_p),
            clip_range=1e-4,
            adv_clip=5.0,
        )
        assert stats["ratio_mean"] == 1.0 and stats["clip_fraction"] == 0.0
        (loss / len(train_steps)).backward()
    assert all(p.grad is None for n, p in pol.transformer.named_parameters() if "lora_" not in n)
    torch.nn.utils.clip_grad_norm_(list(pol.trainable_parameters()), 1.0)
    opt.step()

    changed = {
        f"{m}.{n}"
        for m, mod in modules.items()
        for n, p in mod.named_parameters()
        if not torch.equal(p.detach(), before[f"{m}.{n}"])
    }
    assert changed, "the update changed nothing"
    assert all("lora_" in n for n in changed), sorted(n for n in changed if "lora_" not in n)
    assert any("lora_B" in n for n in changed)

    x = roll.latents[1]
    sig = torch.full((x.shape[0],), float(sigmas[1]))
    assert not torch.allclose(
        pol.velocity(x, sig, roll.condition), pol.reference_velocity(x, sig, roll.condition)
    )
    # reference_velocity leaves the adapter on and trainable afterwards
    assert all(p.requires_grad for p in pol.trainable_parameters())


def test_lora_safetensors_round_trip_and_merge(flux_dir: Path, tmp_path: Path) -> None:
    a = make_policy(flux_dir)
    randomise_lora(a)
    path = a.save_lora(tmp_path / "lora.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        assert f.metadata()["lora_rank"] == "4"
    assert keys and all(k.startswith("transformer.") and ".lora_" in k for k in keys)

    b = make_policy(flux_dir)
    b.load_lora(path)
    sa, sb = a.trainable_state_dict(), b.trainable_state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    cond = a.encode_condition(refs(), PROMPTS)
    x = torch.randn(2, *a.latent_shape())
    sig = torch.tensor([0.7, 0.3])
    va = a.velocity(x, sig, cond)
    assert torch.equal(b.velocity(x, sig, cond), va)

    # the same LoRA merged as a starting LoRA reproduces the adapted model
    c = make_policy(flux_dir, start_lora=str(path))
    vc = c.velocity(x, sig, cond)
    assert torch.allclose(vc, va, atol=1e-5)
    assert torch.equal(c.reference_velocity(x, sig, cond), vc)

    with pytest.raises(ValueError, match="rank"):
        make_policy(flux_dir, lora_rank=2).load_lora(path)


@pytest.mark.parametrize("alpha", [8.0, 2.0])
def test_exported_lora_loads_in_diffusers_at_the_trained_scale(
    flux_dir: Path, tmp_path: Path, alpha: float
) -> None:
    """diffusers' FluxPipeline.load_lora_weights reads the exported file's adapter
    metadata: with alpha != rank the velocity equals the policy's (and after fuse_lora)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from cgrpo.policies.random_flux import random_flux

    a = make_policy(flux_dir, lora_alpha=alpha)  # rank 4: scale alpha / 4 != 1
    randomise_lora(a)
    path = a.save_lora(tmp_path / "lora.safetensors")
    parts = random_flux("tiny", seed=0)  # the same weights as flux_dir
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), **parts)
    pipe.load_lora_weights(str(path))
    b = make_policy(flux_dir)
    b.transformer = pipe.transformer  # the policy's forward on diffusers' adapted model
    cond = a.encode_condition(refs(), PROMPTS)
    x = torch.randn(2, *a.latent_shape())
    sig = torch.tensor([0.7, 0.3])
    va = a.velocity(x, sig, cond)
    assert not torch.allclose(va, a.reference_velocity(x, sig, cond), atol=1e-3)
    torch.testing.assert_close(b.velocity(x, sig, cond), va, atol=1e-5, rtol=1e-4)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    torch.testing.assert_close(b.velocity(x, sig, cond), va, atol=1e-5, rtol=1e-4)


def test_prompt_cache_runs_t5_once_per_prompt(flux_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "prompts"
    pol = make_policy(flux_dir, prompt_cache_dir=str(cache))
    rows: list[int] = []
    t5 = pol.text_encoders.module("text_encoder_2")
    t5.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0]]
    seq, pooled = pol.encode_prompts(prompts)
    assert sum(rows) == 2 and torch.equal(seq[0], seq[2]) and not torch.equal(seq[0], seq[1])
    assert len(list(cache.glob("*.safetensors"))) == 2
    pol.encode_prompts(prompts + ["a cat wearing a hat"])
    assert sum(rows) == 3

    # a fresh policy reads the cache and never even loads the text encoders
    fresh = make_policy(flux_dir, prompt_cache_dir=str(cache))
    seq2, pooled2 = fresh.encode_prompts(prompts)
    assert fresh.text_encoders.modules["text_encoder_2"] is None
    assert torch.equal(seq2, seq) and torch.equal(pooled2, pooled)


def test_merge_xlabs_style_lora_as_uno_ships_it(flux_dir: Path, tmp_path: Path) -> None:
    """UNO's dit_lora.safetensors uses XLabs-style processor keys (fused qkv, attention-only
    proj in single blocks); the merge must land on the matching diffusers layers."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(3)
    r, d = 2, 32

    def pair(out: int, inp: int = d) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(r, inp, generator=g), torch.randn(out, r, generator=g)

    sd = {}
    for key, out in [
        ("double_blocks.0.processor.qkv_lora1", 3 * d),
        ("double_blocks.0.processor.proj_lora1", d),
        ("double_blocks.0.processor.qkv_lora2", 3 * d),
        ("double_blocks.0.processor.proj_lora2", d),
        ("single_blocks.0.processor.qkv_lora", 3 * d),
        ("single_blocks.0.processor.proj_lora", d),
    ]:
        sd[f"{key}.down.weight"], sd[f"{key}.up.weight"] = pair(out)
    save_file(sd, str(tmp_path / "dit_lora.safetensors"))

    base = make_policy(flux_dir)
    merged = make_policy(flux_dir, start_lora=str(tmp_path / "dit_lora.safetensors"))
    w0 = dict(base.transformer.named_parameters())
    w1 = dict(merged.transformer.named_parameters())

    def delta(name: str) -> torch.Tensor:
        return w1[f"{name}.base_layer.weight"] - w0[f"{name}.base_layer.weight"]

    qkv = sd["double_blocks.0.processor.qkv_lora1.up.weight"]
    down = sd["double_blocks.0.processor.qkv_lora1.down.weight"]
    assert torch.allclose(delta("transformer_blocks.0.attn.to_k"), qkv[d : 2 * d] @ down, atol=1e-5)
    up, down = (sd[f"single_blocks.0.processor.proj_lora.{k}.weight"] for k in ("up", "down"))
    proj = delta("single_transformer_blocks.0.proj_out")
    assert torch.allclose(proj[:, :d], up @ down, atol=1e-5)
    assert (proj[:, d:] == 0).all()  # the MLP half of the fused projection is untouched
    assert (delta("transformer_blocks.0.ff.net.2") == 0).all()


@pytest.mark.parametrize("name", ["uno_syncd.yaml", "kontext_syncd.yaml"])
def test_shipped_configs_parse(name: str) -> None:
    """The shipped FLUX configs load as a TrainConfig with the released settings
    (docs/paper-fidelity.md): SynCD training pairs read as released, DreamBench evaluation,
    UNO's LoRA, the clean prediction rewarded, 14 of 24 transitions trained, 3 updates per
    rollout."""
    from cgrpo.config.core import load_config
    from cgrpo.config.docs import undocumented_keys
    from cgrpo.method.weighting import TimeAwareWeights
    from cgrpo.run.config import TrainConfig

    cfg = load_config(TrainConfig, Path(__file__).resolve().parents[2] / "configs" / name)
    flux = cfg.flux
    assert cfg.model.kind == "flux" and cfg.data.kind == "jsonl"
    assert cfg.data.path == "datasets/train_1w_syncd_embedding.json"
    assert cfg.data.image_root == "datasets/syncd" and not cfg.data.allow_eval_overlap
    assert cfg.data.fields == {"reference": "ref_img", "prompt": "text", "target": "img",
                               "name": "id"}  # fmt: skip
    assert cfg.data.eval_root and cfg.data.prompts_per_subject == 25
    assert flux.lora_rank == 512 and flux.resolution == 512 and flux.lora_preset == "uno"
    assert (cfg.sampler.ode_tail, cfg.sampler.reward_image) == (1, "clean")
    assert (cfg.data.prompts_per_step, cfg.grpo.updates_per_rollout) == (8, 3)
    assert flux.position_scheme == name.split("_")[0]
    assert undocumented_keys(TrainConfig) == []
    assert (cfg.sampler.num_steps, cfg.sampler.shift, cfg.sampler.eta) == (25, 3.0, 0.4)
    assert (cfg.grpo.group_size, cfg.grpo.clip_range, cfg.grpo.adv_clip) == (12, 1e-4, 5.0)
    assert cfg.grpo.timestep_fraction == 0.6 and cfg.method.shaping.gamma == 0.4
    assert (cfg.method.shaping.kind, cfg.method.weighting.kind) == ("sars", "tdw")
    assert cfg.method.weighting == TimeAwareWeights()  # the paper's 25-step constants
    assert list(cfg.rewards) == ["identity", "prompt"]
    assert (cfg.rewards["identity"]["kind"], cfg.rewards["prompt"]["kind"]) == ("dinov2", "hpsv3")
    identity = cfg.rewards["identity"]
    assert (identity["segmenter"], identity["seg_mode"], identity["seg_crop"]) == (
        "u2netp", "reference", "frame")  # fmt: skip
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.grad_clip) == (2e-5, 1.1e-4, 1.0)


def test_bfloat16_weights_keep_float32_lora(flux_dir: Path) -> None:
    pol = make_policy(flux_dir, dtype="bfloat16")
    assert pol.transformer.x_embedder.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in pol.trainable_parameters())
    cond = pol.encode_condition(refs(), PROMPTS)
    x = torch.randn(2, *pol.latent_shape())
    v = pol.velocity(x, torch.tensor([0.9, 0.4]), cond)
    assert v.dtype == torch.float32 and torch.isfinite(v).all()
    v.square().mean().backward()
    grads = [p.grad for p in pol.trainable_parameters()]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_trainer_runs_flux_policy_and_checkpoints_only_lora(flux_dir: Path, tmp_path: Path) -> None:
    """The one trainer on the FLUX policy: rollout, rewards, SARS + TDW update, checkpoint
    of the LoRA weights only, resume into a fresh policy."""
    from cgrpo.io import checkpoint as ckpt
    from cgrpo.train.trainer import GRPOTrainer
    from tests.conftest import flux_train_config

    cfg = flux_train_config(
        flux_dir, tmp_path, "run.steps=2", "run.checkpoint_every=1", "run.image_every=1"
    )
    trainer = GRPOTrainer(cfg)
    frozen = {n: p.detach().clone() for n, p in trainer.policy.transformer.named_parameters()}
    summary = trainer.train(quiet=True)
    assert set(summary) >= {"base", "trained"} and summary["trained"]["pairs"] == 2
    changed = [
        n
        for n, p in trainer.policy.transformer.named_parameters()
        if not torch.equal(p.detach(), frozen[n])
    ]
    assert changed and all("lora_" in n for n in changed)
    last = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    tensors, state, _ = ckpt.load_checkpoint(last)
    assert int(state["step"]) == 2
    assert tensors and all("lora_" in k for k in tensors)
    fresh = GRPOTrainer(cfg)
    fresh.load(last)
    for k, v in fresh.policy.trainable_state_dict().items():
        assert torch.equal(v, tensors[k])


def test_random_flux_presets_have_flux_dev_sizes() -> None:
    """The ``full`` preset is FLUX.1-dev's transformer and VAE (the counts docs/gpu.md
    computes memory from); built on the meta device, so nothing is allocated."""
    from cgrpo.policies.random_flux import random_flux

    full = random_flux("full", torch.bfloat16, device="meta")
    assert sum(p.numel() for p in full["transformer"].parameters()) == 11_901_408_320
    assert sum(p.numel() for p in full["vae"].parameters()) == 83_819_683
    assert full["transformer"].x_embedder.weight.dtype == torch.bfloat16
    assert torch.get_default_dtype() == torch.float32  # restored
    medium = random_flux("medium", device="meta")["transformer"]
    assert (len(medium.transformer_blocks), len(medium.single_transformer_blocks)) == (2, 4)
    assert medium.config.num_attention_heads * medium.config.attention_head_dim == 3072
    with pytest.raises(ValueError, match="unknown FLUX preset 'huge'"):
        random_flux("huge")


def smoke_args(flux_dir: Path, out: Path, listing: Path, images: Path, db: Path) -> list[str]:
    """docs/gpu.md's smoke recipe: configs/uno_syncd.yaml on a random tiny FLUX folder with
    the colour rewards, on a SynCD-format folder, evaluated on DreamBench."""
    here = Path(__file__).resolve().parents[2]
    return [
        "train", "--config", str(here / "configs" / "uno_syncd.yaml"), "--quiet",
        "model.device=cpu", f"flux.path={flux_dir}", "flux.start_lora=null",
        "flux.prompt_cache_dir=null", "flux.resolution=64", "flux.lora_rank=8",
        "flux.uno_ref_size=64",  # UNO prepares a 512 px reference: too many tokens for a CPU
        f"data.path={listing}", f"data.image_root={images}", f"data.eval_root={db}",
        "data.prompts_per_step=1", "data.prompts_per_subject=1",
        "grpo.group_size=3", "sampler.num_steps=4", "run.eval_steps=2", "run.threads=1",
        "rewards.identity={kind: colour}", "rewards.prompt={kind: colour, measure: redness}",
        "run.steps=2", f"run.out_dir={out}",
    ]  # fmt: skip


def test_gpu_smoke_recipe_trains_on_syncd_and_evaluates_on_dreambench(
    flux_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The paper config trains 2 steps (3 updates each) on a SynCD-format folder, checkpoints
    the LoRA and evaluates on DreamBench's 30 subjects; with an evaluation pair in the
    training list it stops at start with the overlap line and writes no checkpoint."""
    from cgrpo.cli import main
    from tests.data.test_syncd import DREAMBENCH, syncd_record, write_syncd

    if not (DREAMBENCH / "single_reference.json").is_file():
        pytest.skip(f"DreamBench not found at {DREAMBENCH}")
    records = [syncd_record("14551", "0", "a red post box on a highway."),
               syncd_record("29507", "1", "a red donut on a plate.")]  # fmt: skip
    listing, images = write_syncd(tmp_path / "datasets", records)
    run = tmp_path / "run"
    assert main(smoke_args(flux_dir, run, listing, images, DREAMBENCH)) == 0
    assert (run / "checkpoints" / "step_000002").is_dir()
    summary = json.loads((run / "eval.json").read_text())
    assert summary["trained"]["pairs"] == 30  # one prompt for each DreamBench subject
    metrics = (run / "metrics.csv").read_text()
    assert "clip_fraction" in metrics.splitlines()[0]
    records.append(syncd_record("9", "2", "a backpack in the jungle",
                                ref=str(DREAMBENCH / "backpack" / "02.jpg")))  # fmt: skip
    listing, images = write_syncd(tmp_path / "leaky", records)
    capsys.readouterr()
    assert main(smoke_args(flux_dir, tmp_path / "leak", listing, images, DREAMBENCH)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 of the 30 evaluation pairs" in err
    assert "data.allow_eval_overlap=true" in err
    assert not (tmp_path / "leak" / "checkpoints").exists()
