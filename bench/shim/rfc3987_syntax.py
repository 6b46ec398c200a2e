"""Bench fairness shim: make jsonschema's optional ``rfc3987_syntax`` import fail at once.

The dev venv holds jupyter_server (for the remote-kernel tests), which pulls in
``rfc3987-syntax``; jsonschema (imported by nbformat in every runner) then compiles its grammar
at import, 0.5-2 s per process. nbjob skips that import itself (``cli._skip_slow_imports``);
this folder, put first on PYTHONPATH for every runner, gives papermill and nbclient the same
start a venv without jupyter_server would give them.
"""

raise ImportError("rfc3987_syntax is disabled for the benchmark (see bench/shim)")
