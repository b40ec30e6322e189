"""HyperLoRAModel: a loaded model folder that turns face embeddings into an identity LoRA.

``load_hyperlora`` validates the headers of all three safetensors files first (cheap), then reads
each tensor once, casting it straight into its final place. ``predict_lora`` runs the reference
pipeline (docs/reference-pipeline.md): ID projector -> resampler (batch mean, or weighted mean,
over the photos) -> basis mixing, and returns the kohya LoRA dict. ``predict_tokens`` /
``lora_from_tokens`` are its two halves, split at the fusion point, so identities can be mixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..facts import BASES_FILE, ID_PROJECTOR_FILE, MODULES_JSON, RESAMPLER_FILE
from ..lora_format import LORA_PARTS
from .bases import TOKENS_PER_MODULE, BasisBank, expected_shapes
from .checkpoint import (
    ModuleSpec,
    check_state,
    header_shapes,
    open_safetensors,
    read_module_specs,
    shape_of,
)
from .cpu_dtype import cpu_choice, cpu_dtype
from .fusion import check_weights, nonzero_rows, normalise_tokens, weighted_mean
from .id_projector import IdProjector
from .resampler import DEFAULT_DIM_HEAD, Resampler, ResamplerConfig


def default_dtype(device: torch.device | str) -> torch.dtype:
    """The fastest dtype that keeps quality for ``device``.

    GPUs: float16 (the reference's default). CPUs: bfloat16 where the CPU has AMX-BF16 or
    AVX512-BF16 and torch has oneDNN, else float32 (a fixed rule, see cpu_dtype).
    """
    if torch.device(device).type != "cpu":
        return torch.float16
    return cpu_dtype()


class HyperLoRAModel(nn.Module):
    """A loaded HyperLoRA model (ID projector, resampler, grouped LoRA bases).

    Every tensor is a buffer of one of the three parts, so ``.to(device)`` moves them all in place.
    """

    def __init__(
        self,
        specs: list[ModuleSpec],
        id_projector: IdProjector,
        resampler: Resampler,
        bank: BasisBank,
        dtype: torch.dtype,
        fp16_mixing: bool = False,
    ):
        super().__init__()
        self.fp16_mixing = fp16_mixing  # mapped fp16 bases mixed in fp16 (bases.py)
        self.specs = specs
        self.id_projector = id_projector
        self.resampler = resampler
        self.bank = bank
        self.dtype = dtype

    def module(self) -> torch.nn.Module:
        """A view for hosts whose memory management sizes modules by their parameters (Forge):
        its parameters are this model's buffers and moving it moves this model."""
        view = self.__dict__.get("_parameter_view")  # not a submodule: .to() must not recurse
        if view is None:
            view = self.__dict__["_parameter_view"] = _ModelModule(self)
        return view

    @property
    def device(self) -> torch.device:
        """Where the tensors are (all on one device)."""
        return self.id_projector.linear_weight.device

    @property
    def module_names(self) -> list[str]:
        """LoRA name prefixes, in the JSON's key order."""
        return [spec.name for spec in self.specs]

    @property
    def embedding_dim(self) -> int:
        """Hidden size of the CLIP vision tokens this model expects (E)."""
        return self.resampler.config.embedding_dim

    @property
    def id_embed_dim(self) -> int:
        return self.id_projector.input_dim

    @property
    def rank(self) -> int:
        return self.bank.rank

    def nbytes(self) -> int:
        """Bytes of the model's tensors, the memory-mapped bases included."""
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def mapped_nbytes(self) -> int:
        """Bytes of the bases left in the file's memory map (the OS's file cache)."""
        return self.bank.mapped_nbytes()

    @torch.no_grad()
    def predict_lora(
        self,
        id_embeds: torch.Tensor,
        clip_hidden_states: torch.Tensor,
        weights: Sequence[float] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The identity LoRA of N photos, in kohya keys (the reference's order and dtypes).

        ``id_embeds``: (N, 512) or (N, 1, 512) normalised ArcFace embeddings;
        ``clip_hidden_states``: (N, S, E) CLIP ViT-L/14 ``hidden_states[-2]`` (S = 257).
        Row i of both is photo i. ``weights``: N relative weights >= 0 (not all 0) making the
        photos' fusion a weighted mean; None and equal weights give the reference's plain mean.
        """
        return self.lora_from_tokens(self.predict_tokens(id_embeds, clip_hidden_states, weights))

    @torch.no_grad()
    def predict_tokens(
        self,
        id_embeds: torch.Tensor,
        clip_hidden_states: torch.Tensor,
        weights: Sequence[float] | None = None,
    ) -> torch.Tensor:
        """The fused identity tokens (Q, H) float32 before the per-token normalisation.

        This is what identities are mixed by (:func:`fusion.weighted_mean` of several of them).
        Photos of weight 0 are left out before the resampler runs.
        """
        embeds, clip = self._check_inputs(id_embeds, clip_hidden_states)
        weights = check_weights(weights, embeds.shape[0])
        rows = nonzero_rows(weights, embeds.shape[0])
        if len(rows) < embeds.shape[0]:
            embeds, clip = embeds[rows], clip[rows]
            weights = [weights[i] for i in rows] if weights else None
        id_tokens = self.id_projector(embeds.to(self.device, self.dtype))
        per_photo = self.resampler.per_photo(id_tokens, clip.to(self.device, self.dtype))
        return weighted_mean(per_photo, weights)

    @torch.no_grad()
    def lora_from_tokens(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """The kohya LoRA of fused pre-normalisation ``tokens`` (Q, H)."""
        expected = (self.resampler.config.num_queries, self.resampler.config.output_dim)
        if tuple(tokens.shape) != expected:
            raise ValueError(
                f"identity tokens must be {list(expected)} for this model, got "
                f"{list(tokens.shape)}: they were made with another HyperLoRA model"
            )
        normalised = normalise_tokens(tokens.to(self.device, torch.float32))
        matrices = self.bank.mix(normalised, self.dtype, self.fp16_mixing)
        alpha = float(self.rank) * 0.5
        lora: dict[str, torch.Tensor] = {}
        for module, spec in enumerate(self.specs):
            for layer, part in enumerate(LORA_PARTS):
                pair = matrices[(module, layer)]
                key = f"{spec.name}_{part}"
                lora[f"{key}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
                lora[f"{key}.lora_down.weight"] = pair["down"]
                lora[f"{key}.lora_up.weight"] = pair["up"]
        return lora

    def _check_inputs(self, id_embeds: torch.Tensor, clip: torch.Tensor):
        width = self.id_embed_dim
        if id_embeds.dim() == 3 and id_embeds.shape[1] == 1:
            id_embeds = id_embeds[:, 0]
        if id_embeds.dim() != 2 or id_embeds.shape[1] != width or id_embeds.shape[0] == 0:
            raise ValueError(
                f"id_embeds must be (N, {width}) or (N, 1, {width}) with N >= 1, "
                f"got {list(id_embeds.shape)}"
            )
        n, e = id_embeds.shape[0], self.embedding_dim
        if clip.dim() != 3 or clip.shape[0] != n or clip.shape[2] != e:
            raise ValueError(
                f"clip_hidden_states must be ({n}, tokens, {e}) to match {n} id_embeds, "
                f"got {list(clip.shape)}"
            )
        return id_embeds, clip


class _ModelModule(torch.nn.Module):
    """The nn.Module view of a HyperLoRAModel (see ``HyperLoRAModel.module``).

    Its parameters are the model's tensors (Forge sizes a module by its ``named_parameters``);
    moving it (``.to`` / ``.cuda`` / ``.cpu``) moves the model.
    """

    def __init__(self, model: HyperLoRAModel):
        super().__init__()
        self.__dict__["hyperlora_model"] = model  # not a submodule: no tensors registered twice

    def _apply(self, fn, recurse=True):  # only the device of fn's result counts
        model = self.__dict__["hyperlora_model"]
        model.to(fn(torch.empty(0, device=model.device)).device)
        return self

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        for i, tensor in enumerate(self.__dict__["hyperlora_model"].buffers()):
            yield f"{prefix}tensor{i}", torch.nn.Parameter(tensor, requires_grad=False)

    def state_dict(self, *args, **kwargs):
        return {name: p.data for name, p in self.named_parameters()}


def load_hyperlora(
    folder: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    *,
    dim_head: int = DEFAULT_DIM_HEAD,
    map_bases: bool | None = None,
) -> HyperLoRAModel:
    """Load a released HyperLoRA model folder (e.g. ``sdxl_hyper_id_lora_v1_fidelity/``).

    ``dtype=None`` picks :func:`default_dtype` for ``device``. ``map_bases`` (default: on a CPU)
    leaves the 3 GB of LoRA bases in the file's memory map instead of copying them (see
    bases.py); a model that will be moved to a GPU should not map them. Raises CheckpointError
    naming the file, key and expected vs found shape when anything is missing or does not match.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: HyperLoRA model folder not found")
    device = torch.device(device)
    map_bases = device.type == "cpu" if map_bases is None else map_bases
    if map_bases and device.type != "cpu":
        raise ValueError(f"map_bases needs a CPU device, got {device}")
    dtype = dtype or default_dtype(device)
    specs = read_module_specs(folder / MODULES_JSON)
    paths = {name: folder / name for name in (RESAMPLER_FILE, ID_PROJECTOR_FILE, BASES_FILE)}
    with ExitStack() as stack:
        files = {name: stack.enter_context(open_safetensors(p)) for name, p in paths.items()}
        shapes = {name: header_shapes(paths[name], f) for name, f in files.items()}
        config, rank = _check_headers(paths, shapes, specs, dim_head)
        resampler = Resampler(config, _read_all(files, shapes, RESAMPLER_FILE), dtype, device)
        num_tokens = shapes[ID_PROJECTOR_FILE]["0.weight"][0] // config.embedding_dim
        weights = _read_all(files, shapes, ID_PROJECTOR_FILE)
        projector = IdProjector(weights, num_tokens, dtype, device)
        bank = BasisBank(specs, config.output_dim, rank)
        bank.load(files[BASES_FILE], dtype, device, mapped=map_bases)
    fp16_mixing = map_bases and dtype == torch.bfloat16 and cpu_choice().fp16_mixing
    return HyperLoRAModel(specs, projector, resampler, bank, dtype, fp16_mixing)


def check_model_folder(folder: str | Path, *, dim_head: int = DEFAULT_DIM_HEAD) -> None:
    """Check that a model folder's files belong together (headers only, nothing is loaded).

    Raises CheckpointError like :func:`load_hyperlora` would, e.g. for files of two releases.
    """
    folder = Path(folder)
    specs = read_module_specs(folder / MODULES_JSON)
    paths = {name: folder / name for name in (RESAMPLER_FILE, ID_PROJECTOR_FILE, BASES_FILE)}
    with ExitStack() as stack:
        files = {name: stack.enter_context(open_safetensors(p)) for name, p in paths.items()}
        shapes = {name: header_shapes(paths[name], f) for name, f in files.items()}
        _check_headers(paths, shapes, specs, dim_head)


def _read_all(files, shapes, name: str) -> dict[str, torch.Tensor]:
    """All tensors of one small file (resampler, ID projector), in the file's dtype."""
    return {key: files[name].get_tensor(key) for key in shapes[name]}


def _check_headers(paths, shapes, specs, dim_head) -> tuple[ResamplerConfig, int]:
    """Validate all three files against each other before any tensor data is read."""
    path = paths[RESAMPLER_FILE]
    config = ResamplerConfig.from_shapes(path, shapes[RESAMPLER_FILE], dim_head)
    check_state(path, shapes[RESAMPLER_FILE], config.expected_shapes())
    if config.num_queries != TOKENS_PER_MODULE * len(specs):
        raise CheckpointError(
            f"{path}: 'latents' has {config.num_queries} queries but {MODULES_JSON} lists "
            f"{len(specs)} modules ({TOKENS_PER_MODULE} queries each, expected "
            f"{TOKENS_PER_MODULE * len(specs)}); the files come from different models"
        )
    path = paths[ID_PROJECTOR_FILE]
    found = shapes[ID_PROJECTOR_FILE]
    check_state(path, found, IdProjector.expected_shapes(path, found, config.embedding_dim))
    path = paths[BASES_FILE]
    rank = shape_of(path, shapes[BASES_FILE], "0.to_q.id_down_basis", 3)[2]
    check_state(path, shapes[BASES_FILE], expected_shapes(specs, config.output_dim, rank))
    return config, rank
