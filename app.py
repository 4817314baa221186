"""The Gradio chat on its own: `python app.py [--host 127.0.0.1] [--port 7860] [--domain NAME ...]`.

The app itself is `assistant/entrypoints/web.py`; `assistant serve` (the README's first command) serves it
together with the HTTP API in one process. This entry point runs the app alone, e.g. beside a remote engine.
"""
from assistant.entrypoints.web import build_app, launch, main, mount  # noqa: F401 - the app's public names

if __name__ == "__main__":
    main()
