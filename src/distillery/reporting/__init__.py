"""Reporting: the benchmark table (markdown/CSV) and plots, built from the metrics JSON files only."""

from distillery.reporting.report import build_report

__all__ = ["build_report"]
