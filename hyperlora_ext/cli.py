"""``python -m hyperlora_ext``: the standalone command line.

One function per subcommand (``cmd_<name>(args) -> exit code``), registered in
:func:`build_parser`. Exit codes: 0 success, 1 a HyperLoRA error or failed check (the message says
what and how to fix it), 2 bad command-line usage (argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.facts import FACE_CHOICES, HYPERLORA_MODELS
from hyperlora_ext.models import ModelRoots, default_models_dir, user_path

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130
CRASH_LOG = "hyperlora-cli-error.log"
MODEL_ALIASES = {"fidelity": HYPERLORA_MODELS[0], "edit": HYPERLORA_MODELS[1]}


# ------------------------------------------------------------- shared options
def add_roots_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that locate the models; every subcommand that needs models adds them."""
    group = parser.add_argument_group("model folders")
    group.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="the WebUI's models folder (default: $HYPERLORA_MODELS_DIR, the WebUI's models/ "
        "when installed as an extension, else ./models)",
    )
    group.add_argument("--hyper-lora-dir", type=Path, help="override models/hyper_lora/hyper_lora")
    group.add_argument("--clip-vit-dir", type=Path, help="override models/hyper_lora/clip_vit")
    group.add_argument(
        "--insightface-dir", type=Path, help="override models/insightface (holds models/antelopev2)"
    )


def roots_from_args(args: argparse.Namespace) -> ModelRoots:
    roots = ModelRoots.from_models_dir(args.models_dir or default_models_dir())
    overrides = {
        "hyper_lora": args.hyper_lora_dir,
        "clip_vit": args.clip_vit_dir,
        "insightface": args.insightface_dir,
    }
    return replace(roots, **{k: user_path(v) for k, v in overrides.items() if v is not None})


# ---------------------------------------------------------------- subcommands
def cmd_doctor(args: argparse.Namespace) -> int:
    from hyperlora_ext.doctor import doctor, has_errors, render

    checks = doctor(roots_from_args(args), environment=not args.models_only)
    if args.json:
        print(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        print(render(checks))
    return EXIT_ERROR if has_errors(checks) else EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    from hyperlora_ext.download import Sources, download, pending, plan_downloads

    roots = roots_from_args(args)
    sources = Sources(
        hyperlora=args.hyperlora_repo, clip=args.clip_repo, antelopev2=args.antelopev2_repo
    )
    models = [MODEL_ALIASES.get(m, m) for m in args.model or HYPERLORA_MODELS]
    items = plan_downloads(roots, parts=args.only, models=models, sources=sources)
    if args.dry_run:
        for item in items:
            todo = pending(item, force=args.force)
            print(f"{item.label} -> {item.folder}")
            for file in item.files:
                state = "fetch" if file in todo else "installed"
                print(f"  [{state:>9}] {file.dest.name}  <- {file.repo_id}: {file.remote}")
        return EXIT_OK
    outcomes = download(items, force=args.force, log=print)
    installed = sum(o.action == "installed" for o in outcomes)
    print(f"Done: {installed} file(s) installed, {len(outcomes) - installed} already present.")
    print(f"Check the result with: python -m hyperlora_ext doctor {roots.cli_arguments()}")
    return EXIT_OK


def cmd_lora(args: argparse.Namespace) -> int:
    """Photos -> identity LoRA -> an ordinary LoRA file (plus its card and preview)."""
    import time

    import torch

    from hyperlora_ext.devices import check_device
    from hyperlora_ext.export import check_export_target, export_lora
    from hyperlora_ext.identity import IdentityOptions, IdentityPipeline

    start = time.perf_counter()

    def progress(stage: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {stage}", file=sys.stderr, flush=True)

    out: Path = args.out
    if out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    check_export_target(out.parent, out.stem, overwrite=args.overwrite)  # before the long work
    dtype = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    device = check_device(args.device)
    pipeline = IdentityPipeline(roots_from_args(args), device=device, dtype=dtype[args.dtype])
    options = IdentityOptions(
        model=MODEL_ALIASES.get(args.model, args.model),
        face_choice=args.face,
        face_index=args.face_index,
        remove_background=not args.keep_background,
        grayscale=args.grayscale,
        clip=args.clip,
    )
    labels = [f"image {i + 1} ({Path(ref).name})" for i, ref in enumerate(args.ref)]
    result = pipeline.predict(
        [Path(ref) for ref in args.ref], options, labels=labels, progress=progress
    )
    for report in result.reports:
        status = "used" if report.used else f"skipped: {report.reason}"
        print(f"  {report.label}: {report.faces_found} face(s) found, {status}", file=sys.stderr)
    progress("writing the LoRA file")
    preview = next((r.preview for r in result.reports if r.used), None)
    path = export_lora(
        result.lora,
        out.parent,
        out.stem,
        model=options.model,
        photos=result.photos,
        style=None if args.style == "as-is" else args.style,
        preview=preview,
        overwrite=args.overwrite,
    )
    progress(f"done: {path} (identity {result.digest}, {result.photos} photo(s))")
    print(path)
    return EXIT_OK


def cmd_likeness(args: argparse.Namespace) -> int:
    """Score images against reference photos: a table of file, faces found and likeness."""
    from hyperlora_ext.devices import check_device
    from hyperlora_ext.identity import IdentityPipeline

    pipeline = IdentityPipeline(roots_from_args(args), device=check_device(args.device))
    refs = [Path(ref) for ref in args.ref]
    reference = pipeline.reference_from_photos(refs, [f"--ref {ref}" for ref in args.ref])
    images = [Path(image) for image in args.images]
    scores = pipeline.likeness(images, reference, [str(image) for image in args.images])
    print(likeness_table(scores))
    return EXIT_OK


def cmd_kit(args: argparse.Namespace) -> int:
    """Photos + identity LoRA -> a kohya sd-scripts training kit folder."""
    from hyperlora_ext.encoders.faces import FaceAnalyzer
    from hyperlora_ext.encoders.images import load_image
    from hyperlora_ext.files import safetensors_reader
    from hyperlora_ext.models import resolve_antelopev2
    from hyperlora_ext.refine.kit import KitSettings, write_kit
    from hyperlora_ext.refine.photos import face_photos

    with safetensors_reader(args.lora) as handle:
        lora = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    labels = [f"--ref {ref}" for ref in args.ref]
    images = [load_image(Path(ref), label) for ref, label in zip(args.ref, labels, strict=True)]
    analyzer = FaceAnalyzer(resolve_antelopev2(roots_from_args(args)), ["CPUExecutionProvider"])
    photos = face_photos(analyzer, images, labels, args.weight)
    settings = KitSettings(
        resolution=args.resolution, jitters=args.jitters, base_checkpoint=args.base_checkpoint
    )
    name = args.name or args.lora.stem
    kit = write_kit(args.out, name, lora, photos, settings, overwrite=args.overwrite)
    print(f"wrote {kit.images} training image(s) and {kit.lora} into {kit.folder}")
    print(f"train with (from the sd-scripts folder): {kit.folder / 'train.sh'}")
    return EXIT_OK


def likeness_table(scores: Sequence) -> str:
    """Aligned columns: file, faces, likeness (``no face`` when none was found)."""
    rows = [("file", "faces", "likeness")]
    rows += [(s.label, str(s.faces), s.text) for s in scores]
    width = max(len(row[0]) for row in rows)
    return "\n".join(f"{a:<{width}}  {b:>5}  {c:>8}" for a, b, c in rows)


# --------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from hyperlora_ext.download import PARTS, Sources

    parser = argparse.ArgumentParser(
        prog="python -m hyperlora_ext",
        description="HyperLoRA identity LoRAs: model setup and standalone tools.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="print tracebacks of failures")

    doctor = commands.add_parser(
        "doctor",
        parents=[common],
        help="show what is installed, where, what is missing and how to fix it",
    )
    add_roots_arguments(doctor)
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument("--models-only", action="store_true", help="skip the Python package checks")
    doctor.set_defaults(func=cmd_doctor)

    defaults = Sources()
    download = commands.add_parser(
        "download",
        parents=[common],
        help="fetch the HyperLoRA models, CLIP ViT-L/14 and antelopev2 from the Hugging Face Hub",
        description="Fetch the models into the folder layout the extension reads. Interrupted "
        "downloads resume; installed files that pass their checks are skipped.",
    )
    add_roots_arguments(download)
    download.add_argument(
        "--only", nargs="+", choices=PARTS, default=list(PARTS), help="fetch only these parts"
    )
    download.add_argument(
        "--model",
        action="append",
        help=f"HyperLoRA model to fetch (repeatable; 'fidelity', 'edit' or a folder name of the "
        f"source repo; default: both {', '.join(HYPERLORA_MODELS)})",
    )
    download.add_argument("--hyperlora-repo", default=defaults.hyperlora, help="%(default)s")
    download.add_argument("--clip-repo", default=defaults.clip, help="%(default)s")
    download.add_argument(
        "--antelopev2-repo",
        default=defaults.antelopev2,
        help="a mirror of InsightFace's antelopev2 pack, 'owner/name' or 'owner/name/folder' "
        "(default: %(default)s)",
    )
    download.add_argument(
        "--force", action="store_true", help="fetch again even when installed files pass checks"
    )
    download.add_argument(
        "--dry-run", action="store_true", help="only show what would be fetched and where"
    )
    download.set_defaults(func=cmd_download)
    _add_lora_parser(commands, common)
    _add_likeness_parser(commands, common)
    _add_kit_parser(commands, common)
    return parser


def _photo_command(
    commands, common: argparse.ArgumentParser, name: str, summary: str, description: str
) -> argparse.ArgumentParser:
    """A subcommand that takes photos of a person (``--ref PHOTO``, repeatable)."""
    parser = commands.add_parser(name, parents=[common], help=summary, description=description)
    parser.add_argument(
        "--ref", action="append", required=True, metavar="PHOTO", help="a photo (repeatable)"
    )
    return parser


def _add_likeness_parser(commands, common: argparse.ArgumentParser) -> None:
    likeness = _photo_command(
        commands,
        common,
        "likeness",
        "score images against photos of a person (ArcFace cosine similarity)",
        "For each IMAGE, the cosine similarity of its largest face's ArcFace embedding with the "
        "reference: the normalised mean embedding of the --ref photos (largest face of each). "
        "Needs only the antelopev2 face models.",
    )
    likeness.add_argument("images", nargs="+", metavar="IMAGE", help="images to score")
    likeness.add_argument(
        "--device", default="cpu", help="cpu, cuda or cuda:N for the face models (default: cpu)"
    )
    add_roots_arguments(likeness)
    likeness.set_defaults(func=cmd_likeness)


def _add_lora_parser(commands, common: argparse.ArgumentParser) -> None:
    lora = _photo_command(
        commands,
        common,
        "lora",
        "turn photos of a person into an ordinary SDXL LoRA file",
        "Detect the face in each photo, predict the identity LoRA and write it as a kohya LoRA "
        "(.safetensors) with a Lora-tab card (.json) and preview (.preview.png).",
    )
    lora.add_argument(
        "--model",
        default=HYPERLORA_MODELS[0],
        help="HyperLoRA model folder name, or 'fidelity' / 'edit' (default: %(default)s)",
    )
    lora.add_argument("--out", required=True, type=_out_file, help="the LoRA file to write")
    lora.add_argument("--overwrite", action="store_true", help="replace an existing file")
    lora.add_argument(
        "--style",
        choices=("as-is", "sgm", "diffusers"),
        default="as-is",
        help="kohya key names: as the model names them, or 'sgm' for kohya sd-scripts training",
    )
    lora.add_argument("--face", choices=FACE_CHOICES, default="largest")
    lora.add_argument("--face-index", type=int, default=0, help="with --face index: 0 = leftmost")
    lora.add_argument(
        "--keep-background", action="store_true", help="do not grey out the background"
    )
    lora.add_argument("--grayscale", action="store_true", help="encode the face in grayscale")
    lora.add_argument("--clip", help="CLIP ViT-L/14 encoder name (default: the installed one)")
    lora.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: %(default)s)"
    )
    lora.add_argument(
        "--dtype",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="auto: on CPU bf16 where it has AMX or AVX512-BF16, else fp32; fp16 on CUDA",
    )
    add_roots_arguments(lora)
    lora.set_defaults(func=cmd_lora)


def _add_kit_parser(commands, common: argparse.ArgumentParser) -> None:
    kit = _photo_command(
        commands,
        common,
        "kit",
        "write a kohya sd-scripts training kit to refine an identity LoRA",
        "Write the identity LoRA with sd-scripts' SDXL key names, 2x-face crops with captions and "
        "loss masks, dataset.toml and the authors' recipe (train.sh / train.bat: 50 steps, lr "
        "1e-4, batch 4, CLIP skip 2, UNet only, masked loss) into --out.",
    )
    kit.add_argument("--lora", required=True, type=user_path, help="the identity LoRA file")
    kit.add_argument("--out", required=True, type=user_path, help="the kit folder (new or empty)")
    kit.add_argument("--name", help="identity name (default: the LoRA file's name)")
    kit.add_argument(
        "--weight", action="append", type=float, help="photo weight, one per --ref (default 1)"
    )
    kit.add_argument("--resolution", type=int, default=768, help="crop size (default 768)")
    kit.add_argument("--jitters", type=int, default=2, help="extra jittered crops per photo")
    kit.add_argument("--base-checkpoint", default="", help="SDXL checkpoint to put in train.sh")
    kit.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    add_roots_arguments(kit)
    kit.set_defaults(func=cmd_kit)


def _out_file(text: str) -> Path:
    """``--out`` as users paste it (see user_path); a path that names no file is a usage error."""
    path = user_path(text)
    if path.name in ("", ".", ".."):
        raise argparse.ArgumentTypeError(
            f"{text!r} names no file: give the LoRA file to write, e.g. out/alice.safetensors"
        )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; the one place where every failure becomes a message and exit code.

    Known errors (ours, and OS errors such as a file that cannot be written) print their message;
    anything else is a bug: one line saying so and where the traceback was written.
    ``--debug`` prints the traceback instead.
    """
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (HyperLoRAError, OSError) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        if debug:
            traceback.print_exc()
        where = "above" if debug else f"in {_save_traceback()}"
        print(
            f"internal error: {type(exc).__name__}: {_first_line(exc)}, please report it "
            f"(the details are {where}; --debug prints them)",
            file=sys.stderr,
        )
        return EXIT_ERROR


def _save_traceback() -> str:
    path = Path(tempfile.gettempdir()) / CRASH_LOG
    try:
        path.write_text(traceback.format_exc(), "utf-8")
    except OSError:
        return "not saved (the temporary folder is not writable)"
    return str(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "(no message)"
