"""Domain assistant platform: one base LLM, one vLLM engine, a LoRA adapter and a Qdrant index per domain.

The SDK face, everything `app.py`, the HTTP server and users need:

    from assistant import Platform, Answer, Settings, AssistantError
"""
from assistant.config import Settings, configure_environment
from assistant.errors import (
    AdapterError,
    AssistantError,
    AuthenticationError,
    ConfigError,
    ConflictError,
    DomainError,
    EngineUnavailableError,
    ErrorInfo,
    FeedbackError,
    InputError,
    ModelError,
    NotFoundError,
    PermissionDeniedError,
    QuestionError,
    QuestionTooLongError,
    ScaffoldError,
    SettingsError,
    UnknownDomainError,
    error_info,
    mapped_error_types,
)

__version__ = "0.1.0"
__all__ = [
    "AdapterError", "Answer", "AssistantError", "AuthenticationError", "Citation", "ConfigError", "ConflictError",
    "DomainError", "EngineUnavailableError", "ErrorInfo", "FeedbackError", "FeedbackLog", "InputError", "ModelError",
    "NotFoundError", "PermissionDeniedError", "Platform", "QuestionError", "QuestionTooLongError", "ScaffoldError",
    "Settings", "SettingsError", "UnknownDomainError", "check_question", "configure_environment", "error_info",
    "install_shutdown_rules", "mapped_error_types", "parse_messages", "reap_children", "EngineWatchdog",
    "EXIT_ENGINE_DEAD", "DocumentLibrary", "User", "Users", "is_admin", "viewer",
]
_LIFECYCLE = "assistant.entrypoints.lifecycle"  # the service process rules (serve, app.py)
_LAZY = {"Platform": "assistant.platform", "Answer": "assistant.answer", "Citation": "assistant.answer",
         "check_question": "assistant.answer", "FeedbackLog": "assistant.feedback",
         "parse_messages": "assistant.conversation", "install_shutdown_rules": _LIFECYCLE,
         "reap_children": _LIFECYCLE, "EngineWatchdog": _LIFECYCLE, "EXIT_ENGINE_DEAD": _LIFECYCLE,
         "DocumentLibrary": "assistant.library", "Users": "assistant.users", "User": "assistant.users",
         "viewer": "assistant.users", "is_admin": "assistant.users"}


def __getattr__(name):  # lazy: `assistant --help` must not pay for numpy, torch and vLLM imports
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
