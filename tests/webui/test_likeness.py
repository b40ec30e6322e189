"""The likeness score of generated images, through the A1111 double with the real pipeline on the
tiny models and the synthetic antelopev2 pack. The double's "VAE" (``processing.image_decoder``)
turns each sample into a synthetic photo, so the score of every image is known in advance."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from hyperlora_ext.likeness import cosine, reference_from_photos
from hyperlora_ext.webui import infotext
from tests.encoders._photos import face_photo
from tests.webui.harness import by_label, load_xyz
from tests.webui.tiny_host import TINY_WIDTHS, point_webui_at, tiny_models

ROUND = ((210, 90, 430, 390),)  # the face of the reference photo
TALL = ((150, 60, 330, 420),)  # someone else
KEY = "HyperLoRA likeness"


@pytest.fixture
def host(webui, tmp_path_factory, monkeypatch):
    models, pipeline = tiny_models(tmp_path_factory)
    point_webui_at(models, pipeline, monkeypatch)
    webui.model = webui.load_model("sdxl", **TINY_WIDTHS)
    webui.pipeline = pipeline
    yield webui
    webui.processing.image_decoder = None
    webui.shared.state.begin()


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "reference.png"
    face_photo(faces=ROUND).save(path)
    return path


def decode_to(images):
    """A "VAE" that turns the n-th sample of the job into ``images[n]``."""
    made = iter(images)
    return lambda p, index, sample: next(made)


def job(webui, args, **kwargs):
    runner = webui.scripts.ScriptRunner([webui.load_script()])
    p = webui.processing.StableDiffusionProcessingTxt2Img(
        sd_model=webui.model, scripts_runner=runner, prompt="portrait", steps=2, **kwargs
    )
    p.script_args = [None, args]
    return p, webui.processing.process_images(p)


def params(text: str) -> dict:
    return dict(re.findall(r"(HyperLoRA [\w ]+): ((?:\"[^\"]*\")|[^,\n]*)", text))


def on(photo, **extra):
    return {"enabled": True, "images": [str(photo)], "model": "tiny", **extra}


def expected(host, reference_photo, image) -> str:
    """The score computed independently of the script: own reference, own cosine."""
    analyzer = host.pipeline.models.face_analyzer()
    reference = reference_from_photos([reference_photo], analyzer)
    from hyperlora_ext.likeness import largest_face_embedding

    _, embedding = largest_face_embedding(image, analyzer, "image")
    return f"{cosine(embedding, reference):.2f}"


def test_each_image_gets_its_own_likeness_in_infotext_and_api_info(host, photo):
    same, other, blank = face_photo(faces=ROUND), face_photo(faces=TALL), face_photo(faces=())
    host.processing.image_decoder = decode_to([same, other, blank])
    _, processed = job(host, on(photo), batch_size=3)
    scores = [params(text).get(KEY) for text in processed.infotexts]
    assert scores == ["1.00", expected(host, photo, other), "no face"]
    assert float(scores[1]) < 0.9
    info = json.loads(processed.js())
    assert [params(t).get(KEY) for t in info["infotexts"]] == scores
    assert infotext.WARNING not in info["extra_generation_params"]


def test_the_setting_turns_it_off(host, photo):
    host.shared.opts.data["hyperlora_likeness"] = False
    host.processing.image_decoder = decode_to([face_photo()])
    _, processed = job(host, on(photo))
    assert KEY not in processed.infotexts[0] and "HyperLoRA weight" in processed.infotexts[0]


def test_no_score_without_hyperlora(host, photo):
    host.processing.image_decoder = decode_to([face_photo()])
    _, processed = job(host, on(photo, enabled=False))
    assert "HyperLoRA" not in processed.infotexts[0]


def test_a_failed_score_keeps_the_image_and_says_so_for_that_image_only(host, photo):
    host.processing.image_decoder = decode_to([object(), face_photo(faces=ROUND)])
    p, processed = job(host, on(photo), batch_size=2)
    assert len(processed.images) == 2
    first, second = (params(t) for t in processed.infotexts)
    assert KEY not in first and "likeness not scored" in first[infotext.WARNING]
    assert infotext.ERROR not in first and "HyperLoRA identity" in processed.infotexts[0]
    assert second[KEY] == "1.00" and infotext.WARNING not in second
    assert any("likeness not scored" in c for c in p.comments)


def test_the_final_image_is_scored_after_other_scripts_changed_it(host, photo):
    """ADetailer replaces the image in its postprocess_image hook; the score is of its result."""

    class FaceFix(host.scripts.Script):
        def title(self):
            return "face fix"

        def show(self, is_img2img):
            return host.scripts.AlwaysVisible

        def postprocess_image(self, p, pp, *args):
            pp.image = face_photo(faces=ROUND)

    host.processing.image_decoder = decode_to([face_photo(faces=TALL)])
    runner = host.scripts.ScriptRunner([host.load_script(), FaceFix])  # ours runs first
    p = host.processing.StableDiffusionProcessingTxt2Img(
        sd_model=host.model, scripts_runner=runner, prompt="portrait", steps=2, enable_hr=True
    )
    p.script_args = [None, on(photo)]
    processed = host.processing.process_images(p)
    assert params(processed.infotexts[0])[KEY] == "1.00"


def test_a_saved_identity_without_reference_gets_a_warning(host, photo):
    from hyperlora_ext.args import HyperLoRAArgs
    from hyperlora_ext.store import get_store
    from tests.webui.harness import resolve

    result = resolve(HyperLoRAArgs.from_dict(on(photo)))
    store = get_store(host.lora_dir)
    store.save("old", result.lora, model="tiny", photos=1)  # as before the reference existed
    store.save(
        "new", result.lora, model="tiny", photos=1, reference_embedding=result.likeness_reference
    )
    host.processing.image_decoder = decode_to([face_photo(), face_photo()])
    _, old = job(host, {"enabled": True, "identity": "old", "model": "tiny"})
    _, new = job(host, {"enabled": True, "identity": "new", "model": "tiny"})
    assert "save it again" in params(old.infotexts[0])[infotext.WARNING]
    assert params(new.infotexts[0])[KEY] == "1.00"


def test_every_xyz_cell_shows_its_own_likeness(host, photo):
    grid = load_xyz(host)
    try:
        from hyperlora_ext.webui import xyz

        xyz.register_axes(grid)
        faces = [face_photo(faces=ROUND), face_photo(faces=TALL), face_photo(faces=())]
        host.processing.image_decoder = decode_to(faces)
        runner = host.scripts.ScriptRunner([host.load_script()])
        p = host.processing.StableDiffusionProcessingTxt2Img(
            sd_model=host.model, scripts_runner=runner, prompt="portrait", steps=2
        )
        p.script_args = [None, on(photo)]
        _, results = grid.run_axis(p, by_label(grid, "Weight"), "0.2, 0.6, 1.0")
    finally:
        host.scripts.scripts_data.clear()
    cells = [params(r.infotexts[0]) for r in results]
    assert [c["HyperLoRA weight"] for c in cells] == ["0.2", "0.6", "1"]
    assert [c.get(KEY) for c in cells] == ["1.00", expected(host, photo, faces[1]), "no face"]


def test_reference_of_the_job_is_that_of_its_photos(host, photo):
    from hyperlora_ext.args import HyperLoRAArgs
    from tests.webui.harness import resolve

    result = resolve(HyperLoRAArgs.from_dict(on(photo)))
    own = reference_from_photos([photo], host.pipeline.models.face_analyzer())
    np.testing.assert_allclose(result.likeness_reference, own, atol=1e-6)


def test_forge_jobs_are_scored_the_same_way(host, photo, monkeypatch):
    """The hook only reads the job and the image, never the host's patcher: a Forge job's p
    (the Forge double's fields) gets the same entry."""
    from hyperlora_ext.args import HyperLoRAArgs
    from hyperlora_ext.webui import job_state, likeness
    from tests.webui.fake_webui import forge_backend as fb
    from tests.webui.harness import resolve

    fb.install(monkeypatch)
    result = resolve(HyperLoRAArgs.from_dict(on(photo)))
    p = fb.FakeProcessing(sd_model=fb.FakeForgeSDXL(fb.TinySDXLUNet()))
    likeness.reset(p)
    job_state.of(p).identity = result
    likeness.score(p, face_photo(faces=TALL))
    assert p.extra_generation_params[KEY] == expected(host, photo, face_photo(faces=TALL))


def test_the_accordion_status_shows_the_last_generations_likeness(host, photo):
    import gradio as gr
    from modules import script_callbacks as callbacks

    from hyperlora_ext.webui import ui_actions

    host.processing.image_decoder = decode_to([face_photo(faces=ROUND), face_photo(faces=())])
    _, processed = job(host, on(photo), batch_size=2)
    script = host.load_script()()
    with gr.Blocks() as demo:
        script.ui(False)
        status = next(b for b in demo.blocks.values() if str(b.elem_id).endswith("_status"))
        info = gr.Textbox(visible=False, elem_id="generation_info_txt2img")
        callbacks.fire("after_component", info, elem_id="generation_info_txt2img")
    wired = [d for d in demo.config["dependencies"] if info._id in _trigger_ids(d)]
    assert wired and all(d["outputs"] == [status._id] for d in wired)
    assert ui_actions.likeness_status(processed.js()) == "Likeness: 1.00, no face"
    unscored = json.dumps({"infotexts": ["a cat\nSteps: 20"]})
    assert ui_actions.likeness_status(unscored) == gr.update()


def _trigger_ids(dependency: dict) -> list[int]:
    """Ids of the components whose change runs it (gradio 3.41: ids + "trigger"; 4: pairs)."""
    return [t[0] if isinstance(t, (list, tuple)) else t for t in dependency["targets"]]
