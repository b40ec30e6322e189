"""The accordion's "Refine" control (in Advanced): train the chosen saved identity for a few steps
on the loaded checkpoint from the photos in the panel, save ``NAME-refined``, show the loss curve.
"Write training kit" writes the same photos as a kohya sd-scripts kit instead.

The click handler holds the WebUI's queue lock while training (it is not wrapped in
``wrap_gradio_gpu_call``, whose lock is not re-entrant); the steps show in ``/sdapi/v1/progress``
and the Interrupt button stops it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.encoders.images import image_label
from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.webui.refine_host import RefineOutcome, WebUIRefineSettings
from hyperlora_ext.webui.refine_likeness import LikenessPair

HINTS = {
    "steps": "Training steps of 4 face crops each; the authors' recipe is 50.",
    "learning_rate": "AdamW learning rate; 1e-4 is the recipe, higher learns faster but drifts.",
    "resolution": "Side of the square face crops in pixels (multiple of 8); 768 is the recipe.",
    "save_name": "Name of the new identity; empty: the saved identity's name + '-refined'.",
    "score": "Afterwards, one fixed-seed image with each identity, scored (2 extra images).",
}
PLOT_SIZE = (360, 160)
RESOLUTION = (64, 2048)  # pixels, a multiple of 8 (the VAE's factor)
Failure = Callable[[Exception], str]


@dataclass
class RefinePanel:
    steps: Any
    learning_rate: Any
    resolution: Any
    save_name: Any
    refine: Any
    kit: Any
    status: Any
    plot: Any
    score: Any

    def settings(self) -> list[Any]:
        return [self.steps, self.learning_rate, self.resolution, self.save_name]


def build(gr: Any, elem_id: Callable[[str], str]) -> RefinePanel:
    """The control's components (inside the Advanced accordion); wire them with :func:`wire`."""
    with gr.Accordion("Refine (train ~50 steps from the prediction)", open=False,
                      elem_id=elem_id("refine")):  # fmt: skip
        gr.Markdown(
            "Trains the **Saved identity** chosen above on this checkpoint from the **Reference "
            "photos** (the ones it was made from) and saves the result as a new identity. "
            "SDXL only; generations wait meanwhile; Interrupt stops it (nothing is saved)."
        )
        with gr.Row():
            steps = gr.Number(
                value=50,
                precision=0,
                label="Steps",
                info=HINTS["steps"],
                elem_id=elem_id("refine_steps"),
            )
            learning_rate = gr.Number(
                value=1e-4,
                label="Learning rate",
                info=HINTS["learning_rate"],
                elem_id=elem_id("refine_lr"),
            )
            resolution = gr.Number(
                value=768,
                precision=0,
                label="Resolution",
                info=HINTS["resolution"],
                elem_id=elem_id("refine_resolution"),
            )
        save_name = gr.Textbox(
            value="",
            label="Save as",
            placeholder="NAME-refined",
            info=HINTS["save_name"],
            elem_id=elem_id("refine_save_name"),
        )
        score = gr.Checkbox(False, label="Score likeness before/after", info=HINTS["score"],
                            elem_id=elem_id("refine_score"))  # fmt: skip
        with gr.Row():
            refine = gr.Button("Refine", variant="primary", elem_id=elem_id("refine_run"))
            kit = gr.Button("Write training kit", elem_id=elem_id("refine_kit"))
        # Not "..._status": tests and hooks find the accordion's main status line by that ending.
        status = gr.Markdown("", elem_id=elem_id("refine_result"))
        plot = gr.Image(
            label="Loss per step",
            type="pil",
            interactive=False,
            visible=False,
            elem_id=elem_id("refine_loss"),
        )
    return RefinePanel(
        steps, learning_rate, resolution, save_name, refine, kit, status, plot, score
    )


def wire(gr: Any, panel: RefinePanel, inputs: Sequence[Any], failure: Failure) -> None:
    """``inputs``: the accordion's argument components (HyperLoRAArgs order); ``failure``: the
    accordion's status text for an exception."""

    def on_refine(*values: Any) -> tuple[str, Any]:
        status, plot = refine_click(failure, *values)
        return status, gr.update(value=plot, visible=plot is not None)

    def on_kit(*values: Any) -> str:
        return kit_click(failure, *values)

    controls = [*panel.settings(), *inputs]
    outputs = [panel.status, panel.plot]
    panel.refine.click(on_refine, inputs=[panel.score, *controls], outputs=outputs)
    panel.kit.click(on_kit, inputs=controls, outputs=[panel.status])


# -------------------------------------------------------------------------- handlers
def refine_click(
    failure: Failure,
    score: bool,
    steps: Any,
    learning_rate: Any,
    resolution: Any,
    save_name: str,
    *values: Any,
) -> tuple[str, Image.Image | None]:
    """The Refine button: (status Markdown, loss plot or None). Never raises."""
    from hyperlora_ext.webui import host, refine_actions, refine_likeness

    try:
        args = HyperLoRAArgs.from_positional(list(values))
        settings = WebUIRefineSettings(
            steps=_whole("Steps", steps),
            learning_rate=_rate(learning_rate),
            resolution=_resolution(resolution),
        )
        outcome = refine_actions.refine(
            host.services(),
            _sd_model(),
            _identity(args),
            _photos(args),
            settings,
            save_name=(save_name or "").strip() or None,
        )
        pair = refine_likeness.after_refine(
            host.services(), _sd_model(), args.identity, outcome.saved, bool(score)
        )
    except Exception as error:  # a button's edge: every failure in the status line
        return failure(error), None
    return outcome_text(outcome, pair), loss_plot(outcome.result.losses)


def kit_click(
    failure: Failure, steps: Any, learning_rate: Any, resolution: Any, save_name: str, *values: Any
) -> str:
    """The kit button: write ``outputs/hyperlora-kits/NAME``; the status names the folder."""
    from hyperlora_ext.refine.kit import KitSettings
    from hyperlora_ext.webui import host, refine_actions

    try:
        args = HyperLoRAArgs.from_positional(list(values))
        settings = KitSettings(
            steps=_whole("Steps", steps),
            learning_rate=_rate(learning_rate),
            resolution=_resolution(resolution),
        )
        kit = refine_actions.kit(
            host.services(),
            _identity(args),
            _photos(args),
            settings,
            kit_name=(save_name or "").strip() or None,
        )
    except Exception as error:
        return failure(error)
    return (
        f"Training kit written to `{kit.folder}` ({kit.images} crops): run `train.sh` or "
        "`train.bat` there from your sd-scripts folder (set the checkpoint path first)."
    )


def outcome_text(outcome: RefineOutcome, pair: LikenessPair) -> str:
    result, losses = outcome.result, outcome.result.losses
    curve = f"loss {losses[0]:.4f} → {losses[-1]:.4f}" if losses else "no step done"
    run = f"{result.steps_done} steps in {result.seconds:.1f} s, {curve}"
    if outcome.saved is None:
        return f"Refine stopped after {run}; nothing was saved."
    return (
        f"Saved `{outcome.saved}` ({run}, micro-batch {result.micro_batch}): pick it under "
        f"'Saved identity' (Refresh) or use `<lora:{outcome.saved}:1>`. {likeness_text(pair)}"
    )


def likeness_text(pair: LikenessPair) -> str:
    if pair.before is None and pair.after is None:
        return f"Likeness {pair.note}."
    shown = ["no face" if v is None else f"{v:.3f}" for v in (pair.before, pair.after)]
    return f"Likeness {shown[0]} before, {shown[1]} after ({pair.note})."


def loss_plot(losses: Sequence[float], size: tuple[int, int] = PLOT_SIZE) -> Image.Image | None:
    """A small line plot of the loss per step (white background), or None without steps."""
    if not losses:
        return None
    width, height = size
    left, right, top, bottom = 8, 8, 18, 18
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0
    steps = max(len(losses) - 1, 1)
    points = [
        (left + (width - left - right) * i / steps,
         top + (height - top - bottom) * (high - value) / span)
        for i, value in enumerate(losses)
    ]  # fmt: skip
    draw.rectangle((left, top, width - right, height - bottom), outline=(200, 200, 200))
    if len(points) > 1:
        draw.line(points, fill=(30, 90, 200), width=2)
    for x, y in points[:: max(1, len(points) // 50)]:
        draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=(30, 90, 200))
    draw.text((left, 2), f"loss: max {high:.4f}, min {low:.4f}", fill="black")
    draw.text((left, height - bottom + 3), f"steps 1 to {len(losses)}", fill="black")
    return image


# --------------------------------------------------------------------------- helpers
def _identity(args: HyperLoRAArgs) -> str:
    if not args.identity:
        raise HyperLoRAError(
            "choose the identity to refine under 'Saved identity' (save one first with "
            "'Save as LoRA'), and keep its photos under 'Reference photos'"
        )
    return args.identity


def _photos(args: HyperLoRAArgs) -> Any:
    from hyperlora_ext.webui.refine_actions import PhotoSet

    return PhotoSet(
        args.images,
        [image_label(i, s) for i, s in enumerate(args.images)],
        args.photo_weights,
        args.face,
        args.face_index,
        "photos",
    )


def _sd_model() -> Any:
    from modules import shared

    return shared.sd_model


def _whole(label: str, value: Any) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HyperLoRAError(f"{label} must be a whole number, got {value!r}") from None
    if number != int(number) or number < 1:
        raise HyperLoRAError(f"{label} must be a whole number of at least 1, got {value!r}")
    return int(number)


def _resolution(value: Any) -> int:
    side = _whole("Resolution", value)
    low, high = RESOLUTION
    if side % 8 or not low <= side <= high:
        raise HyperLoRAError(f"Resolution must be a multiple of 8 from {low} to {high}, got {side}")
    return side


def _rate(value: Any) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = 0.0
    if not 0 < rate <= 1e-2:
        raise HyperLoRAError(
            f"Learning rate must be above 0 and at most 0.01 (1e-4 is the recipe), got {value!r}"
        )
    return rate
