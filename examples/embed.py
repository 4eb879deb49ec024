"""Embed the kernel in a Trio application: a session, a tool, a subscriber (offline: scripted model)."""

import trio

from actors import ModelSettings, ToolRegistry, open_session
from actors.scripted import FunctionCall, Reply, Script, Text, open_scripted_server
from kernel import TextDelta, ToolCallFinished, ToolCallStarted, TurnCompleted

registry = ToolRegistry()


@registry.tool(parallel=True)
async def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first addend.
        b: The second addend.
    """
    return a + b


# The scripted model: first it calls the tool, then it answers. Swap in a real endpoint with
# ModelSettings(base_url="https://api.openai.com/v1", model="...", api_key=os.environ["OPENAI_API_KEY"]).
script = Script(
    [
        Reply(items=[Text("Let me add those.", chunk_size=4), FunctionCall("call_1", "add", {"a": 2, "b": 3})]),
        Reply(items=[Text("2 + 3 = 5.", chunk_size=3)]),
    ]
)


async def main() -> None:
    async with open_scripted_server(script) as server:
        settings = ModelSettings(base_url=server.base_url, model="scripted-model")
        async with open_session(model=settings, tools=registry) as session:
            async with session.subscribe() as events:
                handle = await session.submit("What is 2 + 3?")
                async for event in events:
                    if isinstance(event, TextDelta):
                        print(event.delta, end="", flush=True)
                    elif isinstance(event, ToolCallStarted):
                        print(f"\n[tool {event.name} started]")
                    elif isinstance(event, ToolCallFinished):
                        print(f"[tool {event.call_id} -> {event.output.output.body}]")
                    elif isinstance(event, TurnCompleted):
                        break
            outcome = await handle.result()
            print(f"\nturn {outcome.status}: {outcome.last_agent_message!r}")
            print(f"history: {len(await session.history())} items")


if __name__ == "__main__":
    trio.run(main)
