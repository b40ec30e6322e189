"""Whole jobs through the A1111 double with the identity pipeline stubbed (a helper module, not
a test module): the stub makes a hand-built LoRA per photo set, so the tests that use it cover
the script's glue and the adapter inside A1111's real call order; the pipeline itself is tested
elsewhere."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from hyperlora_ext.identity_value import Identity
from hyperlora_ext.lora_format import lora_digest
from hyperlora_ext.webui import host
from tests.webui.loras import make_lora

TARGET = "input_blocks.4.1.transformer_blocks.0.attn2.to_k"
ON = {"enabled": True, "images": ["alice.png"], "model": "tiny"}


def ours(names):
    return [n for n in names if n.startswith("hyperlora_")]


@dataclass(frozen=True)
class Prediction:
    """What the pipeline was asked: the photos, their weights and the options that matter."""

    images: tuple
    photo_weights: tuple
    model: str
    face: str


class StubPipeline:
    """The process-wide pipeline's ``predict`` and ``mix``, recording what they were asked."""

    def __init__(self, harness: Harness) -> None:
        self.harness, self.calls = harness, []  # calls: what mix was asked to mix
        self.labels = []  # the labels= of each predict and mix call

    def predict(
        self, images, options, *, before_compute=None, progress=None, weights=None, labels=None
    ):
        harness = self.harness
        self.labels.append(labels)
        harness.predictions.append(
            Prediction(tuple(images), tuple(weights or ()), options.model, options.face_choice)
        )
        harness.before_compute = before_compute
        for stage in harness.stages:  # what the real pipeline reports between its stages
            if progress is not None:
                progress(stage)
        seed = sum(map(ord, "".join(map(str, images)) + str(weights)))
        lora = make_lora(harness.model, seed=seed)
        return Identity(
            lora=lora, digest=lora_digest(lora), model=options.model, photos=1, seconds=0.01,
            tokens=torch.full((4, 3), float(seed)), dtype="fp32",
        )  # fmt: skip

    def mix(self, tokens, weights, model, labels=None):
        self.labels.append(labels)
        self.calls.append(([t.clone() for t in tokens], list(weights), model))
        seed = int(sum(w * t.sum() for w, t in zip(weights, tokens, strict=True)))
        lora = make_lora(self.harness.model, seed=seed)
        return Identity(
            lora=lora, digest=lora_digest(lora), model=model, tokens=torch.zeros(4, 3), dtype="fp32"
        )


class Harness:
    def __init__(self, webui, monkeypatch, kind="sdxl"):
        self.webui = webui
        self.model = webui.load_model(kind)
        self.script_class = webui.load_script()
        self.runner = webui.runner(self.script_class)
        self.predictions = []
        self.before_compute = None
        self.stages = ["reading photos", "detecting faces", "encoding with CLIP"]
        self.samples = []  # (is_hr_pass, network names, target weight) at each sampler step
        self.pipeline = StubPipeline(self)
        monkeypatch.setattr(host, "pipeline", lambda: self.pipeline)
        webui.processing.sampler_step_hooks[:] = [self._record]

    def _record(self, p, step):
        layer = self.model.model.diffusion_model.get_submodule(TARGET)
        names = [n.name for n in self.webui.networks.loaded_networks]
        self.samples.append((p.is_hr_pass, names, layer.weight.detach().clone()))

    def job(self, args=None, *, img2img=False, **kwargs):
        processing = self.webui.processing
        cls = processing.StableDiffusionProcessingTxt2Img
        kwargs.setdefault("prompt", "a photo of a person")
        p = cls(sd_model=self.model, scripts_runner=self.runner, **kwargs)
        p.script_args = [None, args] if isinstance(args, dict) else [None, *(args or [])]
        self.samples.clear()
        processed = processing.process_images(p)
        return p, processed

    def image(self, args=None, **kwargs):
        return self.job(args, **kwargs)[1].images[0]


def resolve(args) -> Identity:
    """The identity of ``args`` (HyperLoRAArgs) through the studio, as a job would make it."""
    from hyperlora_ext.webui import studio

    return studio.resolve(args, studio.Context(host.services()))


def build(webui, monkeypatch):
    """The accordion of a txt2img script in a gradio Blocks: (script, its input components)."""
    import gradio as gr

    def no_pipeline():
        raise AssertionError("ui() must not run the pipeline")

    monkeypatch.setattr(host, "pipeline", no_pipeline)
    script = webui.load_script()()
    script.is_img2img = False
    with gr.Blocks():
        inputs = script.ui(False)
    return script, inputs


def handler(demo, component):
    """The function a click on ``component`` runs, and its BlockFunction (gradio 3.41 and 4.x)."""
    found = handlers(demo, component)
    if not found:
        raise AssertionError(f"nothing wired to {component}")
    return found[0]


def handlers(demo, component):
    """Every (function, BlockFunction) an event of ``component`` runs, in wiring order."""
    functions = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns  # 4.x: a dict
    found = []
    for function in functions:
        targets = getattr(function, "targets", None)
        if targets is None:  # gradio 3.41 keeps the targets in the parallel dependency list
            targets = demo.dependencies[demo.fns.index(function)]["targets"]
        if component._id in [t[0] if isinstance(t, list | tuple) else t for t in targets]:
            found.append((function.fn, function))
    return found


def build_panel(webui, monkeypatch):
    import pytest

    monkeypatch.setattr(host, "pipeline", lambda: pytest.fail("ui() must not predict"))
    script = webui.load_script()()
    script.is_img2img = False
    import gradio as gr

    with gr.Blocks() as demo:
        script.ui(False)
    return demo, script


# ------------------------------------------------------------------ the X/Y/Z double
FAKE_XYZ = Path(__file__).parent / "fake_webui" / "xyz_grid.py"


def load_xyz(webui):
    """Load the X/Y/Z double the way A1111 loads scripts: by file, recorded in scripts_data."""
    spec = importlib.util.spec_from_file_location("xyz_grid.py", FAKE_XYZ)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class XYZScript(webui.scripts.Script):
        def title(self):
            return "X/Y/Z plot"

    XYZScript.__module__ = "xyz_grid.py"
    entry = webui.scripts.ScriptClassData(XYZScript, str(FAKE_XYZ), str(FAKE_XYZ.parent), module)
    webui.scripts.scripts_data.append(entry)
    return module


def by_label(module, name):
    return next(o for o in module.axis_options if o.label == f"[HyperLoRA] {name}")
