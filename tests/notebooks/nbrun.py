"""Run a notebook top to bottom in a fresh kernel of this interpreter; check it is stripped.

The kernel is this venv's Python through a kernelspec written to a temporary folder, so no
user-level or system Jupyter install is needed or consulted.

Also a command that strips outputs and execution counts from notebooks in place::

    .venv/bin/python -m tests.notebooks.nbrun --strip notebooks/*.ipynb
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import nbformat
from nbformat import NotebookNode

KERNEL_NAME = "fhir-cohort-venv"


def write_kernelspec(kernels_dir: Path) -> Path:
    """A kernelspec for this interpreter (``sys.executable``) under ``kernels_dir``."""
    from ipykernel.kernelspec import write_kernel_spec

    return Path(write_kernel_spec(str(kernels_dir / KERNEL_NAME)))


def run_notebook(
    path: Path,
    *,
    kernels_dir: Path,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    timeout: int = 120,
) -> NotebookNode:
    """Execute ``path`` in ``workdir`` and return the executed notebook.

    ``env`` is added to this process's environment for the kernel. A cell error raises
    :class:`nbclient.exceptions.CellExecutionError` naming the cell.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    km = AsyncKernelManager(
        kernel_name=KERNEL_NAME,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)]),
    )
    # A private IPython dir: no user startup files or profile settings leak into the run.
    ipython_dir = workdir / ".ipython"
    ipython_dir.mkdir(parents=True, exist_ok=True)
    kernel_env = {**os.environ, "IPYTHONDIR": str(ipython_dir), **(env or {})}
    kernel_env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures
    client = NotebookClient(
        nb,
        km=km,
        timeout=timeout,
        allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    # The client does not own ``km``, so it must be told to shut the kernel down after the run.
    client.execute(env=kernel_env, cleanup_kc=True)
    return nb


def stripped(nb: NotebookNode) -> NotebookNode:
    """A copy of ``nb`` without outputs, execution counts or execution metadata."""
    out = copy.deepcopy(nb)
    for cell in out.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)
        cell.metadata.pop("scrolled", None)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strip", nargs="+", type=Path, required=True, metavar="NOTEBOOK")
    args = parser.parse_args(argv)
    for path in args.strip:
        nb = nbformat.read(path, as_version=4)
        clean = stripped(nb)
        if clean != nb:
            nbformat.write(clean, path)
            print(f"stripped {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
