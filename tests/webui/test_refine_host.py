"""Refine on the A1111 double: merged networks kept out, progress, Interrupt, lock, restore."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.webui import refine_host
from hyperlora_ext.webui.a1111 import A1111Adapter
from hyperlora_ext.webui.refine_host import RefineBusyError, WebUIRefineSettings, refine_in_webui
from tests.refine.tiny import photos
from tests.webui.fake_webui.tiny_sdxl import unet_fingerprint
from tests.webui.loras import make_lora

SMALL = WebUIRefineSettings(steps=3, resolution=32, jitters=0, learning_rate=1e-3)


class Job:
    def __init__(self, sd_model):
        self.sd_model = sd_model


def run_unet(sd_model):
    """A generation's forward pass: A1111 merges the loaded networks lazily here."""
    with torch.no_grad():
        x = torch.ones(1, 4, 2, 2)
        return sd_model.apply_model(x, torch.tensor([500]), torch.ones(1, 4, 12).half())


def _identity(model):
    return make_lora(model, style="diffusers", rank=8, alpha=4.0, scale=0.2)


def _merged_identity(webui, model):
    """A user's LoRA merged into the weights by the last generation; returns its output."""
    A1111Adapter().apply(Job(model), make_lora(model, seed=3), 0.8, "other")
    return run_unet(model)


def test_refine_trains_on_the_unmerged_unet_and_gives_everything_back(webui):
    model = webui.load_model()
    base = unet_fingerprint(model)
    plain = run_unet(model)
    merged_out = _merged_identity(webui, model)
    assert not torch.equal(plain, merged_out)
    loaded = list(webui.networks.loaded_networks)
    seen_weights = []
    original = model.apply_model

    def spy(x, t, cond):
        seen_weights.append(unet_fingerprint(model))
        return original(x, t, cond)

    model.apply_model = spy
    result = refine_in_webui(model, _identity(model), photos(), SMALL)
    model.apply_model = original
    assert result.steps_done == 3 and not result.interrupted
    for weights in seen_weights:  # training saw the checkpoint's own weights only
        assert all(torch.equal(weights[k], base[k]) for k in base)
    assert webui.networks.loaded_networks == loaded
    assert all(torch.equal(unet_fingerprint(model)[k], base[k]) for k in base)
    assert torch.equal(run_unet(model), merged_out)  # the next generation merges as before


def test_the_vae_samples_the_latents_from_the_refine_seed(webui):
    """sgm's and Forge's encode_first_stage sample the latents with the global RNG (seen in the
    real Forge: two refines with one seed had different latents and losses)."""
    model = webui.load_model()
    encode = model.encode_first_stage
    model.encode_first_stage = lambda x: encode(x) + 0.1 * torch.randn(encode(x).shape)
    state = torch.get_rng_state()
    first = refine_in_webui(model, _identity(model), photos(), SMALL)
    torch.randn(3)  # the WebUI's generations move the global RNG on between refines
    second = refine_in_webui(model, _identity(model), photos(), SMALL)
    assert first.losses == second.losses
    assert all(torch.equal(first.lora[k], second.lora[k]) for k in first.lora)
    other = refine_in_webui(model, _identity(model), photos(), replace(SMALL, seed=1))
    assert other.losses != first.losses
    torch.randn(3)
    expected = torch.get_rng_state()
    torch.set_rng_state(state)
    torch.randn(3), torch.randn(3)
    assert torch.equal(torch.get_rng_state(), expected)  # refining left the WebUI's RNG alone


def test_progress_and_interrupt_go_through_shared_state(webui):
    model = webui.load_model()
    state = webui.shared.state
    seen = []
    original = refine_host.Trainer.run

    def run(self, progress, should_stop):
        def spy(done, total, loss):
            progress(done, total, loss)
            seen.append((state.job, state.sampling_step, state.sampling_steps, state.textinfo))
            if done == 2:
                state.interrupt()  # the user presses Interrupt

        return original(self, spy, should_stop)

    refine_host.Trainer.run = run
    try:
        settings = WebUIRefineSettings(steps=10, resolution=32, jitters=0)
        result = refine_in_webui(model, _identity(model), photos(), settings)
    finally:
        refine_host.Trainer.run = original
    assert result.interrupted and result.steps_done == 2
    assert [s[:3] for s in seen] == [("hyperlora-refine", 1, 10), ("hyperlora-refine", 2, 10)]
    assert seen[0][3].startswith("HyperLoRA refine: step 1/10, loss ")
    assert state.ended == 1 and state.job == ""


def test_an_error_restores_networks_weights_state_and_locks(webui):
    model = webui.load_model()
    base = unet_fingerprint(model)
    merged_out = _merged_identity(webui, model)
    loaded = list(webui.networks.loaded_networks)

    def broken(x, t, cond):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    model.apply_model = broken
    with pytest.raises(RuntimeError, match="illegal memory access"):
        refine_in_webui(model, _identity(model), photos(), SMALL)
    del model.apply_model
    assert webui.networks.loaded_networks == loaded
    assert all(torch.equal(unet_fingerprint(model)[k], base[k]) for k in base)
    assert torch.equal(run_unet(model), merged_out)
    assert webui.shared.state.ended == 1
    from modules import call_queue

    assert _is_free(call_queue.queue_lock) and not refine_host._running.locked()


def test_a_second_refine_is_refused_and_generation_waits_for_the_lock(webui):
    model = webui.load_model()
    refine_host._running.acquire()
    try:
        with pytest.raises(RefineBusyError, match="already running"):
            refine_in_webui(model, _identity(model), photos(), SMALL)
    finally:
        refine_host._running.release()
    from modules import call_queue

    inside = threading.Event()
    waited = []

    def generation():
        inside.wait(5)
        acquired = call_queue.queue_lock.acquire(blocking=False)  # a generation now would wait
        waited.append(not acquired)
        if acquired:
            call_queue.queue_lock.release()

    original = refine_host.Trainer.run

    def run(self, progress, should_stop):
        inside.set()
        worker.join(5)
        return original(self, progress, should_stop)

    worker = threading.Thread(target=generation)
    worker.start()
    refine_host.Trainer.run = run
    try:
        refine_in_webui(model, _identity(model), photos(), SMALL)
    finally:
        refine_host.Trainer.run = original
    assert waited == [True] and _is_free(call_queue.queue_lock)


def test_a_refine_waits_its_turn_behind_a_running_generation(webui):
    """The WebUI's FIFOLock has no timeout: the refine starts once the generation is done."""
    from modules import call_queue

    entered = threading.Event()

    def refine() -> None:
        with refine_host.exclusive():
            entered.set()

    call_queue.queue_lock.acquire()  # a generation is running
    worker = threading.Thread(target=refine)
    worker.start()
    try:
        assert not entered.wait(0.2)
    finally:
        call_queue.queue_lock.release()
    worker.join(5)
    assert entered.is_set() and _is_free(call_queue.queue_lock)
    assert not refine_host._running.locked()


def _is_free(lock) -> bool:
    """Whether nobody holds ``lock`` (FIFOLock has no ``locked()``)."""
    if not lock.acquire(blocking=False):
        return False
    lock.release()
    return True


@pytest.mark.parametrize(("kind", "message"), [("sd1", "SD1.x"), ("refiner", "refiner")])
def test_checkpoints_that_cannot_be_refined_are_refused(webui, kind, message):
    model = webui.load_model(kind)
    with pytest.raises(HyperLoRAError, match=message):
        refine_in_webui(model, _identity(model), photos(), SMALL)
    assert webui.shared.state.ended == 1


def test_lowvram_is_refused_with_how_to_fix(webui, monkeypatch):
    from modules import lowvram

    model = webui.load_model()
    monkeypatch.setattr(lowvram, "is_enabled", lambda sd_model: True)
    with pytest.raises(HyperLoRAError, match="--lowvram or --medvram"):
        refine_in_webui(model, _identity(model), photos(), SMALL)


def test_a_saved_identity_is_refined_and_saved_as_name_refined(webui):
    from hyperlora_ext.store import IdentityStore

    model = webui.load_model()
    store = IdentityStore(webui.lora_dir)
    store.save("alice", _identity(model), model="m", photos=2)
    outcome = refine_host.refine_saved_identity(model, store, "alice", photos(), SMALL)
    body = outcome.response()
    assert body["name"] == "alice-refined" and body["steps"] == 3 and len(body["loss"]) == 3
    assert store.record("alice-refined").options["refine"]["steps"] == 3
    with pytest.raises(HyperLoRAError, match="'alice-refined' exists"):
        refine_host.refine_saved_identity(model, store, "alice", photos(), SMALL)
    assert webui.shared.state.ended == 1  # refused before any training started
