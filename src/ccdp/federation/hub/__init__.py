"""The hub: an HTTP service that stores nodes, users and studies and drives studies round by round.

`create_app(hub, executor)` builds the FastAPI app; `serve(...)` runs it with uvicorn; the
`Hub` class (service.py) holds every rule over the database; `HubTransport` (runner.py) is the
protocol.Transport the coordinator uses at the hub.
"""
