"""Evaluation helpers: ONNX export and check, ONNX Runtime sessions, compressed sparse checkpoints.

Importing this package does not import ``onnx`` or ``onnxruntime`` (the functions import them when
called). Detection metrics live in :mod:`modprune.integrations.ultralytics.validate`.
"""

from modprune.evaluate.onnx_export import DEFAULT_OPSET, check_onnx, export_onnx, ort_session
from modprune.evaluate.storage import load_sparse_state_dict, read_sparse_header, save_sparse_state_dict

__all__ = [
    "DEFAULT_OPSET",
    "check_onnx",
    "export_onnx",
    "ort_session",
    "load_sparse_state_dict",
    "read_sparse_header",
    "save_sparse_state_dict",
]
