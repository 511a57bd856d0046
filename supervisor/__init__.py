"""The host side of cloaca-sandbox: package format, sandboxes, service and CLI."""
