"""nbjob: run a notebook bundle cell by cell in a real Jupyter kernel inside a batch job."""

__version__ = "0.1.0"
