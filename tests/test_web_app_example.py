"""examples/web_app.py, run as users would embed it: two conversations streamed at once over SSE."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

from actors import ModelSettings
from actors.history import resume
from actors.scripted import open_scripted_server

ROOT = Path(__file__).resolve().parent.parent


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("web_app_example", ROOT / "examples" / "web_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["web_app_example"] = module
    spec.loader.exec_module(module)
    return module


async def chat(client: httpx.AsyncClient, url: str, conversation: str, q: str) -> tuple[str, dict[str, Any]]:
    text, done = "", {}
    async with client.stream("GET", url, params={"conversation": conversation, "q": q}) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
        event = "message"
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
                if event == "done":
                    done = data
                else:
                    text += data
    return text, done


async def test_two_conversations_stream_at_once_each_their_own(tmp_path: Path) -> None:
    # the real clock: httpx's read timeout would fire under an autojump clock while bytes are in flight
    # (the scripted deltas are 10 ms apart, so the test takes well under a second)
    app = load_example()
    scripts = app.demo_scripts()
    results: dict[str, tuple[str, dict[str, Any]]] = {}
    async with open_scripted_server(scripts) as model:
        settings = ModelSettings(base_url=model.base_url, model="scripted-model")
        async with trio.open_nursery() as nursery:
            port = await nursery.start(functools.partial(app.serve, settings, tmp_path, port=0))
            url = f"http://127.0.0.1:{port}/chat"
            async with httpx.AsyncClient(timeout=30) as client:

                async def one(name: str) -> None:
                    results[name] = await chat(client, url, name, f"hi, I am {name}")

                async with trio.open_nursery() as clients:
                    for name in ("alice", "bob"):
                        clients.start_soon(one, name)
                missing = await client.get(url)
                assert missing.status_code == 404
            nursery.cancel_scope.cancel()  # the app's shutdown closes every session
    for name in ("alice", "bob"):
        text, done = results[name]
        assert text == scripts[name][0].items[0].text
        assert done["status"] == "completed"
        resumed = resume(tmp_path / f"{name}.jsonl")
        assert resumed.meta.session_id == name
        assert [i.text() for i in resumed.items if getattr(i, "role", "") == "assistant"] == [text]
