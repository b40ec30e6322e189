"""Property tests of the library side of mixes and likeness (the Python API, no WebUI): weights,
token tensors of any shape, sidecar files of any content, likeness vectors of any value, and two
store instances on one folder. Nothing raises but the documented HyperLoRAError types, and no
undefined value is reported as a result (never a likeness of 1.0 from a NaN)."""

from __future__ import annotations

import math
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hyperlora_ext.engine.fusion import check_weights, stack_tokens, weighted_mean
from hyperlora_ext.errors import ArgumentError, HyperLoRAError, IdentityNotFoundError, NoTokensError
from hyperlora_ext.identity import IdentityOptions, IdentityPipeline
from hyperlora_ext.likeness import cosine, reference_embedding
from hyperlora_ext.lora_format import lora_digest
from hyperlora_ext.store import IdentityStore
from tests.factories import save_identity as save
from tests.factories import tiny_lora
from tests.tiny_tree import MODEL, _photo

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = (
    st.integers()
    | st.integers(-(10**500), 10**500)
    | st.floats()
    | st.floats(0, 5e-320)  # subnormal
    | st.fractions()
    | st.builds(Fraction, st.integers(10**300, 10**400), st.integers(1, 3))
)
weight_items = numbers | st.none() | st.booleans() | st.text(max_size=4)
weight_lists = st.lists(weight_items, max_size=5) | st.text(max_size=5) | st.none()


@SETTINGS
@given(weight_lists, st.integers(0, 5))
def test_check_weights_gives_finite_weights_or_names_the_field(weights, count):
    try:
        checked = check_weights(weights, count, field="mix")
    except ArgumentError as error:
        assert error.field == "mix"
        return
    if weights is None:
        assert checked is None
        return
    assert checked is not None and len(checked) == count and any(checked)
    assert all(math.isfinite(w) and w >= 0 for w in checked)


positive = st.floats(0, 1.7e308) | st.floats(0, 1e-300)


@SETTINGS
@given(st.lists(positive, min_size=1, max_size=4).filter(any), st.integers(0, 20))
def test_weighted_mean_is_finite_and_scale_free(weights, power):
    stack = torch.randn(len(weights), 3, 2, generator=torch.Generator().manual_seed(len(weights)))
    fused = weighted_mean(stack, weights)
    assert torch.isfinite(fused).all()
    low, high = stack.min(dim=0).values, stack.max(dim=0).values
    assert ((fused >= low - 1e-5) & (fused <= high + 1e-5)).all()  # a mean stays in the hull
    scaled = [w / 2**power for w in weights]
    if all(w == 0 or s > 1e-300 for w, s in zip(weights, scaled, strict=True)):  # exact scaling
        torch.testing.assert_close(weighted_mean(stack, scaled), fused)


vectors = hnp.arrays(
    np.float64,
    st.sampled_from([(512,), (2, 512), (1, 512)]),
    elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
) | st.builds(np.zeros, st.just(512))


@SETTINGS
@given(vectors, vectors)
def test_cosine_is_a_score_or_an_error_never_a_false_match(a, b):
    defined = a.size == b.size and all(np.isfinite(v).all() and np.abs(v).max() > 0 for v in (a, b))
    try:
        score = cosine(a.ravel(), b.ravel())
    except HyperLoRAError:
        assert not defined
        return
    assert defined and -1.0 <= score <= 1.0


@SETTINGS
@given(vectors, st.none() | st.lists(positive | st.floats(), min_size=1, max_size=3))
def test_reference_embedding_is_a_unit_vector_or_an_error(rows, weights):
    try:
        reference = reference_embedding(rows, weights)
    except HyperLoRAError:
        return  # ArgumentError, NoFaceError and "damaged" are all HyperLoRAErrors
    assert reference.shape == (512,) and np.isfinite(reference).all()
    assert abs(float(np.linalg.norm(reference.astype(np.float64))) - 1) < 1e-5


SHAPE = (4, 3)
dtypes = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.bool])
tensors = st.builds(
    lambda shape, dtype, fill: torch.full(shape, fill).to(dtype),
    st.lists(st.integers(0, 5), max_size=3).map(tuple),
    dtypes,
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)


@SETTINGS
@given(st.lists(tensors | st.none() | st.lists(st.floats(), max_size=3), min_size=1, max_size=3))
def test_stack_tokens_stacks_finite_tokens_of_the_shape_or_names_one(tokens):
    labels = [f"id{i}" for i in range(len(tokens))]
    try:
        stacked = stack_tokens(tokens, SHAPE, "tiny", labels)
    except ArgumentError as error:
        assert error.field == "mix" and any(f"id{i}: " in str(error) for i in range(len(tokens)))
        return
    assert stacked.shape == (len(tokens), *SHAPE) and torch.isfinite(stacked).all()


# -------------------------------------------------------------- stored tokens of any shape

sidecars = st.one_of(
    st.binary(max_size=64),
    st.tuples(tensors, st.sampled_from(["own", "other", "none"])),
)


@pytest.fixture(scope="module")
def tiny_pipeline(roots) -> IdentityPipeline:
    return IdentityPipeline(roots, device="cpu", dtype=torch.float32)


@SETTINGS
@given(sidecar=sidecars)
def test_any_stored_tokens_file_mixes_or_is_refused_by_name(tiny_pipeline, sidecar):
    """A saved identity whose tokens file holds anything at all: loading gives finite 2-D tokens
    or NoTokensError naming it, and mixing those gives a LoRA or an ArgumentError naming it."""
    from safetensors.torch import save_file

    made = tiny_pipeline.predict([_photo()], IdentityOptions(MODEL))
    with tempfile.TemporaryDirectory() as folder:
        store = IdentityStore(folder)
        record = store.save("eve", made.lora, model=MODEL, photos=1, tokens=made.tokens)
        path = store.tokens_path("eve")
        if isinstance(sidecar, bytes):
            path.write_bytes(sidecar)
        else:
            tensor, digest = sidecar
            metadata = {"own": {"lora_digest": record.digest}, "other": {"lora_digest": "x"}}
            save_file({"tokens": tensor.contiguous()}, str(path), metadata=metadata.get(digest))
        try:
            tokens = store.load_tokens("eve")
        except NoTokensError as error:
            assert "'eve'" in str(error)
            return
        assert tokens.dim() == 2 and tokens.dtype == torch.float32 and torch.isfinite(tokens).all()
        try:
            mixed = tiny_pipeline.mix([made.tokens, tokens], [1, 1], MODEL, labels=["ann", "eve"])
        except ArgumentError as error:
            assert error.field == "mix" and "eve: " in str(error)
            return
        assert all(torch.isfinite(t).all() for t in mixed.lora.values())


# ------------------------------------------------ two store instances sharing one folder

operations = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.sampled_from(["save", "delete", "load", "tokens"]),
        st.sampled_from("ab"),
    ),
    max_size=14,
)


@SETTINGS
@given(operations)
def test_two_store_instances_see_each_others_changes(steps):
    """Interleaved saves, deletes and reads through two stores on one folder (two processes):
    each store reads what the other wrote last (no stale cache), and "not found" is the only
    error, where the model says the identity is absent."""
    with tempfile.TemporaryDirectory() as folder:
        stores = [IdentityStore(Path(folder)), IdentityStore(Path(folder))]
        saved: dict[str, int] = {}
        for seed, (which, action, name) in enumerate(steps):
            store = stores[which]
            if action == "save":
                save(store, name, seed, overwrite=True, tokens=torch.full(SHAPE, float(seed)))
                saved[name] = seed
                continue
            if name not in saved:
                with pytest.raises(IdentityNotFoundError):
                    {"delete": store.delete, "load": store.load, "tokens": store.load_tokens}[
                        action
                    ](name)
            elif action == "delete":
                store.delete(name)
                del saved[name]
            elif action == "load":
                loaded = store.load(name)
                assert (
                    loaded.digest
                    == store.record(name).digest
                    == lora_digest(tiny_lora(saved[name]))
                )
            else:
                assert int(store.load_tokens(name)[0, 0]) == saved[name]
        assert sorted(stores[0].names()) == sorted(saved)
