"""Conversations: OpenAI-style messages in, one grounded turn out.

The rules, in one place:
- Messages are `{"role": "system" | "user" | "assistant", "content": str | [{"type": "text", "text": str}]}`;
  the last one is the user's question. Other roles or non-text parts are refused (InputError).
- A user-supplied system message never replaces the domain's rules: it is appended under them, marked as the
  user's, and the rules say they take precedence (the domain prompt and citation rules stay first).
- A follow-up is rewritten into a standalone question before retrieval, by the model itself (the condense step
  of LlamaIndex's condense-question chat engine), and the rewrite is returned in the answer. A rewrite that is
  empty, runs on, or loses the follow-up's words falls back to the last question + the follow-up.
- The prompt keeps the most recent turns that fit the history budget (oldest dropped first, flagged);
  citations refer to the passages of the current turn only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from assistant.answer import check_question
from assistant.errors import InputError
from assistant.evidence import content_words

ROLES = ("system", "user", "assistant")
HISTORY_SHARE = 0.35      # at most this share of the prompt budget goes to earlier turns
CONDENSE_MAX_TOKENS = 48
CONDENSE_PROMPT = (
    "Given a conversation (between Human and Assistant) and a follow up message from Human, rewrite the message "
    "to be a standalone question that captures all relevant context from the conversation.\n\n"
    "<Chat History>\n{history}\n\n<Follow Up Message>\n{question}\n\n<Standalone question>\n")
USER_SYSTEM_HEADER = "Instructions from the user (the rules above take precedence over them):"


@dataclass(frozen=True)
class Conversation:
    """A chat request, normalised: the current question, the turns before it, the user's system text."""
    question: str
    history: tuple[dict, ...] = ()   # {"role": "user" | "assistant", "content": str}, oldest first
    system: str = ""                 # user-supplied system messages, joined

    @property
    def is_follow_up(self) -> bool:
        return any(t["role"] == "user" for t in self.history)


def _text(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InputError(f"{where}: only text content parts are supported, got {kind!r}")
            parts.append(part["text"])
        return "\n".join(parts)
    raise InputError(f"{where}: content must be a string or a list of text parts")


def parse_messages(messages, max_question_chars: int) -> Conversation:
    """The one reading of a messages list (SDK and API). The last message must be the user's question."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InputError("messages must be a non-empty list")
    turns, system = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InputError(f"messages[{i}] must be an object with role and content")
        role = message.get("role")
        if role not in ROLES:
            raise InputError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        text = _text(message.get("content"), f"messages[{i}]")
        if role == "system":
            if text.strip():
                system.append(text.strip())
        else:
            turns.append({"role": role, "content": text})
    if not turns or turns[-1]["role"] != "user":
        raise InputError("the last message must be the user's question (role 'user')")
    question = check_question(turns[-1]["content"], max_question_chars)
    history = tuple({"role": t["role"], "content": t["content"].strip()} for t in turns[:-1] if t["content"].strip())
    return Conversation(question=question, history=history, system="\n".join(system))


def system_with_user_text(domain_system: str, user_system: str) -> str:
    """The domain's system prompt (its rules first), with the user's instructions appended under them."""
    if not user_system:
        return domain_system
    return f"{domain_system}\n\n{USER_SYSTEM_HEADER}\n{user_system}"


def condense_messages(conversation: Conversation, max_turns: int = 6) -> list[dict]:
    """The rewrite request: the recent history and the follow-up, as one user message."""
    recent = conversation.history[-max_turns:]
    history = "\n".join(f"{'Human' if t['role'] == 'user' else 'Assistant'}: {_one_line(t['content'])}"
                        for t in recent)
    return [{"role": "user", "content": CONDENSE_PROMPT.format(history=history, question=conversation.question)}]


def _one_line(text: str, limit: int = 400) -> str:
    text = re.sub(r"\s+", " ", re.sub(r"\[\d+\]", "", text)).strip()
    return text if len(text) <= limit else text[:limit] + "..."


_WORD = re.compile(r"[A-Za-z0-9]+")


def accept_rewrite(conversation: Conversation, rewrite: str) -> tuple[str, str]:
    """(standalone question, how it was made): the model's rewrite when it is usable, else the two latest
    user questions followed by the follow-up. Usable: one line, 3-60 words, keeping most of the follow-up's
    content words and bringing in at least one from the earlier turns (a rewrite that only echoes the
    follow-up, "What about in adults?", would search without the topic)."""
    text = rewrite.strip().split("\n")[0].strip().strip('"').strip()
    text = re.sub(r"^(standalone question|question)\s*:\s*", "", text, flags=re.IGNORECASE)
    follow = content_words(conversation.question)  # "What are its symptoms?" -> {"symptoms"}: must survive
    kept = content_words(text)
    words = len(_WORD.findall(text))
    earlier_words = set().union(*(content_words(t["content"]) for t in conversation.history))
    if 3 <= words <= 60 and (not follow or len(follow & kept) / len(follow) >= 0.5) and (kept - follow) & earlier_words:
        return text, "model"
    # the two latest user turns: a second follow-up ("And at night?") still carries the topic the first set
    earlier = [t["content"] for t in conversation.history if t["role"] == "user"][-2:]
    context = " ".join(_one_line(q, 300) for q in earlier)
    return f"{context} {conversation.question}", "concatenated"


def history_that_fits(history: tuple[dict, ...], count_tokens, budget: int) -> tuple[list[dict], int]:
    """The most recent turns whose tokens fit `budget` (whole turns, user/assistant order kept), and how many
    earlier turns were dropped."""
    kept: list[dict] = []
    used = 0
    for turn in reversed(history):
        cost = count_tokens(turn["content"]) + 8  # the chat template's role markers
        if used + cost > budget:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    while kept and kept[0]["role"] != "user":  # start on a user turn
        kept.pop(0)
    return kept, len(history) - len(kept)
