"""The same metrics for every model on the same test split (numpy only: no torch, no MLflow).

top-1, top-5, mean class accuracy, macro-F1, per-class accuracy and the confusion matrix (CSV and PNG).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Metrics:
    """Metrics of one model on one split. ``confusion[i, j]``: true class i predicted as j."""

    top1: float
    top5: float
    mean_class_acc: float
    macro_f1: float
    per_class_acc: dict[str, float]
    confusion: np.ndarray
    classes: list[str]
    samples: int
    extra: dict[str, float] = field(default_factory=dict)

    def scalars(self, prefix: str = "test_") -> dict[str, float]:
        """Flat metrics for MLflow and the JSON line: ``test_top1``, ``test_top5``, ``mean_class_acc``, ..."""
        return {
            f"{prefix}top1": self.top1,
            f"{prefix}top5": self.top5,
            "mean_class_acc": self.mean_class_acc,
            "macro_f1": self.macro_f1,
            f"{prefix}samples": float(self.samples),
        }

    def confusion_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["true \\ predicted", *self.classes])
        for name, row in zip(self.classes, self.confusion.tolist(), strict=True):
            writer.writerow([name, *row])
        return buf.getvalue()

    def per_class_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["class", "accuracy", "support", "precision", "recall", "f1"])
        tp = np.diag(self.confusion).astype(float)
        support = self.confusion.sum(1)
        predicted = self.confusion.sum(0)
        for i, name in enumerate(self.classes):
            precision = tp[i] / predicted[i] if predicted[i] else 0.0
            recall = tp[i] / support[i] if support[i] else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            writer.writerow(
                [name, f"{recall:.4f}", int(support[i]), f"{precision:.4f}", f"{recall:.4f}", f"{f1:.4f}"]
            )
        return buf.getvalue()

    def confusion_png(self, path: Path, title: str = "") -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        k = len(self.classes)
        size = max(5.0, 0.45 * k + 2)
        fig, ax = plt.subplots(figsize=(size, size))
        norm = self.confusion / np.maximum(self.confusion.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(k), self.classes, rotation=90, fontsize=7)
        ax.set_yticks(range(k), self.classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title or f"top-1 {self.top1:.3f}, mean class acc {self.mean_class_acc:.3f}", fontsize=9)
        for i in range(k):
            for j in range(k):
                if self.confusion[i, j]:
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(
                        j, i, str(self.confusion[i, j]), ha="center", va="center", fontsize=6, color=colour
                    )
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def compute_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> Metrics:
    """Metrics from logits (N, K) and integer labels (N,)."""
    k = len(classes)
    if logits.ndim != 2 or logits.shape[1] != k or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits {logits.shape} do not match labels {labels.shape} and {k} classes")
    n = len(labels)
    predicted = logits.argmax(1) if n else np.zeros(0, dtype=np.int64)
    top = min(5, k)
    topk = np.argsort(-logits, axis=1)[:, :top] if n else np.zeros((0, top), dtype=np.int64)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    support = confusion.sum(1)
    tp = np.diag(confusion).astype(float)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    predicted_count = confusion.sum(0)
    precision = np.divide(tp, predicted_count, out=np.zeros(k), where=predicted_count > 0)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0
    )
    present = support > 0
    return Metrics(
        top1=float((predicted == labels).mean()) if n else 0.0,
        top5=float((topk == labels[:, None]).any(1).mean()) if n else 0.0,
        mean_class_acc=float(recall[present].mean()) if present.any() else 0.0,
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        per_class_acc={c: float(recall[i]) for i, c in enumerate(classes)},
        confusion=confusion,
        classes=list(classes),
        samples=n,
    )
