"""The hub: an HTTP service that stores nodes, users and studies and drives studies round by round.

`Hub` (app.py) is the core (service.py, members.py) with its features (projects, trials,
referrals, catalogues, the audit log, the board's view), which share only the context
(context.py); `create_app(hub, executor)` builds the FastAPI app; `serve(...)` runs it with
uvicorn; `HubTransport` (runner.py) is the protocol.Transport the coordinator uses at the hub.
"""
