"""Datasets: published-layout readers, the decoded cache, samplers and tensor transforms."""

from distillery.data.registry import DatasetError, available_datasets, read_index, register_reader

__all__ = ["DatasetError", "available_datasets", "read_index", "register_reader"]
