"""Builds the extension vhdx._vhdx from src/*.cc against the C++ library.

Why linked this way: the extension links libvhdx.a (position-independent,
hidden visibility: only the public API is visible, and the static link
leaves nothing of it to resolve at run time) from a CMake build directory,
plus the library's private dependencies as `pkg-config --static` lists
them. The installed package then needs no libvhdx.so, only the system's
shared libfmt, libext2fs, libcom_err and libblkid, which Debian installs
with the -dev packages the library is built with.

Environment:
  VHDX_BUILD_DIR   CMake build directory holding lib/libvhdx.a (default
                   ../build beside this folder)
  VHDX_LIBRARY     the static library itself (default VHDX_BUILD_DIR/lib/libvhdx.a)
  VHDX_PY_BUILD    where setuptools puts its intermediate files (default
                   build/ here); CMake points it into its build tree so that
                   building the package writes nothing into the sources.
  VHDX_PY_JOBS     parallel compiles (default 2)
"""

import os
import shlex
import subprocess

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension
from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD_DIR = os.path.abspath(os.environ.get("VHDX_BUILD_DIR") or os.path.join(ROOT, "build"))
LIBRARY = os.path.abspath(os.environ.get("VHDX_LIBRARY") or os.path.join(BUILD_DIR, "lib", "libvhdx.a"))
if not os.path.exists(LIBRARY):
    raise SystemExit(f"setup.py: {LIBRARY} not found: build the library first "
                     f"(cmake --build {BUILD_DIR} --target vhdx) or set VHDX_BUILD_DIR")


def pkg_config_libs():
    out = subprocess.run(["pkg-config", "--libs", "--static", "fmt", "ext2fs", "com_err", "blkid"],
                         check=True, capture_output=True, text=True).stdout
    return shlex.split(out)


SOURCES = sorted(os.path.join("src", f) for f in os.listdir(os.path.join(HERE, "src")) if f.endswith(".cc"))

ext = Pybind11Extension(
    "vhdx._vhdx",
    SOURCES,
    include_dirs=[os.path.join(ROOT, "include")],
    cxx_std=20,
    # -g0: Python's own flags ask for -g, which doubles the compile time of
    # pybind11 code for symbols nobody debugs here.
    extra_compile_args=["-O2", "-g0", "-Wall", "-Wextra", "-Werror"],
    extra_objects=[LIBRARY],
    extra_link_args=pkg_config_libs() + ["-pthread"],
    depends=[os.path.join("src", f) for f in os.listdir(os.path.join(HERE, "src")) if f.endswith(".h")]
    + [LIBRARY],
)

ParallelCompile("VHDX_PY_JOBS", default=2).install()

build_base = os.environ.get("VHDX_PY_BUILD")
options = {}
if build_base:
    options = {"build": {"build_base": build_base}, "egg_info": {"egg_base": build_base}}
    os.makedirs(build_base, exist_ok=True)

setup(ext_modules=[ext], options=options, zip_safe=False)
