"""One way to open an ONNX model on the CPU, shared by every local model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["cpu_session"]


def cpu_session(model: Path, threads: int | None = None) -> Any:
    """An onnxruntime session: full graph optimisation, sequential execution
    (one request's work at a time; callers batch), ``threads`` intra-op
    threads (None: onnxruntime's default), warnings silenced (int8 kernels
    log noise)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(model), sess_options=options,
                                providers=["CPUExecutionProvider"])
