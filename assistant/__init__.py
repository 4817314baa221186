"""Domain assistant platform: one base LLM, one vLLM engine, a LoRA adapter and a Qdrant index per domain."""
from assistant.config import Settings  # noqa: F401  (also sets the offline environment variables)

__version__ = "0.1.0"
__all__ = ["Answer", "Citation", "Platform", "Settings"]


def __getattr__(name):  # lazy: `assistant --help` must not pay for torch and vLLM imports
    if name in ("Platform", "Answer", "Citation"):
        from assistant import platform
        return getattr(platform, name)
    raise AttributeError(name)
