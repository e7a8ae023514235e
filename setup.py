"""Build script: maps the source folders to `rowforge.*` and compiles the Cython core.

The extensions are optional: without a C compiler (a client-only install) the build warns and
goes on, and `rowforge.fastcore` uses its pure-Python twins. Set ROWFORGE_PUREPYTHON=1 to skip
them outright (a client install in seconds), ROWFORGE_CYTHON_ANNOTATE=1 to write Cython's HTML
annotations next to the sources.
"""

import os

from setuptools import Extension, find_packages, setup

ROOTS = {
    "rowforge": "proto/rowforge",
    "rowforge.server": "server",
    "rowforge.fastcore": "fastcore",
    "rowforge.clients": "clients",
}

EXTENSIONS = ["_template", "_rrf", "_ann"]


def _packages() -> list[str]:
    packages = []
    for name, folder in ROOTS.items():
        packages.append(name)
        packages += [f"{name}.{sub}" for sub in find_packages(folder)]
    # `rowforge` itself also contains the generated `rowforge.v1`, found above.
    return sorted(set(packages))


def _extensions() -> list:
    if os.environ.get("ROWFORGE_PUREPYTHON") == "1":
        return []
    from Cython.Build import cythonize

    sources = [
        Extension(f"rowforge.fastcore.{name}", [f"fastcore/{name}.pyx"])
        for name in EXTENSIONS
        if os.path.exists(f"fastcore/{name}.pyx")
    ]
    compiled = cythonize(
        sources,
        language_level=3,
        annotate=os.environ.get("ROWFORGE_CYTHON_ANNOTATE") == "1",
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
    for extension in compiled:  # cythonize builds new Extension objects without the flag
        extension.optional = True
    return compiled


setup(
    package_dir=ROOTS,
    packages=_packages(),
    package_data={"rowforge": ["py.typed"], "rowforge.v1": ["*.pyi", "*.proto"],
                  "rowforge.fastcore": ["*.pyi", "*.pxd"], "rowforge.clients": ["py.typed", "*.pyi"],
                  "rowforge.server.storage.migrations": ["script.py.mako"]},
    ext_modules=_extensions(),
)
