"""The CPU dtype is the measured fastest, recorded per machine, and never trusts its file."""

import json
import math

import pytest
import torch

from hyperlora_ext.engine import cpu_dtype as cd
from hyperlora_ext.engine.model import default_dtype, load_hyperlora
from tests.factories import write_tiny_hyperlora

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        ({F32: 1.0, BF16: 0.5, F16: 0.8}, BF16),  # AMX-like: bf16 far ahead
        ({F32: 1.0, BF16: 1.9, F16: 0.7}, F16),  # fast fp16, slow bf16
        ({F32: 1.0, BF16: 2.0, F16: 1.2}, F32),  # AVX512-BF16 without AMX
        ({F32: 1.0, BF16: 0.95, F16: 3.0}, F32),  # 5 % faster is not worth the precision
        ({F32: 1.0, BF16: 0.89, F16: 3.0}, BF16),
        ({F32: 1.0, BF16: math.nan, F16: math.inf}, F32),
        ({F32: 1.0, BF16: 0.0, F16: -1.0}, F32),  # impossible timings are ignored
        ({BF16: 0.5, F16: 0.8}, BF16),
        ({}, F32),
    ],
)
def test_choose(seconds, expected):
    assert cd.choose(seconds) == expected


def _measure(seconds, calls, fp16_mixing_faster=False):
    def measure():
        calls.append(1)
        return cd.Estimate(seconds, fp16_mixing_faster)

    return measure


def test_measured_once_then_read_from_the_file(tmp_path):
    path, calls = tmp_path / "sub" / "cpu_dtype.json", []
    assert cd.load_or_probe(path, _measure({F32: 1.0, BF16: 0.3, F16: 2.0}, calls)).dtype == BF16
    assert cd.load_or_probe(path, _measure({F32: 1.0, BF16: 3.0, F16: 2.0}, calls)).dtype == BF16
    assert len(calls) == 2  # two measurements that agree, then the file
    entry = json.loads(path.read_text())["machines"][cd.machine_key()]
    assert entry == {
        "dtype": "bfloat16",
        "fp16_mixing": False,
        "seconds": {"float32": 1.0, "bfloat16": 0.3, "float16": 2.0},
    }


def test_another_machine_is_measured_again(tmp_path, monkeypatch):
    path, calls = tmp_path / "cpu_dtype.json", []
    cd.load_or_probe(path, _measure({F32: 1.0, BF16: 0.3}, calls))
    monkeypatch.setattr(cd, "machine_key", lambda: "other CPU | torch 9")
    assert cd.load_or_probe(path, _measure({F32: 1.0, BF16: 3.0}, calls)).dtype == F32
    assert len(calls) == 4
    assert len(json.loads(path.read_text())["machines"]) == 2  # both machines kept


def test_machine_key_names_cpu_flags_and_torch():
    key = cd.machine_key()
    assert torch.__version__ in key and "flags" in key


HOSTILE = [
    b"",
    b"not json {",
    b"\xff\xfe\x00garbage",
    b"[" * 100000,
    b"[]",
    b'"text"',
    b'{"version": 2, "machines": {}}',
    b'{"version": 3, "machines": []}',
    b'{"version": 3, "machines": {"KEY": "bfloat16"}}',
    b'{"version": 3, "machines": {"KEY": {"dtype": "float64"}}}',
    b'{"version": 3, "machines": {"KEY": {"dtype": "../../etc/passwd"}}}',
    b'{"version": 3, "machines": {"KEY": {"dtype": ["bfloat16"]}}}',
    b'{"version": 3, "machines": {"KEY": {"dtype": "bfloat16", "fp16_mixing": "yes"}}}',
    b'{"version": 2, "machines": {"KEY": {"dtype": "bfloat16"}}}',  # an older probe's choice
    b'{"version": 3, "machines": {"KEY": {"dtype": "bfloat16"}}, "pad": "' + b"x" * 70000 + b'"}',
]


@pytest.mark.parametrize("content", HOSTILE)
def test_a_damaged_file_means_measuring_again(tmp_path, content):
    path, calls = tmp_path / "cpu_dtype.json", []
    path.write_bytes(content.replace(b"KEY", json.dumps(cd.machine_key())[1:-1].encode()))
    assert cd.load_or_probe(path, _measure({F32: 1.0, BF16: 2.0, F16: 0.5}, calls)).dtype == F16
    assert len(calls) == 2
    assert json.loads(path.read_text())["machines"][cd.machine_key()]["dtype"] == "float16"


def test_disagreeing_measurements_are_used_but_not_recorded(tmp_path):
    """A burst of load from elsewhere must not fix a slow dtype for good: the per-dtype best of
    both measurements decides for this process, and the next process measures again."""
    path, results = tmp_path / "cpu_dtype.json", []
    noisy = iter([{F32: 1.0, BF16: 2.4, F16: 0.7}, {F32: 1.0, BF16: 0.5, F16: 1.9}])

    def measure():
        results.append(next(noisy, {F32: 1.0, BF16: 0.5, F16: 0.7}))
        return cd.Estimate(results[-1])

    assert cd.load_or_probe(path, measure).dtype == BF16  # min: fp32 1.0, bf16 0.5, fp16 0.7
    assert not path.exists()
    assert cd.load_or_probe(path, measure).dtype == BF16  # measured again; now both agree
    assert len(results) == 4
    assert json.loads(path.read_text())["machines"][cd.machine_key()]["dtype"] == "bfloat16"


def test_an_unwritable_place_still_gives_a_dtype(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    assert (
        cd.load_or_probe(
            blocker / "cpu_dtype.json", lambda: cd.Estimate({F32: 1.0, BF16: 0.2})
        ).dtype
        == BF16
    )
    assert "could not record the CPU dtype" in caplog.text


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HYPERLORA_CACHE_DIR", f'"{tmp_path}"')  # pasted with quotes on Windows
    assert cd.cache_dir() == tmp_path
    monkeypatch.delenv("HYPERLORA_CACHE_DIR")
    monkeypatch.setattr(cd.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert cd.cache_dir() == tmp_path / "Local" / "hyperlora"
    monkeypatch.setattr(cd.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cd.cache_dir() == tmp_path / "xdg" / "hyperlora"


def test_probe_times_every_candidate():
    seconds = cd.probe(repeats=1).seconds
    assert set(seconds) == set(cd.CANDIDATES)
    assert all(math.isfinite(s) and s > 0 for s in seconds.values())


def test_default_dtype_uses_the_measurement_and_an_explicit_dtype_wins(tmp_path, monkeypatch):
    folder = write_tiny_hyperlora(tmp_path / "tiny")
    monkeypatch.setattr(cd, "_chosen", None)
    monkeypatch.setattr(cd, "cache_dir", lambda: folder.parent / "dtype-cache")
    monkeypatch.setattr(cd, "probe", lambda: cd.Estimate({F32: 1.0, BF16: 2.0, F16: 0.5}))
    assert default_dtype("cpu") == F16
    assert default_dtype("cuda") == F16
    assert load_hyperlora(folder).dtype == F16

    def no_probe():
        raise AssertionError("an explicit dtype must not measure anything")

    monkeypatch.setattr(cd, "_chosen", None)
    monkeypatch.setattr(cd, "probe", no_probe)
    assert load_hyperlora(folder, dtype=F32).dtype == F32
    assert load_hyperlora(folder, dtype=BF16, map_bases=False).dtype == BF16


def test_a_bf16_model_mixes_fp16_bases_as_the_machine_was_measured(tmp_path, monkeypatch):
    """Mixing in fp16 or through float32 gives LoRAs within bf16's precision of each other."""
    folder = write_tiny_hyperlora(tmp_path / "tiny")  # fp16 bases, as released
    loras = {}
    for faster in (False, True):
        monkeypatch.setattr(cd, "_chosen", None)
        monkeypatch.setattr(cd, "cache_dir", lambda f=faster: tmp_path / f"cache-{f}")
        monkeypatch.setattr(cd, "probe", lambda f=faster: cd.Estimate({F32: 1.0, BF16: 0.5}, f))
        model = load_hyperlora(folder, dtype=BF16)
        assert model.fp16_mixing is faster
        gen = torch.Generator().manual_seed(0)
        ids = torch.nn.functional.normalize(torch.randn(1, 512, generator=gen), dim=-1)
        loras[faster] = model.predict_lora(ids, torch.randn(1, 257, 32, generator=gen))
    for key, value in loras[True].items():
        assert value.dtype == (torch.float32 if key.endswith("alpha") else BF16)
        torch.testing.assert_close(value, loras[False][key], rtol=2e-2, atol=2e-2)
    assert any(not torch.equal(v, loras[False][k]) for k, v in loras[True].items())


def test_a_probe_that_shared_the_cpu_is_used_but_not_recorded(tmp_path, monkeypatch):
    """Two busy programs on 2 cores made both measurements agree on a slow dtype once in six
    first starts: a probe whose threads got too little CPU time records nothing."""
    path, calls = tmp_path / "cpu_dtype.json", []
    monkeypatch.setattr(cd, "cpu_share", lambda wall, cpu: 0.45)
    assert cd.load_or_probe(path, _measure({F32: 1.0, BF16: 2.0, F16: 0.5}, calls)).dtype == F16
    assert not path.exists()
    monkeypatch.setattr(cd, "cpu_share", lambda wall, cpu: 0.85)
    assert cd.load_or_probe(path, _measure({F32: 1.0, BF16: 0.5, F16: 2.0}, calls)).dtype == BF16
    assert json.loads(path.read_text())["machines"][cd.machine_key()]["dtype"] == "bfloat16"
    assert len(calls) == 4


@pytest.mark.parametrize(
    ("wall", "cpu", "threads", "share"),
    [(1.0, 1.7, 2, 0.85), (1.0, 0.9, 2, 0.45), (0.01, 0.0, 2, 1.0), (2.0, 1.0, 1, 0.5)],
)
def test_cpu_share(monkeypatch, wall, cpu, threads, share):
    monkeypatch.setattr(cd.torch, "get_num_threads", lambda: threads)
    assert cd.cpu_share(wall, cpu) == pytest.approx(share)


@pytest.mark.parametrize(
    ("seconds", "faster", "expected"),
    [
        ({F32: 1.0, BF16: 0.5, F16: 0.8}, True, cd.Choice(BF16, True)),
        ({F32: 1.0, BF16: 0.5, F16: 0.8}, False, cd.Choice(BF16, False)),
        ({F32: 1.0, BF16: 2.0, F16: 0.5}, True, cd.Choice(F16, False)),  # fp16 mixes so anyway
        ({F32: 1.0, BF16: 2.0, F16: 1.5}, True, cd.Choice(F32, False)),  # fp32 mixes in fp32
    ],
)
def test_fp16_mixing_is_chosen_for_bf16_only(seconds, faster, expected):
    assert cd.choice_of(cd.Estimate(seconds, faster)) == expected


def test_the_fp16_mixing_choice_is_recorded_and_must_agree(tmp_path):
    path, calls = tmp_path / "cpu_dtype.json", []
    seconds = {F32: 1.0, BF16: 0.5, F16: 0.8}
    flags = iter([True, False, True, True])

    def measure():
        calls.append(1)
        return cd.Estimate(seconds, next(flags))

    assert cd.load_or_probe(path, measure) == cd.Choice(BF16, False)  # disagree: float32 mixing
    assert not path.exists()
    assert cd.load_or_probe(path, measure) == cd.Choice(BF16, True)
    assert cd.load_or_probe(path, measure) == cd.Choice(BF16, True)  # from the file
    assert len(calls) == 4
    assert json.loads(path.read_text())["machines"][cd.machine_key()]["fp16_mixing"] is True


def test_probe_estimates_bf16_with_the_faster_mixing():
    estimate = cd.probe(repeats=1)
    assert isinstance(estimate.fp16_mixing_faster, bool)
    assert set(estimate.seconds) == set(cd.CANDIDATES)
