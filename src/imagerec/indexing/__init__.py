"""The ``index`` stage, in seams: ``plan`` (what needs work) → ``decode`` (in an ``executors`` worker)
→ ``embed_step`` → ``writer`` (one transaction per batch), driven by ``run.index_collection``."""
