"""What the registry's consumers load: models that answer with class names and probabilities, not logits.

Every model action-recognition logs is an MLflow pyfunc. Its output is one row per input
(:data:`ANSWER_COLUMNS`): the top-1 ``label`` and its ``probability``, the top-5 labels and their
probabilities, and the whole probability vector in the order of the model's ``classes`` (part of the model,
also in its metadata). The signature says so.

- :class:`Classifier` (``<dataset>-keypoint``, ``<dataset>-rgb``): input the tensor the network takes (the
  signature's shape: keypoints T x J x C, or cropped frames). :func:`load_module` gives the torch module
  itself, for evaluation and for people who want logits.
- ``VideoClassifier`` (``<dataset>-video``, :mod:`action_recognition.video_model`): input a video (a path, a
  storage URI or the bytes); the same code as ``action-recognition predict``.

Bad input is refused with an ``MlflowException`` (INVALID_PARAMETER_VALUE): ``mlflow models serve`` answers it
with 400 and the reason, and keeps serving.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from action_recognition.services import log_model

TOP_K = 5
ANSWER_COLUMNS = ("label", "probability", "top_labels", "top_probabilities", "probabilities")
TORCH_ARTIFACT = "torch_model"
POSE_ARTIFACT = "pose_weights"


def answers(logits: np.ndarray, classes: list[str], top_k: int = TOP_K) -> pd.DataFrame:
    """One row per input: the softmax of ``logits`` (N, K) as labels and probabilities (see module
    docstring)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != len(classes):
        raise ValueError(f"logits of shape {z.shape} do not match {len(classes)} classes")
    z = z - z.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    order = np.argsort(-probs, axis=1, kind="stable")[:, : min(top_k, len(classes))]
    return pd.DataFrame(
        {
            "label": [classes[row[0]] for row in order],
            "probability": [float(p[row[0]]) for p, row in zip(probs, order, strict=True)],
            "top_labels": [[classes[i] for i in row] for row in order],
            "top_probabilities": [[float(p[i]) for i in row] for p, row in zip(probs, order, strict=True)],
            "probabilities": [[float(v) for v in p] for p in probs],
        },
        columns=list(ANSWER_COLUMNS),
    )


def bad_input(message: str) -> Exception:
    """An error the scoring server answers with 400 and ``message`` (and that a caller in-process can
    read)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def logits_of(module: Any, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """The module's logits for ``x`` (N, ...) on the CPU, in batches."""
    import torch

    outs = []
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            outs.append(
                module(torch.from_numpy(np.ascontiguousarray(x[start : start + batch]))).float().numpy()
            )
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


class Classifier(PythonModel):
    """The network's input tensor in, answers out; the torch module is the artifact ``torch_model``."""

    def __init__(self, classes: list[str], input_shape: list[int], dtype: str) -> None:
        self.classes = list(classes)
        self.input_shape = [int(v) for v in input_shape]  # -1 first: the batch
        self.dtype = dtype  # float32 keypoints, uint8 frames
        self.module: Any = None

    def load_context(self, context: Any) -> None:
        import mlflow.pytorch

        self.module = mlflow.pytorch.load_model(context.artifacts[TORCH_ARTIFACT], map_location="cpu").eval()

    # model_input is left unannotated: MLflow reads predict's type hints as a signature, and the logged one is
    # exact.
    def predict(self, context, model_input, params=None):
        x = np.asarray(model_input)
        if list(x.shape[1:]) != self.input_shape[1:]:
            raise bad_input(
                f"input of shape {list(x.shape)}; this model takes {self.input_shape} (-1: any batch)"
            )
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise bad_input("input holds NaN or infinite values")
        x = x.astype(self.dtype, copy=False)
        return answers(logits_of(self.module, x), self.classes)


def model_info(folder: Path) -> Any:
    """The ``MLmodel`` of a fetched model (:func:`action_recognition.services.fetch_model`): flavors,
    signature, metadata."""
    from mlflow.models import Model

    return Model.load(str(folder))


def load_module(folder: Path, model_uri: str = "") -> Any:
    """The torch module of a model action-recognition logged, fetched into ``folder`` (eval mode, CPU);
    models logged before the pyfunc answered with labels are plain ``mlflow.pytorch`` models and load as
    such. ``model_uri`` names it in errors."""
    import mlflow.pyfunc
    import mlflow.pytorch

    if "pytorch" in model_info(folder).flavors:
        return mlflow.pytorch.load_model(str(folder), map_location="cpu").eval()
    wrapped = mlflow.pyfunc.load_model(str(folder)).unwrap_python_model()
    module = getattr(wrapped, "module", None)  # Classifier or video_model.VideoClassifier
    if module is None:
        raise TypeError(f"{model_uri or folder} is not a model action-recognition logged")
    return module


def log_classifier(
    client: Any,
    run_id: str,
    module: Any,
    example: np.ndarray,
    classes: list[str],
    *,
    metadata: dict[str, Any],
    requirements: list[str],
) -> str:
    """Log ``module`` as a :class:`Classifier` named ``model`` of run ``run_id`` on ``client``'s server; its
    ``models:/`` URI."""
    import mlflow.pyfunc
    import mlflow.pytorch
    from mlflow.models import infer_signature

    output = answers(logits_of(module, example), classes)
    with tempfile.TemporaryDirectory(prefix="ar-torch-") as tmp:
        torch_dir = Path(tmp) / TORCH_ARTIFACT
        mlflow.pytorch.save_model(
            module, str(torch_dir), serialization_format="pickle", pip_requirements=requirements
        )

        def save(folder: Path, spec: Any) -> None:
            mlflow.pyfunc.save_model(
                str(folder),
                python_model=Classifier(classes, [-1, *example.shape[1:]], str(example.dtype)),
                artifacts={TORCH_ARTIFACT: str(torch_dir)},
                signature=infer_signature(example, output),
                input_example=example,
                pip_requirements=[*requirements, "pandas"],
                metadata=metadata,
                mlflow_model=spec,
            )

        return log_model(client, run_id, "model", save)
