"""Entry point for `python app.py` and for Hugging Face Spaces (which looks for `demo` here)."""
from __future__ import annotations

import os

# No telemetry calls from an offline demo.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

if os.environ.get("SPACES_ZERO_GPU"):
    # On ZeroGPU, `spaces` must be imported before torch so it can emulate CUDA at import time
    # (the models are then moved to the GPU eagerly, see mt3_demo.ui.build_demo).
    try:
        import spaces  # noqa: F401
    except ImportError:
        pass

import logging  # noqa: E402

from mt3_demo import allocator  # noqa: E402
from mt3_demo.options import read_env  # noqa: E402
from mt3_demo.ui import build_demo, launch_kwargs  # noqa: E402

# Before Gradio starts its threads: runs on worker threads then share the main heap, which is
# handed back after each run (mt3_demo.allocator; README "Server memory").
allocator.one_arena()

# The environment, read once for the whole app; a bad variable keeps its default (the app starts).
settings, problems = read_env()
for problem in problems:
    logging.getLogger("mt3_demo").warning("%s; using the default.", problem)

demo = build_demo(settings=settings)

if __name__ == "__main__":
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_kwargs(),
    )
