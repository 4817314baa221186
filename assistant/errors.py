"""One error hierarchy for the platform, and one map from an error to what each door shows.

Every error the platform raises on purpose is an `AssistantError`; its class says what kind of failure it
is (the caller's input, something not found, a conflict, a refused adapter, an unavailable engine, a broken
configuration), and that kind alone decides the HTTP status, the OpenAI error body and the CLI's exit code.
Errors of the `indexing` package (which knows nothing of this one) are mapped here by class too. Anything
else is a bug: a 500 with the same JSON body, never a 400. Exit code 2 stays click's: a bad command line.

    AssistantError                      500  server_error / internal_error      exit 70
    ├── InputError (ValueError)         400  invalid_request_error              exit 1
    │   ├── QuestionError                    invalid_question (too long: 413)
    │   ├── FeedbackError, ScaffoldError
    ├── AuthenticationError             401  authentication_error               exit 1
    ├── NotFoundError (LookupError)     404  not_found_error                    exit 3
    │   └── UnknownDomainError (also a DomainError)
    ├── ConflictError                   409  conflict_error (busy index, exists) exit 4
    ├── AdapterError (ValueError)       400  invalid_request_error / adapter_refused   exit 5
    ├── EngineUnavailableError          503  service_unavailable                exit 6
    └── ConfigError                     500  server_error / configuration_error exit 7
        ├── DomainError (ValueError)    a domain package is invalid
        ├── ModelError (RuntimeError)   a model could not be prepared
        └── SettingsError (ValueError)  assistant.toml / ASSISTANT_* is invalid
"""
from __future__ import annotations

from dataclasses import dataclass


class AssistantError(Exception):
    """Base of every error the platform raises on purpose."""

    status = 500
    type = "server_error"
    code = "internal_error"
    exit_code = 70  # sysexits EX_SOFTWARE: a bug


class InputError(AssistantError, ValueError):
    """The caller's input is unusable: fix the request and retry."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"
    exit_code = 1


class QuestionError(InputError):
    """The question itself is unusable (empty, too long, wrong type)."""

    code = "invalid_question"


class QuestionTooLongError(QuestionError):
    status = 413
    code = "question_too_long"


class FeedbackError(InputError):
    code = "invalid_feedback"


class ScaffoldError(InputError):
    code = "invalid_domain_package"


class NotFoundError(AssistantError, LookupError):
    status = 404
    type = "not_found_error"
    code = "not_found"
    exit_code = 3


class AuthenticationError(AssistantError):
    """A missing or wrong API key."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"
    exit_code = 1


class PermissionDeniedError(AssistantError):
    """A known user asked for something only its owner or an admin may do (publish, remove, export)."""

    status = 403
    type = "permission_error"
    code = "permission_denied"
    exit_code = 1


class ConflictError(AssistantError):
    """The request collides with state: the index is held by another process, the thing already exists."""

    status = 409
    type = "conflict_error"
    code = "conflict"
    exit_code = 4


class AdapterError(AssistantError, ValueError):
    """An adapter is missing, malformed, trained on another base model, or not servable by vLLM."""

    status = 400
    type = "invalid_request_error"
    code = "adapter_refused"
    exit_code = 5


class EngineUnavailableError(AssistantError, RuntimeError):
    """The generation engine (in-process or remote) cannot serve requests now."""

    status = 503
    type = "service_unavailable"
    code = "engine_unavailable"
    exit_code = 6


class ConfigError(AssistantError):
    """The installation or a configuration file is broken: an operator has to fix it."""

    code = "configuration_error"
    exit_code = 7


class DomainError(ConfigError, ValueError):
    """A domain package is invalid (domain.toml, prompts, data)."""

    code = "invalid_domain"


class UnknownDomainError(DomainError, NotFoundError):
    status = 404
    type = "not_found_error"
    code = "unknown_domain"
    exit_code = 3


class ModelError(ConfigError, RuntimeError):
    """A model could not be prepared (missing package file, sha256 mismatch, bad local directory)."""

    code = "model_unavailable"


class SettingsError(ConfigError, ValueError):
    code = "invalid_settings"


@dataclass(frozen=True)
class ErrorInfo:
    """What a door shows for an error: HTTP status, OpenAI error type and code, message, CLI exit code."""

    status: int
    type: str
    code: str
    message: str
    exit_code: int

    def body(self) -> dict:
        """The OpenAI error body."""
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}


def mapped_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes `error_info` maps by kind (the doors catch these; anything else is a bug)."""
    from indexing.retriever import QueryError
    from indexing.store import StoreError

    return (AssistantError, StoreError, QueryError)


def _indexing_kind(exc: BaseException) -> type[AssistantError] | None:
    """The kind of an `indexing` error (that package does not know this hierarchy)."""
    from indexing.retriever import QueryError
    from indexing.store import FilterError, MissingIndexError, StoreBusyError, StoreError

    if isinstance(exc, StoreBusyError):
        return ConflictError
    if isinstance(exc, (QueryError, FilterError)):
        return InputError
    if isinstance(exc, MissingIndexError):
        return NotFoundError
    if isinstance(exc, StoreError):
        return AssistantError
    return None


def _engine_kind(exc: BaseException) -> type[AssistantError] | None:
    """vLLM's 'the engine process is gone' (matched by name: importing vLLM here would cost seconds)."""
    if type(exc).__name__ == "EngineDeadError" and type(exc).__module__.startswith("vllm"):
        return EngineUnavailableError
    return None


def error_info(exc: BaseException) -> ErrorInfo:
    """The one mapping from an exception to its status, body and exit code."""
    kind: type[AssistantError] | None = (type(exc) if isinstance(exc, AssistantError)
                                         else _indexing_kind(exc) or _engine_kind(exc))
    if kind is None:  # a bug: say so without leaking internals
        return ErrorInfo(500, "server_error", "internal_error",
                         f"internal error ({type(exc).__name__}); the server log has the details", 70)
    if kind is EngineUnavailableError and not isinstance(exc, AssistantError):
        return ErrorInfo(kind.status, kind.type, kind.code, "the generation engine stopped; the service is "
                         "restarting (see GET /health)", kind.exit_code)
    return ErrorInfo(kind.status, kind.type, kind.code, str(exc) or kind.__name__, kind.exit_code)
