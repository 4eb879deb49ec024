"""The model actor and its transports.

:class:`ModelActor` owns the connections to a model endpoint and serves streaming requests for
many sessions at once. Layout: ``_actor`` (the actor and the session-side client), ``_responses``
and ``_chat`` (the two wire codecs: request bodies and streaming decoders), ``_sse`` (the SSE
splitter), ``_http_errors`` (HTTP statuses and error bodies to :class:`~kernel.errors.KernelError`),
``_pool`` (the sharded connection pool).
"""

from ._actor import (
    HttpModelClient as HttpModelClient,
)
from ._actor import (
    ModelActor as ModelActor,
)
from ._actor import (
    ModelSettings as ModelSettings,
)
from ._actor import (
    default_ssl_context as default_ssl_context,
)
from ._actor import (
    open_model_actor as open_model_actor,
)

__all__ = ["ModelSettings", "ModelActor", "HttpModelClient", "open_model_actor", "default_ssl_context"]
