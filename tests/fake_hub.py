"""A local stand-in for the Hugging Face hub (a helper module, not a test module)."""

from __future__ import annotations

from pathlib import Path

from hyperlora_ext.download import Sources
from hyperlora_ext.facts import (
    ANTELOPEV2_FILES,
    CLIP_FILES,
    HYPERLORA_FILES,
    HYPERLORA_MODELS,
    FileSpec,
)
from tests.model_files import write_model_files

SOURCES = Sources()


class FakeHub:
    """``<root>/<owner>/<name>/<path>`` files served like hf_hub_download serves a repository."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[str] = []
        self.fail: set[str] = set()  # remote paths whose next download raises
        self.truncate: set[str] = set()  # remote paths delivered cut short

    def add_defaults(self) -> FakeHub:
        hyper_repo = self.root / SOURCES.hyperlora
        for model in HYPERLORA_MODELS:
            write_model_files(hyper_repo / model, HYPERLORA_FILES)
        write_model_files(self.root / SOURCES.clip, CLIP_FILES)
        write_model_files(self.root / SOURCES.antelopev2, [FileSpec(n) for n in ANTELOPEV2_FILES])
        return self

    def sizes(self, repo_id: str) -> dict[str, int]:
        repo = self.root / repo_id
        return {p.relative_to(repo).as_posix(): p.stat().st_size for p in repo.rglob("*.*")}

    def download(self, *, repo_id: str, filename: str, local_dir: str) -> str:
        self.calls.append(f"{repo_id}:{filename}")
        if filename in self.fail:
            self.fail.discard(filename)
            raise ConnectionError("connection reset by peer")
        source, target = self.root / repo_id / filename, Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        data = source.read_bytes()
        target.write_bytes(data[: len(data) // 2] if filename in self.truncate else data)
        return str(target)
