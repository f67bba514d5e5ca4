"""Make sure the embedded dataset (Fashion-MNIST) is on disk: ``python -m distillery.data.fetch``.

Order: the folder named in params.yaml (default: Debian's ``/usr/share/datasets/fashion-mnist``); else
``apt-get install dataset-fashion-mnist`` when running as root with apt; else torchvision's download into
``data/raw/fashion-mnist`` (online machines only), after which params.yaml is pointed there; else a one-line
error saying what to install.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from distillery.data.readers.fashion_mnist import FILES
from distillery.data.registry import DatasetError
from distillery.data.readers.fashion_mnist import find_idx_file

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DOWNLOAD_ROOT = Path("data/raw/fashion-mnist")


def has_fashion_mnist(root: Path) -> bool:
    try:
        for stems in FILES.values():
            for stem in stems:
                find_idx_file(root, stem)
    except DatasetError:
        return False
    return True


def _apt_install() -> bool:
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return False
    print(f"installing Debian package {DEBIAN_PACKAGE} ...", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["apt-get", "update", "-qq"], check=False, **quiet)
    return subprocess.run(["apt-get", "install", "-y", "-qq", DEBIAN_PACKAGE], check=False, **quiet).returncode == 0


def _torchvision_download(root: Path) -> bool:
    try:
        from torchvision.datasets import FashionMNIST

        for train in (True, False):
            FashionMNIST(str(root), train=train, download=True)
        return has_fashion_mnist(root)
    except Exception as err:  # offline, blocked, ...: fall through to the error message
        print(f"torchvision download failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
              file=sys.stderr)
        return False


def _point_params_at(params_file: Path, root: Path) -> None:
    text = params_file.read_text()
    new = re.sub(r"(\n  fashion_mnist:\n(?:    .*\n)*?    root: ).*", rf"\g<1>{root}", text, count=1)
    params_file.write_text(new)


def ensure_fashion_mnist(params_file: Path = Path("params.yaml")) -> Path:
    params = yaml.safe_load(params_file.read_text())
    root = Path(params["data"]["fashion_mnist"]["root"])
    if has_fashion_mnist(root):
        return root
    if root == Path("/usr/share/datasets/fashion-mnist") and _apt_install() and has_fashion_mnist(root):
        return root
    if _torchvision_download(DOWNLOAD_ROOT):
        _point_params_at(params_file, DOWNLOAD_ROOT)
        print(f"downloaded Fashion-MNIST to {DOWNLOAD_ROOT}; params.yaml data.fashion_mnist.root now points there")
        return DOWNLOAD_ROOT
    raise DatasetError(f"Fashion-MNIST not found at {root}: install it with `sudo apt-get install {DEBIAN_PACKAGE}` "
                       f"(Debian/Ubuntu) or put the four idx files there and re-run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", type=Path)
    args = parser.parse_args()
    try:
        print(f"Fashion-MNIST: {ensure_fashion_mnist(args.params)}")
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
