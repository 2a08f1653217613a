"""Build of the one compiled part, the Perceiver's fused key stream (everything else is in setup.cfg).

Both extensions are optional: where no C compiler is found, the install goes on and the model runs its
PyTorch key stream (``brainsymphony.fused_stream.fused_stream_available()`` says which one runs).
"""

import platform

from setuptools import Extension, setup

SOURCE = ["brainsymphony/_keystream.c"]
FLAGS = ["-O3", "-g0", "-Wno-psabi"]  # no debug information: the same source builds the same bytes anywhere

extensions = [Extension("brainsymphony._keystream", SOURCE, extra_compile_args=FLAGS, optional=True)]
if platform.machine().lower() in ("x86_64", "amd64"):
    extensions.append(
        Extension(
            "brainsymphony._keystream_avx512",
            SOURCE,
            define_macros=[("LANES", "16"), ("MODULE", "_keystream_avx512")],
            extra_compile_args=[*FLAGS, "-march=x86-64-v4"],
            optional=True,
        )
    )

setup(ext_modules=extensions)
