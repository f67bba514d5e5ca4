"""Evaluation metrics (API.md section 3); all values in percent."""

from distillery.evaluation._placeholder import classification_metrics, retrieval_metrics

__all__ = ["classification_metrics", "retrieval_metrics"]
