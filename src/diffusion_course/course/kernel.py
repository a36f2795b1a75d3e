"""The course's Jupyter kernel: IPython's, with notebook metadata that is the same on every Python.

When JupyterLab opens a notebook and its kernel starts, it writes the kernel's name and
``language_info`` into the notebook's metadata, and marks the notebook modified if that
changed anything. IPython's kernel reports the interpreter's exact version (3.11.7, 3.12.4, ...)
in ``language_info``, which differs from one student's machine to the next, so every chapter
would open modified and every save would make a diff. This kernel reports everything else
IPython reports, without the version; the chapters are committed with ``NOTEBOOK_METADATA``,
which is what JupyterLab writes with this kernel (tests/test_lab.py checks it in a browser).

    python -m diffusion_course.course.kernel --sys-prefix     # make env; --prefix DIR, --user
"""
from __future__ import annotations

import argparse
import shutil

from ipykernel.ipkernel import IPythonKernel

NAME = "python3"                  # the name the chapters' metadata and papermill ask for
DISPLAY_NAME = "Python 3 (diffusion course)"


class CourseKernel(IPythonKernel):
    language_info = {key: value for key, value in IPythonKernel.language_info.items() if key != "version"}


NOTEBOOK_METADATA = {
    "kernelspec": {"display_name": DISPLAY_NAME, "language": "python", "name": NAME},
    "language_info": CourseKernel.language_info,
}


def install(prefix: str | None = None, user: bool = False) -> str:
    """Install the kernel spec (``--sys-prefix``: ``prefix=sys.prefix``); returns its folder."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager

    spec = write_kernel_spec(overrides={"display_name": DISPLAY_NAME},
                             extra_arguments=["--IPKernelApp.kernel_class=diffusion_course.course.kernel.CourseKernel"],
                             python_arguments=["-Xfrozen_modules=off"])   # as ipykernel's own install
    try:
        return KernelSpecManager().install_kernel_spec(spec, kernel_name=NAME, user=user, prefix=prefix)
    finally:
        shutil.rmtree(spec, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    import sys

    parser = argparse.ArgumentParser(prog="python -m diffusion_course.course.kernel",
                                     description="Install the course's Jupyter kernel.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sys-prefix", action="store_true", help="into this environment (make env)")
    where.add_argument("--prefix", help="into PREFIX/share/jupyter/kernels")
    where.add_argument("--user", action="store_true", help="into your own Jupyter folder")
    args = parser.parse_args(argv)
    print(f"kernel {DISPLAY_NAME!r} installed in "
          f"{install(sys.prefix if args.sys_prefix else args.prefix, user=args.user)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
