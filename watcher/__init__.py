"""The watcher: keeps firewalls in step with Microsoft's Azure IP Ranges and Service Tags."""

__version__ = "0.1.0"
