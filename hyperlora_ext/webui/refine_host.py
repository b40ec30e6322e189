"""Refine inside the WebUI: the loaded SDXL checkpoint as refine's host (A1111 1.10, Forge 2).

- A1111 (sgm): the UNet is ``sd_model.model.diffusion_model``, ``apply_model(x, t, cond)`` its
  raw output, ``encode_first_stage`` + ``get_first_stage_encoding`` the scaled latents,
  ``get_learned_conditioning`` SDXL's ``crossattn``/``vector``. The Lora extension merges
  networks lazily into the weights: for training they are taken out (backups restored,
  ``loaded_networks`` emptied) and the list is put back afterwards, so the next generation
  merges again exactly as before.
- Forge 2: a clone of ``forge_objects_original.unet`` (no LoRA patch) refreshed so Forge takes
  every merged LoRA out of the shared weights, loaded whole on the GPU; the raw UNet is called
  with DDPM-scaled inputs and integer timesteps like sgm's. Forge loads the weights as inference
  tensors: the training session trains around copies and puts Forge's own tensors back.

While training the WebUI's ``queue_lock`` is held (generations wait), ``shared.state`` shows the
steps in the progress bar and ``/sdapi/v1/progress``, and Interrupt stops after the current
micro-batch.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.facts import TRIGGER_WORDS
from hyperlora_ext.refine.crops import FacePhoto, make_crops
from hyperlora_ext.refine.host import Cond, RefineModel
from hyperlora_ext.refine.save import refine_record, refined_name, save_refined
from hyperlora_ext.refine.schedule import Prediction
from hyperlora_ext.refine.trainer import RefineResult, RefineSettings, Trainer, encode_crops
from hyperlora_ext.store import IdentityStore
from hyperlora_ext.webui.adapter import unsupported_reason

JOB = "hyperlora-refine"
CAPTION = f"{TRIGGER_WORDS}, a photo of a person"
_running = threading.Lock()  # one refine at a time, whoever asks


class RefineBusyError(HyperLoRAError):
    """Another refine is running, or the WebUI stayed busy too long."""


@dataclass(frozen=True)
class WebUIRefineSettings:
    steps: int = 50
    learning_rate: float = 1e-4
    resolution: int = 768
    jitters: int = 2
    seed: int = 0
    batch_size: int = 4
    micro_batch: int | None = None
    caption: str = CAPTION

    def trainer_settings(self) -> RefineSettings:
        return RefineSettings(
            steps=self.steps, learning_rate=self.learning_rate, batch_size=self.batch_size,
            micro_batch=self.micro_batch, seed=self.seed,
        )  # fmt: skip


# ----------------------------------------------------------------- the model, per WebUI
def _as_cond(value: Any) -> Cond:
    if isinstance(value, Mapping):
        return {key: tensor for key, tensor in value.items() if isinstance(tensor, torch.Tensor)}
    return {"crossattn": value}


def _prompts(prompts: list[str], size: int) -> Any:
    """A1111's SdConditioning (prompt list carrying the image size SDXL conditions on)."""
    try:
        from modules.prompt_parser import SdConditioning
    except ImportError:
        return prompts
    return SdConditioning(prompts, width=size, height=size)


def _encoders(sd_model: Any, size: int) -> dict[str, Any]:
    """The VAE encoder and text conditioning, the same calls generation uses."""

    vae = getattr(sd_model, "first_stage_model", None)  # A1111; Forge's VAE casts by itself

    def encode_images(pixels: torch.Tensor) -> torch.Tensor:
        if isinstance(vae, torch.nn.Module):
            weight = next(vae.parameters())
            pixels = pixels.to(weight.device, weight.dtype)  # e.g. an fp32 VAE (--no-half-vae)
        return sd_model.get_first_stage_encoding(sd_model.encode_first_stage(pixels))

    def encode_prompts(prompts: list[str]) -> Cond:
        return _as_cond(sd_model.get_learned_conditioning(_prompts(prompts, size)))

    return {"encode_images": encode_images, "encode_prompts": encode_prompts}


def _checkpoint_hash(sd_model: Any) -> str:
    info = getattr(sd_model, "sd_checkpoint_info", None)
    return str(getattr(info, "shorthash", None) or getattr(sd_model, "sd_model_hash", "") or "")


def a1111_model(sd_model: Any, size: int) -> RefineModel:
    from modules import devices, lowvram

    if lowvram.is_enabled(sd_model):
        raise HyperLoRAError(
            "refining cannot run with --lowvram or --medvram (they move UNet blocks in and out "
            "of the GPU during the forward pass); restart the WebUI without them"
        )
    unet = sd_model.model.diffusion_model

    def denoise(x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        with devices.autocast():
            return sd_model.apply_model(x_t, t, cond).float()

    prediction: Prediction = "v" if getattr(sd_model, "parameterization", "eps") == "v" else "eps"
    return RefineModel(
        unet=unet, denoise=denoise, alphas_cumprod=sd_model.alphas_cumprod.float().cpu(),
        prediction=prediction, device=next(unet.parameters()).device,
        dtype=next(unet.parameters()).dtype, checkpoint_hash=_checkpoint_hash(sd_model),
        **_encoders(sd_model, size),
    )  # fmt: skip


def forge_model(sd_model: Any, size: int) -> RefineModel:
    from backend import memory_management

    if memory_management.vram_state in (
        memory_management.VRAMState.LOW_VRAM, memory_management.VRAMState.NO_VRAM
    ):  # fmt: skip
        raise HyperLoRAError(
            "refining cannot run in Forge's low-VRAM mode (UNet weights stream in per layer); "
            "restart Forge without --always-low-vram / --always-no-vram"
        )
    patcher = sd_model.forge_objects_original.unet.clone()
    patcher.refresh_loras()  # no LoRA patches: Forge restores its weight backups
    memory_management.load_models_gpu([patcher])
    kmodel, device = patcher.model, memory_management.get_torch_device()
    unet = kmodel.diffusion_model
    if kmodel.storage_dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise HyperLoRAError(
            f"refining needs a checkpoint stored in fp16, bf16 or fp32, not {kmodel.storage_dtype}"
            " (quantised fp8/NF4/GGUF weights cannot be trained around)"
        )
    if any(p.device != device for p in unet.parameters()):
        raise HyperLoRAError(
            "Forge kept part of the UNet outside the GPU; raise 'GPU Weights' at the top of the "
            "page (or free VRAM) so the whole UNet fits, then refine again"
        )
    dtype = kmodel.computation_dtype
    predictor = kmodel.predictor
    if predictor.prediction_type not in ("epsilon", "v_prediction"):
        raise HyperLoRAError(f"refining does not support {predictor.prediction_type} models")

    def denoise(x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        out = unet(x_t.to(dtype), t.float(), context=cond["crossattn"].to(dtype),
                   y=cond["vector"].to(dtype))  # fmt: skip
        return out.float()

    return RefineModel(
        unet=unet, denoise=denoise, alphas_cumprod=predictor.alphas_cumprod.float().cpu(),
        prediction="v" if predictor.prediction_type == "v_prediction" else "eps",
        device=device, dtype=dtype, checkpoint_hash=_checkpoint_hash(sd_model),
        **_encoders(sd_model, size),
    )  # fmt: skip


def loaded_model(sd_model: Any) -> Any:
    """The checkpoint a generation would use now. Forge 2 loads it on the first generation
    (until then ``shared.sd_model`` is a placeholder, not SDXL): load it the same way, with
    ``forge_model_reload`` (a no-op once loaded). A1111 loads on access: ``sd_model`` as given."""
    try:
        from modules import sd_models
    except ImportError:
        return sd_model
    reload = getattr(sd_models, "forge_model_reload", None)
    return sd_model if reload is None else reload()[0]


def refine_model(sd_model: Any, size: int) -> RefineModel:
    """The checkpoint loaded in this WebUI as refine's host; refuses what cannot be trained."""
    reason = unsupported_reason(sd_model)
    if reason:
        raise HyperLoRAError(f"cannot refine: {reason}")
    if getattr(sd_model, "forge_objects", None) is not None:
        return forge_model(sd_model, size)
    return a1111_model(sd_model, size)


# --------------------------------------------------------- what training must not see
@contextmanager
def networks_unmerged(sd_model: Any) -> Iterator[None]:
    """A1111: no file LoRA or identity merged into the weights while training.

    Restores every layer's backup and empties ``loaded_networks``; afterwards the list is put
    back and A1111 merges lazily on the next generation, as it does after any weight change.
    """
    networks = sys.modules.get("networks")
    if networks is None or not hasattr(networks, "loaded_networks"):
        yield
        return
    saved = list(networks.loaded_networks)
    networks.loaded_networks.clear()
    try:
        with torch.no_grad():
            for module in (getattr(sd_model, "network_layer_mapping", None) or {}).values():
                if getattr(module, "network_weights_backup", None) is not None or getattr(
                    module, "network_bias_backup", None
                ) is not None:  # fmt: skip
                    networks.network_restore_weights_from_backup(module)
                    module.network_current_names = ()
        yield
    finally:
        networks.loaded_networks[:] = saved


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """sgm's and Forge's VAE encoders sample the latents with the global RNG: seed it for the
    encoding, so one seed gives the same refine twice; the WebUI's RNG state is put back."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


@contextmanager
def offloaded(modules: Sequence[Any], device: torch.device) -> Iterator[None]:
    """Move the encoders to the CPU while training on a GPU (values are unchanged by moving)."""
    movable = [
        m
        for m in modules
        if isinstance(m, torch.nn.Module) and next(m.parameters(), None) is not None
    ]
    if device.type != "cuda" or not movable:
        yield
        return
    homes = [next(m.parameters()).device for m in movable]
    for module in movable:
        module.to("cpu")
    torch.cuda.empty_cache()
    try:
        yield
    finally:
        for module, home in zip(movable, homes, strict=True):
            module.to(home)


# --------------------------------------------------------------- the WebUI's job state
@contextmanager
def exclusive(hold_queue_lock: bool = True) -> Iterator[None]:
    """One refine at a time; with ``hold_queue_lock`` generations wait until it is done, and the
    refine waits its turn behind generations already queued (the WebUI's ``FIFOLock`` has no
    timeout: ``acquire(blocking=True)`` only).

    Callers already inside the queue (``wrap_gradio_gpu_call``) pass ``hold_queue_lock=False``:
    the lock is not re-entrant.
    """
    if not _running.acquire(blocking=False):
        raise RefineBusyError("a refine is already running; wait for it to finish")
    with ExitStack() as stack:
        stack.callback(_running.release)
        if hold_queue_lock:
            from modules import call_queue

            call_queue.queue_lock.acquire()
            stack.callback(call_queue.queue_lock.release)
        yield


@contextmanager
def webui_job(steps: int) -> Iterator[tuple[Any, Any]]:
    """``(progress, should_stop)`` wired to ``shared.state`` for the duration of the job."""
    from modules import shared

    state = shared.state
    state.begin(job=JOB)
    state.job_count, state.job_no = 1, 0
    state.sampling_steps, state.sampling_step = steps, 0
    state.textinfo = "HyperLoRA: encoding the photos for refining"

    def progress(done: int, total: int, loss: float) -> None:
        state.sampling_step = done
        state.textinfo = f"HyperLoRA refine: step {done}/{total}, loss {loss:.4f}"

    def should_stop() -> bool:
        return bool(getattr(state, "interrupted", False))

    try:
        yield progress, should_stop
    finally:
        state.end()


def refine_in_webui(
    sd_model: Any,
    lora: Mapping[str, torch.Tensor],
    photos: Sequence[FacePhoto],
    settings: WebUIRefineSettings | None = None,
    *,
    hold_queue_lock: bool = True,
) -> RefineResult:
    """Refine ``lora`` on the loaded checkpoint from ``photos``; the UNet is given back exactly.

    The one call the API route and the accordion make. Raises HyperLoRAError subclasses with a
    message for the user; ``result.interrupted`` says Interrupt was pressed (the LoRA is then
    as of the last completed step).
    """
    settings = settings or WebUIRefineSettings()
    trainer_settings = settings.trainer_settings()
    trainer_settings.check()
    crops = [c for p in photos for c in make_crops(p, settings.resolution, settings.jitters,
                                                   settings.seed)]  # fmt: skip
    with exclusive(hold_queue_lock), webui_job(settings.steps) as (progress, should_stop):
        sd_model = loaded_model(sd_model)
        model = refine_model(sd_model, settings.resolution)
        with networks_unmerged(sd_model):
            with seeded(settings.seed):
                data = encode_crops(model, crops, settings.caption)
            encoders = [getattr(sd_model, "conditioner", None),
                        getattr(sd_model, "first_stage_model", None)]  # fmt: skip
            with offloaded(encoders, model.device):
                trainer = Trainer(model, lora, data, trainer_settings)
                return trainer.run(progress, should_stop)


@dataclass(frozen=True)
class RefineOutcome:
    """What the API answers and the accordion shows. ``saved`` is None when nothing was saved
    (interrupted: the user stopped it, so the half-trained LoRA is not kept)."""

    saved: str | None
    result: RefineResult

    def response(self) -> dict[str, Any]:
        record = refine_record(self.result)
        return {
            "name": self.saved, "steps": self.result.steps_done, "loss": record["loss_curve"],
            "interrupted": self.result.interrupted, "seconds": record["seconds"],
            "micro_batch": self.result.micro_batch,
        }  # fmt: skip


def refine_saved_identity(
    sd_model: Any,
    store: IdentityStore,
    name: str,
    photos: Sequence[FacePhoto],
    settings: WebUIRefineSettings | None = None,
    *,
    save_name: str | None = None,
    overwrite: bool = False,
    hold_queue_lock: bool = True,
) -> RefineOutcome:
    """Refine saved identity ``name`` from ``photos`` and save it as ``save_name``
    (default ``NAME-refined``). The target name is checked before the training starts."""
    target = save_name or refined_name(name)
    if store.exists(target) and not overwrite:
        raise HyperLoRAError(
            f"an identity named {target!r} exists; choose another save name or allow overwriting"
        )
    lora = store.load(name).lora
    result = refine_in_webui(sd_model, lora, photos, settings, hold_queue_lock=hold_queue_lock)
    if result.interrupted:
        return RefineOutcome(None, result)
    return RefineOutcome(
        save_refined(store, name, result, target, overwrite=overwrite).name, result
    )
