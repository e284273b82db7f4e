"""What builds and measures but never serves: weight profiles, counting, the benchmark, the evaluation."""

# The serving package first: importing it drops the library notices that say nothing to the user before
# any tool here imports diffusers (model/logs.py, drop_import_notices).
import model  # noqa: F401
