"""Domain assistant platform: one base LLM, one vLLM engine, a LoRA adapter and a Qdrant index per domain."""
from .config import Settings  # noqa: F401  (also sets the offline environment variables)

__version__ = "0.1.0"
