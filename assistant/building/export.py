"""`assistant export DOMAIN --merged OUT`: the base model with the domain adapter merged in, as a plain
checkpoint (single-domain deployments: vLLM serves it with no LoRA overhead)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from assistant.serving.adapter_manifest import check_adapter


def export_merged(base_model: str | Path, base_sha256: str, adapter_dir: str | Path, out: str | Path,
                  dtype: str = "bfloat16") -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = check_adapter(adapter_dir, base_sha256)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new directory")
    torch_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()  # merge in fp32, then cast
    merged = merged.to(torch_dtype)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base_model)).save_pretrained(str(tmp))
    (tmp / "merged.json").write_text(json.dumps({
        "domain": manifest.get("domain"), "adapter_version": manifest.get("version"),
        "base_model_sha256": base_sha256, "dtype": dtype}, indent=2) + "\n")
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out
