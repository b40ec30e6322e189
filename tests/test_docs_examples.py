"""Every example in README.md and docs/*.md runs: the documentation cannot drift from the code.

* ``python -m hyperlora_ext ...`` shell commands run through the CLI (in-process) against tiny
  random models (tests/factories.py) and the fake antelopev2 pack; ``download`` fetches from a local
  fake hub. Photos the commands name are synthetic face photos.
* ``curl`` requests: the route must exist with that method; the body must be JSON whose fields the
  request model of the route (``hyperlora_ext/webui/api_models.py``) knows and accepts; the
  HyperLoRA arguments of ``/sdapi/v1/*2img`` bodies must parse with :mod:`hyperlora_ext.args`.
* ```` ```json ```` blocks: HyperLoRA arguments or ``/sdapi/v1/txt2img`` bodies, parsed the same
  way; ``docs/workflows/*.json`` are txt2img bodies too.
* ```` ```python ```` blocks compile; links to ``.md`` pages and their headings resolve.

Other shell commands (pip, venv, git, the test runner) are set-up steps and are not run here.
"""

from __future__ import annotations

import base64
import glob
import io
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import pytest
from PIL import Image

from hyperlora_ext import cli
from hyperlora_ext import download as download_module
from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.facts import HYPERLORA_MODELS
from hyperlora_ext.models import ModelRoots
from tests import fake_antelopev2
from tests.encoders._photos import face_photo
from tests.factories import write_tiny_clip, write_tiny_hyperlora
from tests.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
WORKFLOWS = ROOT / "docs" / "workflows"
MODELS_PLACEHOLDER = "/path/to/stable-diffusion-webui/models"
BASE64_OF_FILE = re.compile(r"\$\(base64 -w0 [^)]+\)")  # the docs' "$(base64 -w0 me.jpg)"
BASE64_PLACEHOLDER = re.compile(r"^<base64[^>]*>$")  # "<base64>", "<base64 of the photo>"


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        fence = line.strip()
        if lang is None and fence.startswith("```"):
            lang, start, body = fence[3:].strip() or "text", number, []
        elif lang is not None and fence == "```":
            blocks.append(Block(page.relative_to(ROOT).as_posix(), start, lang, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def all_blocks(lang: str) -> list[Block]:
    return [block for page in PAGES for block in code_blocks(page) if block.lang == lang]


def shell_commands(text: str) -> Iterator[list[str]]:
    """The commands of a shell block as argument lists (continuations and quotes joined)."""
    pending = ""
    for line in text.splitlines():
        pending += line + "\n"
        if pending.rstrip().endswith("\\"):
            continue
        try:
            argv = shlex.split(pending.replace("\\\n", " "), comments=True)
        except ValueError:  # a quoted string continues on the next line
            continue
        pending = ""
        if argv:
            yield argv
    assert not pending.strip(), f"unterminated command: {pending!r}"


def shell_commands_of_all_blocks() -> list[tuple[Block, list[str]]]:
    shell = [block for lang in ("bash", "sh", "shell", "console") for block in all_blocks(lang)]
    return [(block, argv) for block in shell for argv in shell_commands(block.text)]


def commands(program: str) -> list[tuple[Block, list[str]]]:
    return [(block, argv) for block, argv in shell_commands_of_all_blocks() if argv[0] == program]


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


FACE_BASE64 = png_base64(face_photo((320, 240), ((100, 40, 220, 200),)))


def with_photos(value: Any) -> Any:
    """``value`` with every "<base64>" placeholder replaced by a real photo."""
    if isinstance(value, dict):
        return {key: with_photos(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_photos(item) for item in value]
    if isinstance(value, str) and BASE64_PLACEHOLDER.match(value):
        return FACE_BASE64
    return value


# ----------------------------------------------------------------- HyperLoRA arguments
def hyperlora_script_args(body: dict[str, Any], where: object) -> HyperLoRAArgs:
    """Parse the HyperLoRA slice of a ``/sdapi/v1/txt2img`` body as the script does."""
    assert isinstance(body.get("prompt", ""), str), f"{where}: 'prompt' is not a string"
    scripts = body.get("alwayson_scripts", {})
    titles = [title for title in scripts if title.lower() == "hyperlora"]  # matched like A1111
    assert titles, f"{where}: no HyperLoRA entry in alwayson_scripts: {sorted(scripts)}"
    return HyperLoRAArgs.from_script_args(scripts[titles[0]]["args"])


def check_json_example(value: Any, where: object) -> None:
    value = with_photos(value)
    if isinstance(value, dict) and "alwayson_scripts" in value:
        assert hyperlora_script_args(value, where).enabled, f"{where}: HyperLoRA is not enabled"
    elif isinstance(value, dict) and "enabled" in value:  # the script's named arguments
        HyperLoRAArgs.from_dict(value)
    # anything else (a response shown as an example) only has to be valid JSON


@pytest.mark.parametrize("block", all_blocks("json"), ids=str)
def test_json_blocks_are_valid_requests(block: Block):
    check_json_example(json.loads(block.text), block)


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.json"))


PER_FACE = "two_identities.json"  # the identities are LoRAs in ADetailer's per-face prompts


@pytest.mark.parametrize(
    "path", [p for p in workflow_files() if p.name != PER_FACE], ids=lambda path: path.name
)
def test_workflow_bodies_parse(path: Path):
    body = json.loads(path.read_text(encoding="utf-8"))
    if "hyperlora" not in {title.lower() for title in body.get("alwayson_scripts", {})}:
        # saved identities as ordinary LoRAs, e.g. one per face in ADetailer's prompts
        assert "<lora:" in json.dumps(body), f"{path.name}: neither HyperLoRA nor a saved identity"
        return
    args = hyperlora_script_args(with_photos(body), path.name)
    assert args.enabled and args.weight > 0, f"{path.name}: the identity is not applied"


def test_two_identities_body_gives_each_face_a_saved_identity():
    body = json.loads((WORKFLOWS / PER_FACE).read_text(encoding="utf-8"))
    [enabled, _skip_img2img, tab] = body["alwayson_scripts"]["ADetailer"]["args"]
    parts = [part.strip() for part in tab["ad_prompt"].split("[SEP]")]
    assert enabled and tab["ad_mask_k"] == len(parts) == 2, tab
    tags = [re.findall(r"<lora:(\w+):0\.85>", part) for part in parts]
    assert tags == [["alice"], ["bob"]], parts
    assert all(part.startswith("fcsks fxhks fhyks, ") for part in parts), parts


def test_workflow_files_named_in_the_docs_exist():
    if not WORKFLOWS.is_dir():
        pytest.skip("docs/workflows/ is not there yet")
    text = (ROOT / "docs" / "workflows.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([\w-]+\.json)`", text))
    assert named, "docs/workflows.md names no request body"
    missing = named - {path.name for path in workflow_files()}
    assert not missing, f"docs/workflows.md names {sorted(missing)}, absent from docs/workflows/"


# ------------------------------------------------------------------------------- curl
def hyperlora_routes() -> set[tuple[str, str]]:
    """(method, path pattern) of the /hyperlora/v1 routes, as registered on a FastAPI app."""
    from fastapi import FastAPI

    from hyperlora_ext.webui import api

    app = FastAPI()
    api.register_routes(app, SimpleNamespace(preload=lambda: None))  # type: ignore[arg-type]
    paths = [route for route in app.routes if getattr(route, "path", "").startswith("/hyperlora")]
    return {(method, route.path) for route in paths for method in route.methods}


def route_matches(pattern: str, path: str) -> bool:
    return re.fullmatch(re.sub(r"\{[^}]+\}", ".+", pattern), path) is not None


def curl_request(argv: list[str]) -> tuple[str, str, Any]:
    """(method, path, JSON body or None) of a curl command."""
    method, body, url = None, None, None
    options = iter(argv[1:])
    for arg in options:
        if arg in ("-X", "--request"):
            method = next(options)
        elif arg in ("-d", "--data", "--data-raw"):
            body = json.loads(BASE64_OF_FILE.sub(FACE_BASE64, next(options)))
        elif arg in ("-H", "--header"):
            next(options)
        elif not arg.startswith("-"):
            url = arg
    assert url, f"no URL in {argv}"
    path = urlparse(url if "//" in url else f"http://{url}").path
    return method or ("POST" if body is not None else "GET"), path, body


def request_model(path: str) -> Any:
    from hyperlora_ext.webui import api_models, api_refine

    return {
        "detect": api_models.DetectRequest,
        "encode": api_models.EncodeRequest,
        "likeness": api_models.LikenessRequest,
        "rename": api_models.RenameRequest,
        "refine": api_refine.RefineRequest,
        "kit": api_refine.KitRequest,
    }[path.rsplit("/", 1)[-1]]


@pytest.mark.parametrize(("block", "argv"), commands("curl"), ids=lambda v: str(v)[:60])
def test_curl_examples_are_valid_requests(block: Block, argv: list[str]):
    method, path, body = curl_request(argv)
    if path.startswith("/sdapi/v1/"):
        assert path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img"), f"{block}: {path}"
        check_json_example(body, block)
        return
    assert any(m == method and route_matches(p, path) for m, p in hyperlora_routes()), (
        f"{block}: no route {method} {path}"
    )
    if body is None:
        return
    model = request_model(path)
    from hyperlora_ext.webui.api_models import field_names

    assert set(body) <= set(field_names(model)), f"{block}: unknown field(s) for {path}"
    model(**with_photos(body))
    for part in body.get("mix") or []:  # mix parts are HyperLoRA sources: parse them as such
        HyperLoRAArgs.from_dict({"mix": [with_photos(part)]})


# ---------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    models = tmp_path_factory.mktemp("models")
    roots = ModelRoots.from_models_dir(models)
    write_tiny_hyperlora(roots.hyper_lora / HYPERLORA_MODELS[0])
    write_tiny_clip(roots.clip_vit / "clip_vit_large_14")
    fake_antelopev2.build(roots.antelopev2)
    return models


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch) -> FakeHub:
    hub = FakeHub(tmp_path / "hub").add_defaults()
    monkeypatch.setattr(download_module, "_hub_downloader", lambda: hub.download)
    monkeypatch.setattr(download_module, "hub_file_sizes", hub.sizes)
    for name in download_module.SIZE_FLOORS:
        monkeypatch.setitem(download_module.SIZE_FLOORS, name, 1)
    return hub


def prepare_files(args: list[str], folder: Path) -> list[str]:
    """Create the photos ``args`` name (face photos) and expand globs as a shell would."""
    expanded = []
    for arg in args:
        if arg.lower().endswith((".jpg", ".jpeg", ".png")):
            path = folder / arg.replace("*", "00001")
            path.parent.mkdir(parents=True, exist_ok=True)
            face_photo((320, 240), ((100, 40, 220, 200),)).save(path)
            matches = sorted(glob.glob(str(folder / arg)))
            expanded += [str(Path(match).relative_to(folder)) for match in matches]
        else:
            expanded.append(arg)
    return expanded


def cli_commands() -> list[tuple[Block, list[str]]]:
    return [
        (block, argv)
        for block, argv in shell_commands_of_all_blocks()
        if Path(argv[0]).name in ("python", "python3") and argv[1:3] == ["-m", "hyperlora_ext"]
    ]


@pytest.mark.parametrize(("block", "argv"), cli_commands(), ids=lambda v: str(v)[:60])
def test_cli_examples_run(block, argv, tiny_models, fake_hub, tmp_path, monkeypatch, capsys):
    args = argv[3:]
    models = tmp_path / "downloaded" if args[:1] == ["download"] else tiny_models
    args = [arg.replace(MODELS_PLACEHOLDER, str(models)) for arg in args]
    monkeypatch.setenv("HYPERLORA_MODELS_DIR", str(models))  # commands without --models-dir
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(prepare_files(args, tmp_path))
    except SystemExit as exit_:  # -h
        code = exit_.code
    output = capsys.readouterr()
    assert code == 0, f"{block}: {' '.join(argv)} exited {code}:\n{output.out}\n{output.err}"


def test_the_docs_show_the_cli_and_the_api():
    """The extraction above finds the examples (a changed fence style would hide them)."""
    subcommands = {argv[3] for _, argv in cli_commands()}
    assert {"download", "doctor", "lora", "likeness"} <= subcommands
    assert len(commands("curl")) >= 5 and len(all_blocks("json")) >= 3


# ----------------------------------------------------------------------------- python
@pytest.mark.parametrize("block", all_blocks("python"), ids=str)
def test_python_blocks_compile(block: Block):
    compile(block.text, str(block), "exec")


# ------------------------------------------------------------------------------ links
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    return {slug(match) for match in re.findall(r"^#+\s+(.+)$", text, flags=re.MULTILINE)}


def page_links() -> list[tuple[str, str]]:
    """(page relative to the repository, link target) of every link to a local file."""
    found = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if not re.match(r"[a-z]+:", target):
                found.append((page.relative_to(ROOT).as_posix(), target))
    return found


@pytest.mark.parametrize(("name", "target"), page_links())
def test_links_to_pages_and_headings_resolve(name: str, target: str):
    page = ROOT / name
    file, _, anchor = target.partition("#")
    path = (page.parent / file).resolve() if file else page
    if path.suffix != ".md":
        return  # images and request bodies are produced by other tests and helpers
    assert path.is_file(), f"{name}: link to a missing page {target}"
    if anchor:
        assert anchor in anchors(path), f"{name}: no heading for #{anchor} in {file or name}"
