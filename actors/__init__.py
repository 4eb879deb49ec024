"""trio-agent-kernel's runtime: the actors, the real transports and the scripted model server."""
