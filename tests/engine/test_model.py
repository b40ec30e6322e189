"""HyperLoRAModel against an independent float64 implementation of the reference math
(docs/reference-pipeline.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from hyperlora_ext.engine.model import HyperLoRAModel, default_dtype, load_hyperlora
from tests.factories import tiny_modules, write_tiny_hyperlora

PARTS = ("to_q", "to_k", "to_v", "to_out_0")
DIM_HEAD = 64


# ------------------------------------------------ float64 reference (no engine code)


def _layer_norm(t, state, prefix):
    mean = t.mean(-1, keepdim=True)
    var = ((t - mean) ** 2).mean(-1, keepdim=True)
    return (t - mean) / torch.sqrt(var + 1e-5) * state[f"{prefix}.weight"] + state[f"{prefix}.bias"]


def _attention(state, prefix, queries, context):
    q = queries @ state[f"{prefix}.to_q.weight"].T
    k = context @ state[f"{prefix}.to_k.weight"].T
    v = context @ state[f"{prefix}.to_v.weight"].T
    heads = q.shape[-1] // DIM_HEAD
    outs = []
    for h in range(heads):
        cols = slice(h * DIM_HEAD, (h + 1) * DIM_HEAD)
        scores = q[..., cols] @ k[..., cols].transpose(-1, -2) / math.sqrt(DIM_HEAD)
        outs.append(torch.softmax(scores, dim=-1) @ v[..., cols])
    return torch.cat(outs, dim=-1) @ state[f"{prefix}.to_out.0.weight"].T


def _linear(t, state, prefix):
    return t @ state[f"{prefix}.weight"].T + state[f"{prefix}.bias"]


def reference_lora(folder, id_embeds, clip_states, weights=None) -> dict[str, torch.Tensor]:
    """Straightforward float64 rendering of the reference pipeline on the files in ``folder``.

    ``weights``: the photos' relative weights; the plain mean becomes sum(w_i x_i) / sum(w_i).
    """
    modules = json.loads((folder / "hyper_lora_modules.json").read_text())
    load = lambda name: {k: v.double() for k, v in load_file(str(folder / name)).items()}  # noqa: E731
    res, proj, bases = (
        load("resampler.safetensors"),
        load("id_projector.safetensors"),
        load("hyper_lora_modules.safetensors"),
    )
    n, width = id_embeds.shape[0], proj["2.weight"].shape[0]
    x = _linear(id_embeds.double().reshape(n, 1, -1), proj, "0").reshape(n, -1, width)
    x = _linear(_layer_norm(x, proj, "2"), res, "proj_in")
    y = _linear(clip_states.double(), res, "proj_in_2")
    latents = res["latents"].repeat(n, 1, 1)
    depth = len({k.split(".")[1] for k in res if k.startswith("layers.")})
    for i in range(depth):
        p = f"layers.{i}."
        h = _layer_norm(latents, res, p + "norm_attn1")
        latents = latents + _attention(res, p + "attn1", h, h)
        latents = latents + _attention(
            res,
            p + "attn2",
            _layer_norm(latents, res, p + "norm_attn2_l"),
            _layer_norm(x, res, p + "norm_attn2_x"),
        )
        latents = latents + _attention(
            res,
            p + "attn3",
            _layer_norm(latents, res, p + "norm_attn3_l"),
            _layer_norm(y, res, p + "norm_attn3_y"),
        )
        hidden = _linear(_layer_norm(latents, res, p + "norm_ff"), res, p + "ff.net.0.proj")
        hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
        latents = latents + _linear(hidden, res, p + "ff.net.2")
    tokens = _linear(latents, res, "proj_out")
    if weights is None:
        tokens = tokens.mean(0, keepdim=True)
    else:
        w = torch.tensor(weights, dtype=torch.float64).reshape(-1, 1, 1)
        tokens = (tokens * w).sum(0, keepdim=True) / w.sum()
    tokens = tokens / torch.sqrt((tokens**2).sum(-1, keepdim=True) + 1e-8)
    rank = bases["0.to_q.id_down_basis"].shape[2]
    lora = {}
    for m, name in enumerate(modules):
        t = tokens[:, 8 * m : 8 * m + 8]
        for j, (layer, part) in enumerate(
            zip(("to_q", "to_k", "to_v", "to_out"), PARTS, strict=True)
        ):
            down = torch.einsum("bi,ijk->bjk", t[:, 2 * j], bases[f"{m}.{layer}.id_down_basis"])
            up = torch.einsum("bi,ijk->bjk", t[:, 2 * j + 1], bases[f"{m}.{layer}.id_up_basis"])
            lora[f"{name}_{part}.alpha"] = torch.tensor(rank * 0.5)
            lora[f"{name}_{part}.lora_down.weight"] = down[0].T
            lora[f"{name}_{part}.lora_up.weight"] = up[0].T
    return lora


# ---------------------------------------------------------------- helpers


def _inputs(n: int, seed: int = 1, width: int = 32):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.nn.functional.normalize(torch.randn(n, 512, generator=gen), dim=-1)
    return ids, torch.randn(n, 257, width, generator=gen)


def _max_error(lora, ref) -> float:
    """Largest deviation over all matrices, relative to the largest reference value."""
    keys = [k for k in ref if not k.endswith("alpha")]
    scale = max(ref[k].abs().max().item() for k in keys)
    return max((lora[k].double() - ref[k]).abs().max().item() for k in keys) / scale


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_hyperlora(tmp_path_factory.mktemp("hyperlora") / "tiny")


@pytest.fixture(scope="module")
def model32(folder) -> HyperLoRAModel:
    return load_hyperlora(folder, dtype=torch.float32)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("style", ["diffusers", "sgm"])
def test_keys_shapes_and_order(tmp_path, style):
    modules = tiny_modules(style)
    model = load_hyperlora(write_tiny_hyperlora(tmp_path, style=style), dtype=torch.float32)
    assert model.module_names == list(modules)
    assert (model.embedding_dim, model.rank, model.dtype) == (32, 4, torch.float32)
    lora = model.predict_lora(*_inputs(1))
    expected_keys = [
        f"{name}_{part}.{suffix}"
        for name in modules
        for part in PARTS
        for suffix in ("alpha", "lora_down.weight", "lora_up.weight")
    ]
    assert list(lora) == expected_keys
    for name, info in modules.items():
        hidden, kv_in = info["hidden_size"], info["cross_attention_dim"] or info["hidden_size"]
        for part in PARTS:
            width_in = kv_in if part in ("to_k", "to_v") else hidden
            alpha = lora[f"{name}_{part}.alpha"]
            assert alpha.shape == () and alpha.dtype == torch.float32 and alpha.item() == 2.0
            down, up = (
                lora[f"{name}_{part}.lora_down.weight"],
                lora[f"{name}_{part}.lora_up.weight"],
            )
            assert down.shape == (4, width_in) and up.shape == (hidden, 4)
            assert down.is_contiguous() and up.is_contiguous() and down.device.type == "cpu"
    save_file(lora, str(tmp_path / "out.safetensors"))  # no shared storage between tensors


@pytest.mark.parametrize("map_bases", [True, False])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_float32_matches_float64_reference(folder, n, map_bases):
    model = load_hyperlora(folder, dtype=torch.float32, map_bases=map_bases)
    ids, clip = _inputs(n, seed=n)
    assert _max_error(model.predict_lora(ids, clip), reference_lora(folder, ids, clip)) < 1e-5


@pytest.mark.parametrize("map_bases", [True, False])
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.bfloat16, 3e-2), (torch.float16, 4e-3)])
def test_low_precision_within_tolerance(folder, dtype, tolerance, map_bases):
    model = load_hyperlora(folder, dtype=dtype, map_bases=map_bases)
    ids, clip = _inputs(2)
    lora = model.predict_lora(ids, clip)
    assert all(v.dtype == dtype for k, v in lora.items() if not k.endswith("alpha"))
    error = _max_error(lora, reference_lora(folder, ids, clip))
    assert 0 < error < tolerance


def _file_backed(tensor: torch.Tensor, path) -> bool:
    """Whether ``tensor``'s memory is a mapping of the file ``path`` (Linux: /proc/self/maps)."""
    address = tensor.data_ptr()
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return len(fields) > 5 and fields[5] == str(path)
    return False


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_cpu_bases_stay_in_the_file_mapping(folder, dtype):
    model = load_hyperlora(folder, dtype=dtype)  # a CPU maps them by default
    bases = [g.basis(i) for g in model.bank.groups for i in range(len(g.members))]
    assert len(bases) == 4 * 2 * len(model.specs)
    assert all(b.dtype == torch.float16 for b in bases)  # the file's dtype: nothing converted
    assert not any(b.untyped_storage().resizable() for b in bases)  # not memory torch allocated
    if sys.platform == "linux":
        path = (folder / "hyper_lora_modules.safetensors").resolve()
        assert all(_file_backed(b, path) for b in bases)
    stacked = load_hyperlora(folder, dtype=dtype, map_bases=False)
    assert all(g.bases.dtype == dtype for g in stacked.bank.groups)
    ids, clip = _inputs(2)
    mapped_lora, stacked_lora = model.predict_lora(ids, clip), stacked.predict_lora(ids, clip)
    tolerance = 1e-6 if dtype == torch.float32 else 3e-2
    assert _max_error(mapped_lora, {k: v.double() for k, v in stacked_lora.items()}) < tolerance


def test_mapped_bases_need_a_cpu(folder):
    with pytest.raises(ValueError, match="CPU"):
        load_hyperlora(folder, device="meta", map_bases=True)


def test_batch_mean(model32):
    ids, clip = _inputs(3)
    single = model32.predict_lora(ids[:1], clip[:1])
    twice = model32.predict_lora(ids[[0, 0]], clip[[0, 0]])
    three = model32.predict_lora(ids, clip)
    shuffled = model32.predict_lora(ids[[2, 0, 1]], clip[[2, 0, 1]])
    for key in single:
        torch.testing.assert_close(twice[key], single[key], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(shuffled[key], three[key], rtol=1e-4, atol=1e-5)
    assert any(not torch.allclose(three[k], single[k], atol=1e-3) for k in single)


def test_id_embeds_with_token_axis(model32):
    ids, clip = _inputs(2)
    flat = model32.predict_lora(ids, clip)
    for key, value in model32.predict_lora(ids[:, None, :], clip).items():
        torch.testing.assert_close(value, flat[key])


@pytest.mark.parametrize(
    ("ids_shape", "clip_shape", "match"),
    [
        ((2, 511), (2, 257, 32), "id_embeds"),
        ((0, 512), (0, 257, 32), "id_embeds"),
        ((2, 512), (1, 257, 32), "clip_hidden_states"),
        ((2, 512), (2, 257, 1024), "clip_hidden_states"),
    ],
)
def test_input_shapes_checked(model32, ids_shape, clip_shape, match):
    with pytest.raises(ValueError, match=match):
        model32.predict_lora(torch.zeros(ids_shape), torch.zeros(clip_shape))


def test_cross_attention_dim_zero_means_self_attention(tmp_path):
    modules = {
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1": {
            "hidden_size": 24,
            "cross_attention_dim": 0,
            "ignored": "extra fields are ignored",
        }
    }
    model = load_hyperlora(write_tiny_hyperlora(tmp_path, modules=modules), dtype=torch.float32)
    lora = model.predict_lora(*_inputs(1))
    name = next(iter(modules))
    assert lora[f"{name}_to_k.lora_down.weight"].shape == (4, 24)


def test_sizes_derived_from_tensors(tmp_path):
    folder = write_tiny_hyperlora(
        tmp_path, embedding_dim=40, rank=6, hyper_dim=12, depth=3, heads=1, num_id_tokens=3
    )
    model = load_hyperlora(folder, dtype=torch.float32)
    assert (model.embedding_dim, model.rank, len(model.resampler.blocks)) == (40, 6, 3)
    ids, clip = _inputs(2, width=40)
    assert _max_error(model.predict_lora(ids, clip), reference_lora(folder, ids, clip)) < 1e-5


def test_default_dtype(folder):
    assert default_dtype("cpu") in (torch.bfloat16, torch.float32, torch.float16)
    assert default_dtype("cuda") == torch.float16
    assert load_hyperlora(folder, device="cpu").dtype == default_dtype("cpu")


def test_to_and_nbytes(folder, model32):
    assert model32.to("cpu") is model32 and model32.device == torch.device("cpu")
    stacked = load_hyperlora(folder, dtype=torch.float32, map_bases=False)
    bases = sum(g.bases.numel() for g in stacked.bank.groups) * 4
    assert stacked.nbytes() > bases > 0
    half = load_hyperlora(folder, dtype=torch.bfloat16, map_bases=False)
    assert half.nbytes() < 0.6 * stacked.nbytes()
    assert model32.nbytes() < stacked.nbytes()  # mapped bases stay fp16, as in the file
    assert stacked.mapped_nbytes() == 0 and model32.mapped_nbytes() == bases // 2


def test_to_moves_every_tensor_of_the_model(folder):
    model = load_hyperlora(folder, dtype=torch.float32)
    for module in model.modules():  # no tensor kept outside the buffers, which .to() moves
        assert not [k for k, v in vars(module).items() if isinstance(v, torch.Tensor)], module
    count = len(list(model.buffers()))
    assert model.to("meta") is model and model.device == torch.device("meta")
    assert [t.device.type for t in model.buffers()] == ["meta"] * count


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cuda_matches_cpu(folder, model32, dtype):
    model = load_hyperlora(folder, device="cuda", dtype=dtype)
    ids, clip = _inputs(2)
    lora = model.predict_lora(ids, clip)
    assert all(v.device.type == "cpu" for v in lora.values())
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    assert _max_error(lora, reference_lora(folder, ids, clip)) < tolerance
    model.to("cpu")
    assert model.bank.groups[0].bases.device.type == "cpu"


def test_import_stays_light():
    code = (
        "import sys, hyperlora_ext\n"
        "hyperlora_ext.load_hyperlora, hyperlora_ext.HyperLoRAModel\n"
        "hyperlora_ext.load_clip_vision, hyperlora_ext.default_dtype\n"
        "heavy = [m for m in ('insightface', 'onnxruntime', 'gradio', 'transformers') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("file_dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mapped_bases_of_any_file_dtype_match_the_stacked_ones(tmp_path, file_dtype, dtype):
    folder = write_tiny_hyperlora(tmp_path / "m", dtype=file_dtype)
    mapped = load_hyperlora(folder, dtype=dtype, map_bases=True)
    stacked = load_hyperlora(folder, dtype=dtype, map_bases=False)
    ids, clip = _inputs(2)
    mapped_lora, stacked_lora = mapped.predict_lora(ids, clip), stacked.predict_lora(ids, clip)
    assert all(v.dtype == dtype for k, v in mapped_lora.items() if not k.endswith("alpha"))
    tolerance = 1e-6 if dtype == torch.float32 else 3e-2
    assert _max_error(mapped_lora, {k: v.double() for k, v in stacked_lora.items()}) < tolerance
    reference = reference_lora(folder, ids, clip)
    assert _max_error(mapped_lora, reference) < (1e-5 if dtype == torch.float32 else 3e-2)
