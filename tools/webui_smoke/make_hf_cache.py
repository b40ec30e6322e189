"""Offline HF cache entry for openai/clip-vit-large-patch14 (config + tokenizer), built from
open_clip's bundled BPE vocab (same BPE as CLIP), so A1111 loads SDXL without hub access.

    python make_hf_cache.py <HF_HOME folder>   (in the WebUI's venv), then launch with
    HF_HOME=<that folder> HF_HUB_OFFLINE=1
"""

import gzip
import json
import sys
from pathlib import Path

import open_clip
from open_clip.tokenizer import bytes_to_unicode
from transformers import CLIPConfig

home = Path(sys.argv[1])
repo = home / "hub/models--openai--clip-vit-large-patch14"
snap = repo / "snapshots" / ("0" * 40)
snap.mkdir(parents=True, exist_ok=True)
(repo / "refs").mkdir(parents=True, exist_ok=True)
(repo / "refs/main").write_text("0" * 40)
bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
with gzip.open(bpe) as handle:
    merges = handle.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
vocab = list(bytes_to_unicode().values())
vocab += [v + "</w>" for v in vocab]
vocab += ["".join(m.split()) for m in merges]
vocab += ["<|startoftext|>", "<|endoftext|>"]
(snap / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
(snap / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
special = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}
(snap / "special_tokens_map.json").write_text(json.dumps(special))
(snap / "tokenizer_config.json").write_text(
    json.dumps(
        {
            **special,
            "model_max_length": 77,
            "do_lower_case": True,
            "tokenizer_class": "CLIPTokenizer",
        }
    )
)
CLIPConfig(
    text_config=dict(
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        projection_dim=768,
    ),
    vision_config=dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_attention_heads=16,
        num_hidden_layers=24,
        patch_size=14,
        projection_dim=768,
    ),
    projection_dim=768,
).to_json_file(snap / "config.json")
print(snap)
