"""``flux.lora_preset``: the paper's (UNO's) LoRA on diffusers' FLUX transformer.

UNO (``uno/flux/modules/layers.py``) puts a LoRA on the fused qkv and the output
projection of each stream of a double block, and on the fused qkv and the whole
``linear2`` (attention + MLP) of a single block. The ``uno`` preset fuses diffusers'
separate q/k/v first; these tests check its size against UNO's construction on FLUX.1-dev's
shape, its outputs against the unfused model, and every path that touches those layers
(starting LoRA, old adapter, files, diffusers loading, gradients).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from cgrpo.config.core import load_config  # noqa: E402
from cgrpo.config.errors import ConfigError  # noqa: E402
from cgrpo.policies.flux.config import FluxConfig  # noqa: E402
from cgrpo.policies.flux.lora import inject_lora  # noqa: E402
from cgrpo.policies.flux.policy import FluxPolicy  # noqa: E402
from tests.conftest import PROMPTS  # noqa: E402

#: FLUX.1-dev's transformer (black-forest-labs/FLUX.1-dev transformer/config.json)
FLUX_DEV = dict(
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    in_channels=64,
    guidance_embeds=True,
)


def uno_lora_size(rank: int, *, hidden: int, mlp_hidden: int, double: int, single: int) -> int:
    """LoRA parameters of UNO's ``set_lora`` on every block, from its layers.py.

    ``LoRALinearLayer(in, out, rank)`` holds ``down`` (rank x in) and ``up`` (out x rank):
    ``rank (in + out)``. DoubleStreamBlockLoraProcessor: ``qkv_lora1/2`` (dim -> 3 dim) and
    ``proj_lora1/2`` (dim -> dim); SingleStreamBlockLoraProcessor: ``qkv_lora`` (dim -> 3 dim)
    and ``proj_lora`` (15360 = dim + mlp_hidden -> dim).
    """

    def layer(n_in: int, n_out: int) -> int:
        return rank * (n_in + n_out)

    per_double = 2 * (layer(hidden, 3 * hidden) + layer(hidden, hidden))
    per_single = layer(hidden, 3 * hidden) + layer(hidden + mlp_hidden, hidden)
    return double * per_double + single * per_single


def diffusers_all_size(rank: int, *, hidden: int, mlp_hidden: int, double: int, single: int) -> int:
    """LoRA parameters of ``diffusers_all`` from diffusers' FLUX layer shapes: a double block's
    q, k, v, out of both streams (8 x dim -> dim) and both MLPs (dim -> mlp -> dim); a single
    block's q, k, v (3 x dim -> dim), ``proj_mlp`` (dim -> mlp), ``proj_out`` (dim + mlp -> dim)."""

    def layer(n_in: int, n_out: int) -> int:
        return rank * (n_in + n_out)

    mlp = layer(hidden, mlp_hidden) + layer(mlp_hidden, hidden)
    per_double = 8 * layer(hidden, hidden) + 2 * mlp
    per_single = 3 * layer(hidden, hidden) + layer(hidden, mlp_hidden)
    per_single += layer(hidden + mlp_hidden, hidden)
    return double * per_double + single * per_single


def meta_flux_dev(preset: str, rank: int = 512) -> torch.nn.Module:
    """FLUX.1-dev's transformer on the meta device (no memory) with the preset's LoRA,
    injected by the production :func:`inject_lora` (new layers go to meta too)."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(**FLUX_DEV)
        inject_lora(model, FluxConfig(lora_rank=rank, lora_preset=preset))
    return model


def lora_layer_shapes(model: torch.nn.Module, block: str) -> list[tuple[int, int]]:
    """(in, out) of each LoRA'd linear layer of one block (from lora_A: r x in, lora_B: out x r)."""
    shapes = []
    for name, mod in model.named_modules():
        if name.startswith(block + ".") and hasattr(mod, "lora_A") and "default" in mod.lora_A:
            shapes.append((mod.lora_A["default"].in_features, mod.lora_B["default"].out_features))
    return sorted(shapes)


def lora_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)


def test_uno_preset_is_unos_lora_on_flux_dev() -> None:
    sizes = dict(hidden=3072, mlp_hidden=4 * 3072, double=19, single=38)
    model = meta_flux_dev("uno")
    assert lora_count(model) == uno_lora_size(512, **sizes) == 956_301_312
    # layer by layer as UNO's processors: (in, out) of qkv_lora*/proj_lora*
    d = 3072
    assert lora_layer_shapes(model, "transformer_blocks.0") == sorted([(d, 3 * d), (d, d)] * 2)
    assert lora_layer_shapes(model, "single_transformer_blocks.37") == [(d, 3 * d), (15360, d)]
    assert lora_layer_shapes(model, "transformer_blocks.18") != []


def test_diffusers_all_preset_size_on_flux_dev() -> None:
    sizes = dict(hidden=3072, mlp_hidden=4 * 3072, double=19, single=38)
    model = meta_flux_dev("diffusers_all")
    assert lora_count(model) == diffusers_all_size(512, **sizes) == 2_091_909_120


# ------------------------------------------------------------------- the tiny random model


def make_policy(path: Path, **kw) -> FluxPolicy:
    base = dict(path=str(path), dtype="float32", resolution=16, lora_rank=4)
    base.update(max_sequence_length=8, **kw)
    return FluxPolicy(FluxConfig(**base), "cpu")


def inputs(policy: FluxPolicy) -> tuple[torch.Tensor, torch.Tensor, object]:
    g = torch.Generator().manual_seed(5)
    refs = torch.rand(2, 3, 20, 24, generator=g)
    x = torch.randn(2, *policy.latent_shape(), generator=g)
    return x, torch.tensor([0.8, 0.4]), policy.encode_condition(refs, PROMPTS)


def randomise_lora(policy: FluxPolicy, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_uno_preset_starts_as_the_unfused_model(flux_dir: Path) -> None:
    """Fusing q/k/v changes no number: with B = 0 the fused model's velocity is the
    unfused one's (and the plain base's), and only the UNO layers carry a LoRA."""
    uno, plain = make_policy(flux_dir, lora_preset="uno"), make_policy(flux_dir)
    x, sigma, cond = inputs(plain)
    v = plain.velocity(x, sigma, cond)
    torch.testing.assert_close(uno.velocity(x, sigma, cond), v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(uno.reference_velocity(x, sigma, cond), v, atol=1e-5, rtol=1e-5)
    block = uno.transformer.transformer_blocks[0].attn
    assert not hasattr(block, "to_q") and not hasattr(block, "add_k_proj")  # no second copy
    d = 32
    assert lora_layer_shapes(uno.transformer, "transformer_blocks.0") == sorted(
        [(d, 3 * d), (d, d)] * 2
    )
    assert lora_layer_shapes(uno.transformer, "single_transformer_blocks.0") == [
        (d, 3 * d),
        (5 * d, d),
    ]
    # UNO's LoRALinearLayer initialises down ~ N(0, 1/r); up (B) is zero
    a = torch.cat([p.flatten() for n, p in uno.transformer.named_parameters() if "lora_A" in n])
    assert abs(a.std().item() - 1 / 4) < 0.1 / 4
    assert all((p == 0).all() for n, p in uno.transformer.named_parameters() if "lora_B" in n)


def test_uno_lora_is_one_rank_r_update_of_the_fused_qkv(flux_dir: Path) -> None:
    """A trained ``uno`` LoRA equals adding ``alpha / r * B @ A`` to the concatenated
    [W_q; W_k; W_v] (rows split back onto the separate layers) of an unfused model."""
    uno = make_policy(flux_dir, lora_preset="uno", lora_alpha=2.0)
    randomise_lora(uno)
    plain = make_policy(flux_dir)  # its own LoRA is zero: the base model
    x, sigma, cond = inputs(uno)
    params = dict(plain.transformer.named_parameters())
    fused_rows = {"to_qkv": ("to_q", "to_k", "to_v")}
    fused_rows["to_added_qkv"] = ("add_q_proj", "add_k_proj", "add_v_proj")
    with torch.no_grad():
        for name, mod in uno.transformer.named_modules():
            if not (hasattr(mod, "lora_A") and "default" in mod.lora_A):
                continue
            delta = 0.5 * mod.lora_B["default"].weight @ mod.lora_A["default"].weight
            parent, _, leaf = name.rpartition(".")
            if leaf in fused_rows:
                for sep, rows in zip(fused_rows[leaf], delta.chunk(3), strict=True):
                    params[f"{parent}.{sep}.base_layer.weight"].add_(rows)
            else:
                params[f"{name}.base_layer.weight"].add_(delta)
    v = uno.velocity(x, sigma, cond)
    assert not torch.allclose(v, uno.reference_velocity(x, sigma, cond), atol=1e-3)
    torch.testing.assert_close(plain.velocity(x, sigma, cond), v, atol=1e-5, rtol=1e-4)


def test_uno_lora_file_round_trip_and_diffusers(flux_dir: Path, tmp_path: Path) -> None:
    """The file holds the split (stock FLUX) layers, loads back into a ``uno`` policy,
    into diffusers' FluxPipeline at the same velocity, and as a starting LoRA; a LoRA with
    independent q/k/v does not load into a fused adapter."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from safetensors import safe_open

    from cgrpo.policies.random_flux import random_flux

    a = make_policy(flux_dir, lora_preset="uno", lora_alpha=8.0)
    randomise_lora(a)
    path = a.save_lora(tmp_path / "uno.safetensors")
    with safe_open(str(path), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert not any("qkv" in k for k in keys)
    assert "transformer.transformer_blocks.0.attn.add_v_proj.lora_B.weight" in keys
    assert "attn.to_qkv" in meta["lora_targets"].split(",")

    b = make_policy(flux_dir, lora_preset="uno")
    b.load_lora(path)
    sa, sb = a.trainable_state_dict(), b.trainable_state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    x, sigma, cond = inputs(a)
    va = a.velocity(x, sigma, cond)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), **random_flux("tiny"))
    pipe.load_lora_weights(str(path))
    stock = make_policy(flux_dir)
    stock.transformer = pipe.transformer
    torch.testing.assert_close(stock.velocity(x, sigma, cond), va, atol=1e-5, rtol=1e-4)
    started = make_policy(flux_dir, lora_preset="uno", start_lora=str(path))
    torch.testing.assert_close(started.reference_velocity(x, sigma, cond), va, atol=1e-5, rtol=1e-4)

    other = make_policy(flux_dir)
    randomise_lora(other)
    with pytest.raises(ValueError, match="not a split fused-qkv LoRA.*diffusers_all"):
        b.load_lora(other.save_lora(tmp_path / "all.safetensors"))


def test_uno_preset_merges_unos_start_lora_before_fusing(flux_dir: Path, tmp_path: Path) -> None:
    """UNO's dit_lora layout (qkv LoRAs, a single-block proj_lora over attention + MLP):
    merged into the unfused layers first, the fused model is that merged model."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(7)
    d, r = 32, 2
    sd = {}
    for key, n_in, n_out in [
        ("double_blocks.0.processor.qkv_lora1", d, 3 * d),
        ("double_blocks.0.processor.proj_lora1", d, d),
        ("double_blocks.0.processor.qkv_lora2", d, 3 * d),
        ("double_blocks.0.processor.proj_lora2", d, d),
        ("single_blocks.0.processor.qkv_lora", d, 3 * d),
        ("single_blocks.0.processor.proj_lora", 5 * d, d),
    ]:
        sd[f"{key}.down.weight"] = torch.randn(r, n_in, generator=g) * 0.3
        sd[f"{key}.up.weight"] = torch.randn(n_out, r, generator=g) * 0.3
    save_file(sd, str(tmp_path / "dit_lora.safetensors"))
    start = str(tmp_path / "dit_lora.safetensors")
    uno = make_policy(flux_dir, lora_preset="uno", start_lora=start)
    plain = make_policy(flux_dir, start_lora=start)
    base = make_policy(flux_dir)
    x, sigma, cond = inputs(plain)
    v = plain.reference_velocity(x, sigma, cond)
    assert not torch.allclose(v, base.reference_velocity(x, sigma, cond), atol=1e-3)
    torch.testing.assert_close(uno.reference_velocity(x, sigma, cond), v, atol=1e-5, rtol=1e-4)
    with pytest.raises(RuntimeError, match="before the trainable LoRA"):
        uno.merge_lora(start)


def test_uno_preset_old_adapter_and_gradients(flux_dir: Path) -> None:
    """nft's old adapter sits on the fused layers too; with gradient checkpointing every
    LoRA weight of the fused layers gets a gradient."""
    pol = make_policy(flux_dir, lora_preset="uno", gradient_checkpointing=True)
    assert pol.transformer.is_gradient_checkpointing
    randomise_lora(pol)
    pol.enable_old_policy()
    x, sigma, cond = inputs(pol)
    v = pol.velocity(x, sigma, cond)
    assert torch.equal(pol.old_velocity(x, sigma, cond), v.detach())
    v.square().mean().backward()
    named = {n: p for n, p in pol.transformer.named_parameters() if p.requires_grad}
    assert any(".to_qkv." in n for n in named) and any(".to_added_qkv." in n for n in named)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in named.values())
    with torch.no_grad():
        for p in pol.trainable_parameters():
            p.add_(0.1)
    assert not torch.allclose(pol.velocity(x, sigma, cond), pol.old_velocity(x, sigma, cond))


def test_preset_settings_fail_with_one_line() -> None:
    with pytest.raises(ValueError, match="flux.lora_preset must be one of uno, diffusers_all"):
        FluxConfig(lora_preset="paper")
    with pytest.raises(ConfigError, match="flux.lora_preset") as e:
        from cgrpo.run.config import TrainConfig

        load_config(TrainConfig, None, ["model.kind=flux", "flux.lora_preset=paper"])
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="read only with flux.lora_preset=custom"):
        FluxConfig(lora_preset="uno", lora_targets=["attn.to_q"])
    with pytest.raises(ValueError, match="flux.lora_targets is empty"):
        FluxConfig(lora_preset="custom")
    with pytest.raises(ValueError, match="fused .* and separate"):
        FluxConfig(lora_preset="custom", lora_targets=["attn.to_qkv", "attn.add_q_proj"])
    assert FluxConfig().lora_preset == "diffusers_all"  # the class's own default: unchanged
    custom = FluxConfig(lora_preset="custom", lora_targets=["attn.to_added_qkv"])
    assert custom.lora_target_names == ["attn.to_added_qkv"]


def test_custom_fused_target_on_the_tiny_model(flux_dir: Path) -> None:
    """A custom fused target fuses too: one LoRA on the text stream's qkv only."""
    pol = make_policy(flux_dir, lora_preset="custom", lora_targets=["attn.to_added_qkv"])
    assert pol.parameter_counts()["lora_layers"] == 1
    assert lora_layer_shapes(pol.transformer, "transformer_blocks.0") == [(32, 96)]
