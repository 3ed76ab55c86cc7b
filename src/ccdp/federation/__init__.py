"""Protocol messages, the coordinator, node runtimes and transports (in-process, HTTP, file)."""
