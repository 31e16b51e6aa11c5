"""obliviate — locate, edit and audit knowledge in language models.

The shared core: model loading, fact sets, hooks, result files, reports and the CLI.
The core never imports a stage package (locate, edit, audit).
"""

__version__ = "0.1.0"
