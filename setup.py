"""The one part of the package that is compiled: the linear-layer kernels in handspring_models/runtime/
native/ (the fp32 panel kernel, the int8 kernel and their shared epilogue), one plain shared library
that ``handspring_models.runtime.panel_gemm`` and ``int8_gemm`` load with ctypes. Everything else is in pyproject.toml.

Optional: where there is no C compiler, or the CPU is not x86-64, the package installs without it
and the models run on PyTorch's own kernels (oneDNN), the same maths at a lower speed on small
batches. The Dockerfile builds the same source with the same flags (tests/test_packaging.py).
"""

import platform

from setuptools import Extension, setup

# -mavx2 -mfma: the Python side calls the library only where PyTorch reports AVX2 or better.
# -fopenmp: it runs on the OpenMP runtime PyTorch loads (libgomp, the same soname).
PANEL_GEMM_FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp"]
NATIVE = "handspring_models/runtime/native"
NATIVE_SOURCES = ["panel_gemm.c", "bf16_gemm.c", "int8_gemm.c", "attention.c", "epilogue.c", "schedule.c"]

extensions = []
if platform.machine().lower() in ("x86_64", "amd64") and platform.system() == "Linux":
    extensions.append(Extension(
        "handspring_models.runtime.native.panel_gemm",
        sources=[f"{NATIVE}/{name}" for name in NATIVE_SOURCES],
        depends=[f"{NATIVE}/epilogue.h", f"{NATIVE}/schedule.h"],
        extra_compile_args=PANEL_GEMM_FLAGS,
        extra_link_args=["-fopenmp"],
        optional=True,
    ))

setup(ext_modules=extensions)
