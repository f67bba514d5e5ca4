"""DVC stage report: the methods x datasets table (reports/results.md, .csv) and plots (reports/plots/)."""

from distillery.cli import run_stage, stage_parser
from distillery.reporting import build_report

parser = stage_parser(__doc__)


def main(args, params):
    table = build_report(params)
    print(table)
    print("\nwritten: reports/results.md, reports/results.csv, reports/plots/")


if __name__ == "__main__":
    run_stage(parser, main)
