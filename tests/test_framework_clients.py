"""The API from the two frameworks people glue to model servers: LangChain's `ChatOpenAI` and LlamaIndex's
`OpenAILike`, pointed at the service (model = a domain), multi-turn and streamed, on the real stack. Their
message objects reach `Platform.chat` as OpenAI messages, so a follow-up is rewritten with the history."""
from __future__ import annotations

import httpx
import pytest

from helpers.live_server import serve_in_thread

pytestmark = pytest.mark.engine
FIRST = "Which sensor is most relevant for detecting rotor windings faults in an electric motor?"
FOLLOW_UP = "And which one detects its bearing faults?"


@pytest.fixture(scope="module")
def url(platform):
    with serve_in_thread(platform) as base:
        yield base


def test_langchain_chat_openai_multi_turn_and_stream(url):
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{url}/v1", api_key="unused", model="manufacturing", max_retries=0, timeout=300)
    first = llm.invoke([HumanMessage(FIRST)])
    assert first.content.strip() and first.usage_metadata["output_tokens"] > 0
    follow = llm.invoke([SystemMessage("Answer in one short sentence."), HumanMessage(FIRST),
                         AIMessage(first.content), HumanMessage(FOLLOW_UP)])
    assert follow.content.strip()
    pieces = list(ChatOpenAI(base_url=f"{url}/v1", api_key="unused", model="retail", max_tokens=8,
                             extra_body={"rag": False}, max_retries=0, timeout=300).stream("Describe a blender."))
    assert len(pieces) >= 2 and "".join(p.content for p in pieces).strip()


def test_llamaindex_openai_like_multi_turn_and_stream(url):
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(model="manufacturing", api_base=f"{url}/v1", api_key="unused", is_chat_model=True,
                     context_window=2048, max_retries=0, timeout=300)
    first = llm.chat([ChatMessage(role="user", content=FIRST)])
    assert first.message.content.strip()
    history = [ChatMessage(role="user", content=FIRST), ChatMessage(role="assistant", content=first.message.content),
               ChatMessage(role="user", content=FOLLOW_UP)]
    follow = llm.chat(history)
    assert follow.message.content.strip()
    # the rewrite the follow-up got, as the platform reports it (the framework only sees the text)
    raw = httpx.post(f"{url}/v1/chat/completions", timeout=300, json={
        "model": "manufacturing", "messages": [{"role": m.role.value, "content": m.content} for m in history]}).json()
    assert raw["assistant"]["standalone_question"]
    streamed = list(OpenAILike(model="retail", api_base=f"{url}/v1", api_key="unused", is_chat_model=True,
                               max_tokens=8, additional_kwargs={"extra_body": {"rag": False}}, max_retries=0,
                               timeout=300).stream_chat([ChatMessage(role="user", content="Describe a blender.")]))
    assert len(streamed) >= 2 and streamed[-1].message.content.strip()
