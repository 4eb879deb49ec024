"""A ``tools/call`` result -> the call's :class:`~kernel.FunctionCallOutputPayload`."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import mcp_types as types

from kernel.items import FunctionCallOutputPayload

__all__ = ["result_payload"]


def _binary_size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=False))
    except (binascii.Error, ValueError):
        return len(data)


def _describe_resource(resource: types.TextResourceContents | types.BlobResourceContents) -> str:
    mime = f" ({resource.mime_type})" if resource.mime_type else ""
    if isinstance(resource, types.TextResourceContents):
        return f"[embedded resource {resource.uri}{mime}]\n{resource.text}"
    return f"[embedded resource {resource.uri}{mime}: {_binary_size(resource.blob)} bytes of binary data not shown]"


def _redundant(structured: Any, text: str) -> bool:
    """Whether ``structured`` only repeats ``text`` (FastMCP sends both for simple results)."""
    if not text:
        return False
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text
    if structured == parsed:
        return True
    return isinstance(structured, dict) and set(structured) == {"result"} and structured["result"] in (parsed, text)


def result_payload(result: types.CallToolResult) -> FunctionCallOutputPayload:
    """Text content joined by newlines; ``structuredContent`` as JSON (unless the text already
    says the same); images as ``input_image`` content items; audio, resource links and embedded
    resources described in text. ``isError`` gives ``success=False`` (a model-visible error)."""
    items: list[dict[str, Any]] = []  # in order; texts merged later
    texts: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            texts.append(block.text)
            items.append({"type": "input_text", "text": block.text})
        elif isinstance(block, types.ImageContent):
            items.append({"type": "input_image", "image_url": f"data:{block.mime_type};base64,{block.data}"})
        elif isinstance(block, types.AudioContent):
            note = f"[audio ({block.mime_type}): {_binary_size(block.data)} bytes not shown]"
            texts.append(note)
            items.append({"type": "input_text", "text": note})
        elif isinstance(block, types.ResourceLink):
            mime = f" ({block.mime_type})" if block.mime_type else ""
            about = f": {block.description}" if block.description else ""
            note = f"[resource link {block.name} <{block.uri}>{mime}{about}]"
            texts.append(note)
            items.append({"type": "input_text", "text": note})
        elif isinstance(block, types.EmbeddedResource):
            note = _describe_resource(block.resource)
            if isinstance(block.resource, types.BlobResourceContents) and (block.resource.mime_type or "").startswith(
                "image/"
            ):
                items.append(
                    {
                        "type": "input_image",
                        "image_url": f"data:{block.resource.mime_type};base64,{block.resource.blob}",
                    }
                )
            texts.append(note)
            items.append({"type": "input_text", "text": note})
        else:  # a content type this version does not know
            note = f"[{getattr(block, 'type', type(block).__name__)} content not shown]"
            texts.append(note)
            items.append({"type": "input_text", "text": note})
    joined = "\n".join(texts)
    structured = result.structured_content
    if structured is not None and not _redundant(structured, joined):
        encoded = json.dumps(structured, ensure_ascii=False)
        texts.append(encoded)
        items.append({"type": "input_text", "text": encoded})
        joined = "\n".join(texts)
    success = not result.is_error
    if any(item["type"] == "input_image" for item in items):
        return FunctionCallOutputPayload.from_content_items(items, success)
    return FunctionCallOutputPayload.from_text(joined, success)
