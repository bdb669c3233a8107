"""Examples: bring-your-own search spaces and evaluators (run from the repository root with PYTHONPATH=.)."""
