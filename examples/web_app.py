"""Embed the kernel in a Trio web app: one session per conversation, each turn streamed as SSE.

``GET /chat?conversation=<id>&q=<text>`` runs one turn in that conversation's session (opened on first
use, kept open in the app's nursery with ``run_session``, rollout per conversation, resumed with
``resume="auto"`` after a restart) and streams the turn's text deltas as server-sent events, then an
``event: done`` with the outcome. All sessions share one ModelActor (one HTTP client). A client that
goes away mid-stream interrupts its turn; the app's shutdown closes every session gracefully.

Run it: ``python examples/web_app.py`` (the offline scripted model answers each conversation with its
own script), then ``curl -N 'http://127.0.0.1:8080/chat?conversation=alice&q=hi'``. The test suite runs
:func:`serve` on a free port and talks to it with two concurrent clients.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import h11
import trio

from actors import ModelActor, ModelSettings, Session, open_model_actor, run_session
from actors.scripted import Reply, Text, open_scripted_server
from kernel import TextDelta


class App:
    """The conversations: one session each, all on one ModelActor, kept open in ``nursery``."""

    def __init__(self, actor: ModelActor, nursery: trio.Nursery, rollouts: Path) -> None:
        self.actor = actor
        self.nursery = nursery
        self.rollouts = rollouts
        self.sessions: dict[str, Session] = {}
        self.lock = trio.Lock()

    async def session(self, conversation: str) -> Session:
        async with self.lock:  # two first requests of one conversation open one session
            if conversation not in self.sessions:
                opener = functools.partial(
                    run_session,
                    model=self.actor,
                    session_id=conversation,
                    rollout=self.rollouts / f"{conversation}.jsonl",
                    resume="auto",
                )
                self.sessions[conversation] = await self.nursery.start(opener)
            return self.sessions[conversation]

    async def aclose(self) -> None:
        for session in self.sessions.values():
            await session.aclose()


async def handle(app: App, stream: trio.SocketStream) -> None:
    """One HTTP/1.1 request: parse it with h11, stream the turn as SSE."""
    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
            continue
        break
    if not isinstance(event, h11.Request):
        return
    url = urlsplit(event.target.decode())
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    if url.path != "/chat" or "conversation" not in query or "q" not in query:
        body = b"GET /chat?conversation=<id>&q=<text>\n"
        await stream.send_all(conn.send(h11.Response(status_code=404, headers=[("content-length", str(len(body)))])))
        await stream.send_all(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        return
    session = await app.session(query["conversation"])
    headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
    await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
    async with session.stream(query["q"]) as turn:  # leaving early (client gone) interrupts the turn
        async for ev in turn:
            if isinstance(ev, TextDelta):
                await stream.send_all(conn.send(h11.Data(data=f"data: {json.dumps(ev.delta)}\n\n".encode())))
    outcome = turn.outcome
    done = {"status": outcome.status if outcome else "unknown", "turn_id": turn.turn_id}
    await stream.send_all(conn.send(h11.Data(data=f"event: done\ndata: {json.dumps(done)}\n\n".encode())))
    await stream.send_all(conn.send(h11.EndOfMessage()))


async def serve(
    settings: ModelSettings,
    rollouts: Path,
    *,
    port: int = 8080,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the app on 127.0.0.1:``port`` (0: any free port, reported through ``task_status``)
    until cancelled; then close every session gracefully."""
    async with open_model_actor(settings) as actor, trio.open_nursery() as sessions:
        app = App(actor, sessions, rollouts)
        try:
            listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
            task_status.started(listeners[0].socket.getsockname()[1])

            async def client(stream: trio.SocketStream) -> None:
                async with stream:
                    try:
                        await handle(app, stream)
                    except (trio.BrokenResourceError, h11.RemoteProtocolError):
                        pass  # the client went away: its turn was interrupted on the way out

            await trio.serve_listeners(client, listeners)
        finally:
            with trio.CancelScope(shield=True):
                await app.aclose()
            sessions.cancel_scope.cancel()


def demo_scripts() -> dict[str, list[Reply]]:
    """What the offline scripted model says in each demo conversation."""
    return {
        "alice": [Reply(items=[Text("Hello Alice, here is your answer.", chunk_size=5)], delta_delay=0.01)],
        "bob": [Reply(items=[Text("Hi Bob! Different script, same server.", chunk_size=4)], delta_delay=0.01)],
    }


async def main() -> None:
    async with open_scripted_server(demo_scripts()) as model:
        settings = ModelSettings(base_url=model.base_url, model="scripted-model")
        with tempfile.TemporaryDirectory() as tmp:
            print("serving on http://127.0.0.1:8080/chat?conversation=alice&q=hi (Ctrl-C to stop)")
            await serve(settings, Path(tmp))


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
