#!/usr/bin/env python3
"""Build the parity fixtures under tests/fixtures/ with the pinned reference stack.

Each module in scripts/fixtures/ exposes `make(out_dir: pathlib.Path)` and writes its
own files (tiny random-weight models in exact diffusers layout, inputs, reference
outputs).  Run all:  python scripts/make_fixtures.py
Run some:            python scripts/make_fixtures.py unet schedulers

Set up the environment once with:
    python3 -m venv .venv-ref && .venv-ref/bin/pip install -r scripts/requirements-fixtures.txt
Developers only: tests load the committed fixtures and never need Python.
"""
import importlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures"


def main(argv):
    sys.path.insert(0, str(ROOT / "scripts"))
    names = argv or sorted(p.stem for p in (ROOT / "scripts" / "fixtures").glob("*.py") if not p.stem.startswith("_"))
    for name in names:
        module = importlib.import_module(f"fixtures.{name}")
        print(f"[make_fixtures] {name}", flush=True)
        module.make(OUT)


if __name__ == "__main__":
    main(sys.argv[1:])
