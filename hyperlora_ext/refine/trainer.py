"""Refine an identity LoRA: ~50 AdamW steps on face crops, starting from the prediction.

Step 0 is the predicted identity (same pairs, rank and alpha). Every step draws ``batch_size``
crops (with replacement, in proportion to their photo weight), seeded timesteps (uniform over the
schedule) and noise, and minimises the masked MSE against the checkpoint's target. The batch runs
in micro-batches with gradient accumulation; out of memory halves the micro-batch and repeats the
step, down to 1. Latents and the caption's conditioning are computed once.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.refine.crops import Crop
from hyperlora_ext.refine.host import Cond, RefineModel
from hyperlora_ext.refine.inference_tensors import inference_bytes
from hyperlora_ext.refine.lora_path import TrainableLoRA, find_layers, group_layers
from hyperlora_ext.refine.schedule import masked_mse, noisy_latents, training_target
from hyperlora_ext.refine.session import training_session

Progress = Callable[[int, int, float], None]  # (steps done, steps, loss of the last step)


class RefineOutOfMemoryError(HyperLoRAError):
    """Out of memory even with one image per micro-batch."""


@dataclass(frozen=True)
class RefineSettings:
    steps: int = 50
    learning_rate: float = 1e-4
    batch_size: int = 4  # effective batch per step
    micro_batch: int | None = None  # images per forward pass; None: the whole batch
    seed: int = 0
    strength: float = 1.0  # LoRA multiplier while training (kohya trains at 1.0)
    gradient_checkpointing: bool = True

    def check(self) -> None:
        for field_name in ("steps", "batch_size"):
            if getattr(self, field_name) < 1:
                raise HyperLoRAError(f"refine {field_name} must be at least 1")
        if not self.learning_rate > 0:
            raise HyperLoRAError(f"refine learning rate must be above 0 (is {self.learning_rate})")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise HyperLoRAError("refine micro-batch must be at least 1")


@dataclass
class TrainingSet:
    """Encoded crops: latents (N, C, h, w), masks (N, 1, h, w), sampling weights (N,), cond."""

    latents: torch.Tensor
    masks: torch.Tensor
    weights: torch.Tensor
    cond: Cond
    labels: list[str] = field(default_factory=list)
    resolution: int = 0  # crop side in pixels


@dataclass
class RefineResult:
    lora: dict[str, torch.Tensor]  # kohya keys as given, float32 on CPU
    losses: list[float]
    steps_done: int
    interrupted: bool
    micro_batch: int
    seconds: float
    metadata: dict[str, str]


def _pixels(image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


@torch.no_grad()
def encode_crops(model: RefineModel, crops: Sequence[Crop], caption: str) -> TrainingSet:
    """Latents (one crop at a time: the VAE is the memory peak) and the caption, once."""
    if not crops:
        raise HyperLoRAError("refining needs at least one photo with a face")
    latents, masks = [], []
    for crop in crops:
        pixels = _pixels(crop.image)[None].to(model.device, model.dtype)
        latent = model.encode_images(pixels).float().clone()  # clone: leave inference mode
        latents.append(latent.cpu())
        mask = _pixels(crop.mask.convert("RGB"))[:1][None].add(1).div(2)
        masks.append(F.interpolate(mask, size=latent.shape[-2:], mode="area"))
    cond = {k: v.detach().clone() for k, v in model.encode_prompts([caption]).items()}
    weights = torch.tensor([c.weight for c in crops], dtype=torch.float64)
    labels = [c.label for c in crops]
    resolution = crops[0].image.width
    return TrainingSet(torch.cat(latents), torch.cat(masks), weights, cond, labels, resolution)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _cond_rows(cond: Cond, count: int, device: torch.device, dtype: torch.dtype) -> Cond:
    """The one caption's conditioning repeated for ``count`` images."""
    return {k: v[:1].expand(count, *v.shape[1:]).to(device, dtype) for k, v in cond.items()}


class _Stopped(Exception):
    pass


class Trainer:
    """One refine run; :meth:`run` may be called once."""

    def __init__(
        self,
        model: RefineModel,
        lora: Mapping[str, torch.Tensor],
        data: TrainingSet,
        settings: RefineSettings | None = None,
    ) -> None:
        self.settings = settings or RefineSettings()
        self.settings.check()
        self.model, self.data = model, data
        self.layers = find_layers(model.unet, list(group_layers(lora)))
        self.lora = TrainableLoRA(lora, self.settings.strength).to(model.device)
        self.micro_batch = min(self.settings.micro_batch or self.settings.batch_size,
                               self.settings.batch_size)  # fmt: skip
        # No weight decay: it would pull the identity towards zero, not towards the prediction.
        self.optimizer = torch.optim.AdamW(
            self.lora.parameters(), lr=self.settings.learning_rate, weight_decay=0.0
        )
        fp16_cuda = model.dtype == torch.float16 and model.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16_cuda)
        self.generator = torch.Generator().manual_seed(self.settings.seed)

    def run(
        self, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None
    ) -> RefineResult:
        stop = should_stop or (lambda: False)
        losses: list[float] = []
        start = time.perf_counter()
        interrupted = False
        checkpointing = self.settings.gradient_checkpointing
        # Callers may sit in no_grad or inference mode (WebUI request handlers do).
        with torch.inference_mode(False), torch.enable_grad(), ExitStack() as session:
            self._enter(session, checkpointing)
            for step in range(self.settings.steps):
                try:
                    losses.append(self._step(self._draw(), stop))
                except _Stopped:
                    interrupted = True
                    break
                if progress is not None:
                    progress(step + 1, self.settings.steps, losses[-1])
        self.optimizer.zero_grad(set_to_none=True)
        return RefineResult(
            self.lora.state(), losses, len(losses), interrupted, self.micro_batch,
            time.perf_counter() - start, self._metadata(losses),
        )  # fmt: skip

    def _enter(self, stack: ExitStack, checkpointing: bool) -> None:
        """Start the training session; out of memory while it copies the weights is clear."""
        unet = self.model.unet
        try:
            stack.enter_context(
                training_session(unet, self.lora, self.layers, gradient_checkpointing=checkpointing)
            )
        except Exception as exc:
            if not _is_oom(exc):
                raise
            _free_memory(self.model.device)
            size = inference_bytes(unet) / 2**30
            raise RefineOutOfMemoryError(
                f"out of memory copying the UNet's weights ({size:.1f} GiB) before refining: this "
                "WebUI loaded them as inference tensors, so training needs a second copy of them; "
                "free memory (close other programs, unload other models) and refine again"
            ) from None

    def _draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This step's crops, timesteps and noise, from the run's own generator."""
        batch = self.settings.batch_size
        index = torch.multinomial(self.data.weights, batch, True, generator=self.generator)
        steps = len(self.model.alphas_cumprod)
        t = torch.randint(0, steps, (batch,), generator=self.generator)
        noise = torch.randn((batch, *self.data.latents.shape[1:]), generator=self.generator)
        return index, t, noise

    def _step(self, draw, stop: Callable[[], bool]) -> float:
        while True:
            out_of_memory = False
            try:
                loss = self._accumulate(draw, stop)
            except _Stopped:
                self.optimizer.zero_grad(set_to_none=True)
                raise
            except Exception as exc:
                self.optimizer.zero_grad(set_to_none=True)
                if not _is_oom(exc):
                    raise
                out_of_memory = True
            if out_of_memory:  # outside the handler: its traceback held the activations
                self._shrink()
                continue
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            return loss

    def _shrink(self) -> None:
        _free_memory(self.model.device)
        if self.micro_batch == 1:
            raise RefineOutOfMemoryError(
                f"out of memory while refining, even with one image per pass at "
                f"{self.data.resolution} px: lower the resolution, turn on gradient "
                "checkpointing, or close other programs using the GPU"
            )
        self.micro_batch = max(1, self.micro_batch // 2)

    def _accumulate(self, draw, stop: Callable[[], bool]) -> float:
        index, t, noise = draw
        model, batch, total = self.model, self.settings.batch_size, 0.0
        x0 = self.data.latents[index]
        x_t = noisy_latents(x0, noise, model.alphas_cumprod, t)
        target = training_target(x0, noise, model.alphas_cumprod, t, model.prediction)
        mask = self.data.masks[index]
        for first in range(0, batch, self.micro_batch):
            if stop():
                raise _Stopped
            part = slice(first, first + self.micro_batch)
            count = len(index[part])
            cond = _cond_rows(self.data.cond, count, model.device, model.dtype)
            out = model.denoise(x_t[part].to(model.device, model.dtype), t[part].to(model.device),
                                cond)  # fmt: skip
            loss = masked_mse(out, target[part].to(out.device), mask[part].to(out.device))
            loss = loss.sum() / batch
            self.scaler.scale(loss).backward()
            total += float(loss.detach())
        return total

    def _metadata(self, losses: list[float]) -> dict[str, str]:
        s = self.settings
        record = {
            "steps": len(losses), "learning_rate": s.learning_rate, "batch_size": s.batch_size,
            "micro_batch": self.micro_batch, "seed": s.seed, "optimizer": "AdamW",
            "prediction": self.model.prediction, "resolution": self.data.resolution,
            "photos": sorted(set(self.data.labels)), "base_checkpoint": self.model.checkpoint_hash,
            "loss_curve": [round(v, 6) for v in losses],
        }  # fmt: skip
        return {"hyperlora_refine": json.dumps(record)}


def refine(
    model: RefineModel,
    lora: Mapping[str, torch.Tensor],
    crops: Sequence[Crop],
    caption: str,
    settings: RefineSettings | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RefineResult:
    """Encode ``crops`` once, then train ``lora`` on ``model``; the UNet comes back unchanged."""
    data = encode_crops(model, crops, caption)
    return Trainer(model, lora, data, settings).run(progress, should_stop)
